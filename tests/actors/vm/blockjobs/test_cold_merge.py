"""Cold merge of a stopped VM's image, the Engine's way (ColdMergeSnapshotSingleDiskCommand).

StoragePool.prepareMerge (a task) → SDM.merge (a job, Host.getJobs) →
StoragePool.finalizeMerge (a task) → Image.deleteVolumes of the top (a task). Once
with the leaf as top, once with an internal volume; the data written into the top
must be in the base, and chain, metadata and `qemu-img check` as VDSM leaves them.
Image.reconcileVolumeChain repairs the metadata of an image whose qemu chain moved
without it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from mergehelp import make_chain

from harness.engine import COW, DataCenter, new_id, qemu_chain, qemu_check, succeeded, volume
from harness.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]


def subchain(dc: DataCenter, img: str, base: str, top: str, **extra: Any) -> dict[str, Any]:
    return {"sd_id": dc.sd, "img_id": img, "base_id": base, "top_id": top, **extra}


def run_job(cli: Any, job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = cli.Host.getJobs(job_ids=[job_id])[job_id]
        return job if job["status"] in ("done", "failed", "aborted") else None

    return wait_for(ended, 60, f"job {job_id}")


def cold_merge(cli: Any, dc: DataCenter, img: str, base: str, top: str) -> None:
    info = subchain(dc, img, base, top)
    generation = volume(cli, dc, img, base)["generation"]
    succeeded(cli, cli.StoragePool.prepareMerge(storagepoolID=dc.sp, subchainInfo=info))
    job_id = new_id()
    info = subchain(dc, img, base, top, base_generation=generation)
    assert cli.SDM.merge(job_id=job_id, subchain_info=info, merge_bitmaps=False) is True
    job = run_job(cli, job_id)
    assert job["status"] == "done", job
    assert volume(cli, dc, img, base)["generation"] == generation + 1
    succeeded(cli, cli.StoragePool.finalizeMerge(storagepoolID=dc.sp, subchainInfo=info))


def write(path: Path, fmt: str, offset: int, byte: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"write -P {byte} {offset} 64k", str(path)],
        capture_output=True,
        check=True,
    )


def holds(path: Path, fmt: str, offset: int, byte: int) -> bool:
    result = subprocess.run(
        ["qemu-io", "-r", "-f", fmt, "-c", f"read -P {byte} {offset} 64k", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "Pattern verification failed" not in result.stdout


def test_cold_merge_leaf_then_internal(dc_host: Any) -> None:
    _host, cli, dc = dc_host
    img, (base, mid, leaf) = make_chain(cli, dc, 3)
    folder = Path(dc.prepare(cli, img, leaf)).parent
    write(folder / mid, "qcow2", 0x100000, 0x11)
    write(folder / leaf, "qcow2", 0x200000, 0x22)

    # internal: mid into base; the leaf is rebased onto the base and re-parented
    cold_merge(cli, dc, img, base, mid)
    assert qemu_chain(folder / leaf) == [base, leaf]
    assert volume(cli, dc, img, leaf)["parent"] == base
    assert volume(cli, dc, img, mid)["legality"] == "ILLEGAL"
    assert holds(folder / base, "raw", 0x100000, 0x11)
    qemu_check(folder / leaf)
    succeeded(
        cli,
        cli.Image.deleteVolumes(
            storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, volumeList=[mid]
        ),
    )

    # leaf: leaf into base; the leaf turns ILLEGAL, the Engine deletes it
    cold_merge(cli, dc, img, base, leaf)
    assert volume(cli, dc, img, leaf)["legality"] == "ILLEGAL"
    assert holds(folder / base, "raw", 0x200000, 0x22)
    succeeded(
        cli,
        cli.Image.deleteVolumes(
            storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, volumeList=[leaf]
        ),
    )
    base_info = volume(cli, dc, img, base)
    assert (base_info["voltype"], base_info["legality"]) == ("LEAF", "LEGAL")
    assert cli.Image.getVolumes(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img) == [base]
    assert dc.prepare(cli, img, base).endswith(base)


def test_prepare_merge_grows_a_cow_base(dc_host: Any) -> None:
    _host, cli, dc = dc_host
    img, (base, mid) = make_chain(cli, dc, 2)
    top = new_id()
    size = 2 * int(volume(cli, dc, img, mid)["capacity"])
    succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, size=size, parent=mid))
    succeeded(
        cli,
        cli.StoragePool.prepareMerge(storagepoolID=dc.sp, subchainInfo=subchain(dc, img, mid, top)),
    )
    assert int(volume(cli, dc, img, mid)["capacity"]) == size
    assert int(volume(cli, dc, img, base)["capacity"]) == size // 2


def test_reconcile_follows_qemu(dc_host: Any) -> None:
    """A chain qemu changed behind the metadata's back (an interrupted merge) is synced."""
    _host, cli, dc = dc_host
    img, (base, mid, leaf) = make_chain(cli, dc, 3)
    folder = Path(dc.prepare(cli, img, leaf)).parent
    subprocess.run(
        ["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", base, str(folder / leaf)],
        check=True,
        cwd=folder,
    )
    chain = cli.Image.reconcileVolumeChain(
        storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, leafVolID=leaf
    )
    assert chain == [base, leaf]
    assert volume(cli, dc, img, leaf)["parent"] == base
    assert volume(cli, dc, img, mid)["children"] == []
    # again: nothing more to change
    assert (
        cli.Image.reconcileVolumeChain(
            storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, leafVolID=leaf
        )
        == chain
    )
