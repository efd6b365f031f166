"""Live storage migration of a running guest's disk between two domains of one pool.

The Engine's LiveMigrateDiskCommand, verb by verb: the image's structure made on the
destination domain (Volume.create with the same ids: what Image.cloneStructure
does), VM.diskReplicateStart (libvirt mirrors the active layer), the layer below
copied with SDM.copy_data (what Image.syncData does), VM.diskReplicateFinish (the
pivot). The guest runs throughout, and on after the source image is deleted; the
two chains hold the same data.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from mergehelp import make_chain, start_vm

from harness.engine import BLANK, COW, LOCALFS, RAW, DataCenter, MiB, new_id, qemu_chain, succeeded
from harness.waiting import wait_for
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.slow, pytest.mark.kvm, pytest.mark.libvirt]

IMAGE_NOT_FOUND, REPLICA_ERROR, NOT_REPLICATING = 13, 55, 88


def second_domain(cli: Any, dc: DataCenter, directory: Path) -> str:
    """A second LOCALFS data domain, attached to the pool and active."""
    directory.mkdir()
    sd, conn = new_id(), {"id": new_id(), "connection": str(directory)}
    answer = cli.StoragePool.connectStorageServer(
        storagepoolID=dc.sp, domainType=LOCALFS, connectionParams=[conn]
    )
    assert answer == [{"id": conn["id"], "status": 0}]
    assert cli.StorageDomain.create(
        storagedomainID=sd,
        domainType=LOCALFS,
        typeArgs=str(directory),
        name="data-2",
        domainClass=1,
        version="5",
    )
    assert cli.StorageDomain.attach(storagedomainID=sd, storagepoolID=dc.sp)
    assert cli.StorageDomain.activate(storagedomainID=sd, storagepoolID=dc.sp)
    return sd


def clone_structure(cli: Any, dc: DataCenter, sd: str, img: str, base: str, leaf: str) -> None:
    """The image's chain on domain `sd`, same ids (what Image.cloneStructure makes)."""
    for vol, fmt, parent in ((base, RAW, BLANK), (leaf, COW, base)):
        task = cli.Volume.create(
            storagepoolID=dc.sp,
            storagedomainID=sd,
            imageID=img,
            volumeID=vol,
            size=str(16 * MiB),
            volFormat=fmt,
            preallocate=2,
            diskType="DATA",
            desc="",
            srcImgUUID=img if parent != BLANK else BLANK,
            srcVolUUID=parent,
        )
        succeeded(cli, task)


def copy_volume(cli: Any, dc: DataCenter, img: str, vol: str, sd: str) -> None:
    """SDM.copy_data of one volume from the first domain to `sd`, waited for."""
    job_id = new_id()
    cli.SDM.copy_data(
        job_id=job_id,
        source={"endpoint_type": "div", "sd_id": dc.sd, "img_id": img, "vol_id": vol},
        destination={"endpoint_type": "div", "sd_id": sd, "img_id": img, "vol_id": vol},
        legal=True,
    )

    def done() -> bool:
        job = cli.Host.getJobs(job_ids=[job_id])[job_id]
        assert job["status"] in ("running", "pending", "done"), job
        return bool(job["status"] == "done")

    wait_for(done, 60, "the copy")


def source_path(cli: Any, vm_id: str) -> str:
    xml = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    start = xml.index("<source file=") + len("<source file=") + 1
    return str(xml[start : xml.index(xml[start - 1], start)])


def test_live_storage_migration(dc_host: Any, accelerator: Any, tmp_path: Path) -> None:
    _host, cli, dc = dc_host
    sd2 = second_domain(cli, dc, tmp_path / "sd2")
    img, (base, leaf) = make_chain(cli, dc, 2)
    folder = Path(dc.prepare(cli, img, leaf)).parent
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x44 2M 1M", str(folder / leaf)],
        capture_output=True,
        check=True,
    )
    vm_id = start_vm(cli, dc, img, leaf, accelerator.domain_type)
    src = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": leaf}
    dst = {**src, "domainID": sd2}

    clone_structure(cli, dc, sd2, img, base, leaf)

    with pytest.raises(ServerError) as early:
        cli.VM.diskReplicateFinish(vmID=vm_id, srcDisk=src, dstDisk=dst)
    assert early.value.code == NOT_REPLICATING

    cli.VM.diskReplicateStart(vmID=vm_id, srcDisk=src, dstDisk=dst, needExtend=False)
    with pytest.raises(ServerError) as twice:
        cli.VM.diskReplicateStart(vmID=vm_id, srcDisk=src, dstDisk=dst, needExtend=False)
    assert twice.value.code == REPLICA_ERROR
    copy_volume(cli, dc, img, base, sd2)
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"
    wait_for(
        lambda: _finished(cli, vm_id, src, dst),
        60,
        "diskReplicateFinish to pivot (the mirror in step)",
    )

    new_path = source_path(cli, vm_id)
    assert f"/{sd2}/images/{img}/{leaf}" in new_path
    dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    assert f"<ovirt-vm:domainID>{sd2}</ovirt-vm:domainID>" in dumped
    assert "diskReplicate" not in dumped
    assert qemu_chain(Path(new_path)) == [base, leaf]

    # the source image goes; the guest runs on
    cli.Image.teardown(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img)
    old = folder / leaf
    copy = Path(new_path)
    cli.VM.destroy(vmID=vm_id)
    compared = subprocess.run(
        ["qemu-img", "compare", str(old), str(copy)], capture_output=True, text=True, check=False
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr


def _finished(cli: Any, vm_id: str, src: dict[str, str], dst: dict[str, str]) -> bool:
    try:
        cli.VM.diskReplicateFinish(vmID=vm_id, srcDisk=src, dstDisk=dst)
    except ServerError as error:
        if error.code == 40:  # the mirror is not in step yet: the Engine retries too
            return False
        raise
    return True


def test_replication_aborted_stays_on_the_source(
    dc_host: Any, accelerator: Any, tmp_path: Path
) -> None:
    _host, cli, dc = dc_host
    sd2 = second_domain(cli, dc, tmp_path / "sd2")
    img, (base, leaf) = make_chain(cli, dc, 2)
    vm_id = start_vm(cli, dc, img, leaf, accelerator.domain_type)
    src = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": leaf}
    dst = {**src, "domainID": sd2}
    clone_structure(cli, dc, sd2, img, base, leaf)
    before = source_path(cli, vm_id)
    cli.VM.diskReplicateStart(vmID=vm_id, srcDisk=src, dstDisk=dst, needExtend=False)
    wait_for(lambda: _finished(cli, vm_id, src, src), 60, "the abort")
    assert source_path(cli, vm_id) == before
    dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    assert f"<ovirt-vm:domainID>{dc.sd}</ovirt-vm:domainID>" in dumped
    assert "diskReplicate" not in dumped
    with pytest.raises(ServerError) as again:
        cli.VM.diskReplicateFinish(vmID=vm_id, srcDisk=src, dstDisk=dst)
    assert again.value.code == NOT_REPLICATING
    with pytest.raises(ServerError) as unknown:
        cli.VM.diskReplicateStart(
            vmID=vm_id, srcDisk={**src, "volumeID": base}, dstDisk=dst, needExtend=False
        )
    assert unknown.value.code == IMAGE_NOT_FOUND
