"""VM.merge on a running guest, through the wire, on volumes made by Volume.create.

The guest's disk is an image of three volumes (raw base ← qcow2 mid ← qcow2 leaf).
Data written into a layer before the guest starts (qemu-io) must be in the base
after the merges. Each merge is watched the Engine's way: `vmJobs` in VM.getStats
until the job is gone; then the chain qemu uses, the volume metadata and
`qemu-img check` are what VDSM would leave, and Image.deleteVolumes removes what
the merge left behind.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from mergehelp import ChainVm, make_chain, start_vm, vm_jobs, wait_job_gone

from harness.engine import new_id, qemu_chain, qemu_check, succeeded, volume
from harness.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.kvm, pytest.mark.libvirt]


def live_leaf(cli: Any, vm_id: str) -> str:
    """The file the running guest's vda uses now, as libvirt says."""
    xml = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    start = xml.index("<source file=") + len("<source file=") + 1
    return str(xml[start : xml.index(xml[start - 1], start)].rsplit("/", 1)[-1])


def write_pattern(path: Any, offset: int, byte: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {byte} {offset} 64k", str(path)],
        capture_output=True,
        check=True,
    )


def read_pattern(path: Any, fmt: str, offset: int, byte: int) -> bool:
    result = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", fmt, "-c", f"read -P {byte} {offset} 64k", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "Pattern verification failed" not in result.stdout


def test_internal_then_active_merge(chain_vm: ChainVm, dc_host: Any) -> None:
    _host, cli, dc = dc_host
    vm, (base, mid, leaf) = chain_vm, chain_vm.vols

    # -- internal: mid into base; the leaf is re-parented onto the base
    job = new_id()
    cli.VM.merge(
        vmID=vm.vm_id,
        drive=vm.drive(),
        baseVolUUID=base,
        topVolUUID=mid,
        bandwidth="0",
        jobUUID=job,
    )
    jobs = vm_jobs(cli, vm.vm_id)
    if job in jobs:  # it may already be over: a 16 MiB base commits in no time
        assert jobs[job]["jobType"] == "block"
        assert jobs[job]["blockJobType"] == "commit"
        assert jobs[job]["imgUUID"] == vm.img
        assert set(jobs[job]) >= {"id", "bandwidth", "cur", "end", "drive"}
    wait_job_gone(cli, vm.vm_id, job)
    assert qemu_chain(vm.path(leaf)) == [base, leaf]
    assert volume(cli, dc, vm.img, leaf)["parent"] == base
    assert volume(cli, dc, vm.img, leaf)["legality"] == "LEGAL"
    assert volume(cli, dc, vm.img, mid)["children"] == []
    qemu_check(vm.path(leaf))
    succeeded(
        cli,
        cli.Image.deleteVolumes(
            storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=vm.img, volumeList=[mid]
        ),
    )
    assert not vm.path(mid).exists()
    assert volume(cli, dc, vm.img, base)["voltype"] == "INTERNAL"

    # -- active: the leaf into the base, then the pivot
    job = new_id()
    cli.VM.merge(
        vmID=vm.vm_id,
        drive=vm.drive(),
        baseVolUUID=base,
        topVolUUID=leaf,
        bandwidth="0",
        jobUUID=job,
    )
    wait_job_gone(cli, vm.vm_id, job)
    assert live_leaf(cli, vm.vm_id) == base
    assert volume(cli, dc, vm.img, leaf)["legality"] == "ILLEGAL"
    assert volume(cli, dc, vm.img, base)["legality"] == "LEGAL"
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Up"
    # the drive is the base now: a new merge names it so (VDSM's drive volumeID)
    dumped = cli.Host.dumpxmls(vmList=[vm.vm_id])[vm.vm_id]
    assert f"<ovirt-vm:volumeID>{base}</ovirt-vm:volumeID>" in dumped
    assert "<ovirt-vm:jobs>{}</ovirt-vm:jobs>" in dumped
    succeeded(
        cli,
        cli.Image.deleteVolumes(
            storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=vm.img, volumeList=[leaf]
        ),
    )
    assert volume(cli, dc, vm.img, base)["voltype"] == "LEAF"
    assert cli.Image.getVolumes(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=vm.img) == [
        base
    ]


def test_merged_data_reaches_the_base(dc_host: Any, accelerator: Any) -> None:
    _host, cli, dc = dc_host
    img, (base, top) = make_chain(cli, dc, 2)
    path = dc.prepare(cli, img, top)
    write_pattern(path, 1024 * 1024, 0x5A)  # in the leaf only, before the guest runs
    vm_id = start_vm(cli, dc, img, top, accelerator.domain_type)
    drive = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": top}
    job = new_id()
    cli.VM.merge(vmID=vm_id, drive=drive, baseVolUUID=base, topVolUUID=top, jobUUID=job)
    wait_job_gone(cli, vm_id, job)
    base_path = path.rsplit("/", 1)[0] + "/" + base
    cli.VM.destroy(vmID=vm_id)
    assert read_pattern(base_path, "raw", 1024 * 1024, 0x5A)
    assert volume(cli, dc, img, top)["legality"] == "ILLEGAL"
    # the Engine's recovery view agrees: the ILLEGAL leaf is not part of the chain
    chain = cli.Image.reconcileVolumeChain(
        storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, leafVolID=top
    )
    assert chain == [base]


def test_vm_jobs_reports_the_merge_until_done(chain_vm: ChainVm, dc_host: Any) -> None:
    """The job shows in vmJobs from VM.merge's answer on, in VDSM's shape, until done."""
    _host, cli, _dc = dc_host
    vm = chain_vm
    base, mid, leaf = vm.vols
    job = new_id()
    cli.VM.merge(
        vmID=vm.vm_id,
        drive=vm.drive(),
        baseVolUUID=mid,
        topVolUUID=leaf,
        bandwidth="1",
        jobUUID=job,
    )
    seen = vm_jobs(cli, vm.vm_id)
    assert job in seen  # reported before VM.merge answered (VDSM's updateVmJobs)
    entry = seen[job]
    assert entry["id"] == job
    assert isinstance(entry["cur"], str)
    assert isinstance(entry["end"], str)
    wait_job_gone(cli, vm.vm_id, job)
    wait_for(lambda: live_leaf(cli, vm.vm_id) == mid, 10, "the pivot")
    assert qemu_chain(vm.path(mid)) == [base, mid]
