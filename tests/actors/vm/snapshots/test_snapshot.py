"""VM.snapshot of a running guest, the Engine's way, through the wire.

The Engine makes a COW volume over the VM's leaf (`Volume.create` with a parent),
sends `VM.snapshot` with the new and the base volume, and polls
`Host.getJobs(job_type="virt", job_ids=[jobUUID])` until the job is done. Afterwards
qemu runs on the new leaf: the live XML names it with the old chain as its backing
store, the VM's metadata names its volume id, `qemu-img` sees the chain
new → old leaf → base and checks it clean, and the storage metadata is VDSM's
(the new volume LEAF and LEGAL, its parent INTERNAL).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from snapshot_helpers import (
    MemoryVolumes,
    SnapVm,
    disk_source,
    live_xml,
    metadata_volume,
    snapshot,
    wait_job,
)

from harness.engine import new_id, qemu_chain, qemu_check, volume
from hostvisor.actors.vm.snapshot_hibernation import read_conf
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.kvm]

NO_SUCH_VM = 1
INVALID = 91
BAD_PARAMS = -32602
"""A missing param or one of the wrong JSON type: refused before the verb runs."""
SNAPSHOT_FAILED = 48
JOB_EXISTS = 69


def test_a_snapshot_moves_the_running_guest_onto_the_engines_new_leaf(
    snap_host: Any, snap_vm: SnapVm
) -> None:
    _host, cli, dc = snap_host
    vm = snap_vm
    old_leaf = vm.vols[-1]
    new = vm.new_leaf(cli)

    job = snapshot(cli, vm, new)

    assert job["status"] == "done", job
    assert (job["description"], job["job_type"]) == ("snapshot_vm", "virt")
    assert "error" not in job
    assert disk_source(cli, vm.vm_id) == vm.prepared(cli, new)
    backing = live_xml(cli, vm.vm_id).find("devices/disk/backingStore/source")
    assert backing is not None
    assert backing.get("file") == vm.prepared(cli, old_leaf)
    assert metadata_volume(cli, vm.vm_id) == new
    assert qemu_chain(vm.path(new)) == [vm.vols[0], old_leaf, new]
    qemu_check(vm.path(new))
    new_info, old_info = volume(cli, dc, vm.img, new), volume(cli, dc, vm.img, old_leaf)
    assert (new_info["voltype"], new_info["legality"], new_info["parent"]) == (
        "LEAF",
        "LEGAL",
        old_leaf,
    )
    assert (old_info["voltype"], old_info["legality"]) == ("INTERNAL", "LEGAL")
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Up"

    # A second snapshot goes on top of the first.
    vm.vols.append(new)
    newer = vm.new_leaf(cli)
    assert snapshot(cli, vm, newer)["status"] == "done"
    assert qemu_chain(vm.path(newer)) == [*vm.vols, newer]
    assert metadata_volume(cli, vm.vm_id) == newer
    qemu_check(vm.path(newer))


def test_the_vm_answers_stats_while_its_snapshot_runs(snap_host: Any, snap_vm: SnapVm) -> None:
    _host, cli, _dc = snap_host
    vm = snap_vm
    new = vm.new_leaf(cli)
    job_id = new_id()
    answered: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with _host.client() as other:
            while not stop.is_set():
                answered.append(other.VM.getStats(vmID=vm.vm_id)[0]["status"])

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        cli.VM.snapshot(vmID=vm.vm_id, snapDrives=[vm.drive(new)], frozen=False, jobUUID=job_id)
        assert wait_job(cli, job_id)["status"] == "done"
    finally:
        stop.set()
        poller.join(timeout=30)
    assert answered
    assert set(answered) == {"Up"}


def test_a_repeated_snapshot_request_is_done_and_changes_nothing(
    snap_host: Any, snap_vm: SnapVm
) -> None:
    _host, cli, _dc = snap_host
    vm = snap_vm
    new = vm.new_leaf(cli)
    assert snapshot(cli, vm, new)["status"] == "done"
    # The Engine retries the same snapshot (its new volume is already the VM's leaf).
    assert snapshot(cli, vm, new)["status"] == "done"
    assert qemu_chain(vm.path(new)) == [*vm.vols, new]
    assert metadata_volume(cli, vm.vm_id) == new


def test_a_paused_vm_is_snapshotted_and_stays_paused(snap_host: Any, snap_vm: SnapVm) -> None:
    _host, cli, _dc = snap_host
    vm = snap_vm
    cli.VM.pause(vmID=vm.vm_id)
    new = vm.new_leaf(cli)
    assert snapshot(cli, vm, new, frozen=False)["status"] == "done"
    assert metadata_volume(cli, vm.vm_id) == new
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Paused"
    cli.VM.cont(vmID=vm.vm_id)
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Up"


def test_a_snapshot_with_memory_keeps_the_guests_state_on_the_engines_volumes(
    snap_host: Any, snap_vm: SnapVm
) -> None:
    _host, cli, dc = snap_host
    vm = snap_vm
    new = vm.new_leaf(cli)
    memory = MemoryVolumes(cli, dc)

    job = snapshot(cli, vm, new, snapMemory=memory.handle(), timeout=30)

    assert job["status"] == "done", job
    assert metadata_volume(cli, vm.vm_id) == new
    assert qemu_chain(vm.path(new)) == [*vm.vols, new]
    qemu_check(vm.path(new))
    dump = Path(vm.dc.prepare(cli, memory.dump_img, memory.dump_vol))
    with dump.open("rb") as saved:
        assert saved.read(16) in (b"LibvirtQemudSave", b"LibvirtQemudPart")
    assert dump.stat().st_size % 4096 == 0
    conf = read_conf(vm.dc.prepare(cli, memory.conf_img, memory.conf_vol))
    assert conf["restoreFromSnapshot"] is True
    assert vm.vm_id in conf["_srcDomXML"]
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Up"


# -- bad input: VDSM's code, and nothing changed -----------------------------------------------


def _refused(call: Any) -> int:
    with pytest.raises(ServerError) as refused:
        call()
    return refused.value.code


def test_bad_snapshot_requests_are_refused_and_change_nothing(
    snap_host: Any, snap_vm: SnapVm
) -> None:
    _host, cli, _dc = snap_host
    vm = snap_vm
    new = vm.new_leaf(cli)
    good = vm.drive(new)
    leaf = vm.vols[-1]

    def snap(**params: Any) -> Any:
        return cli.VM.snapshot(**{"vmID": vm.vm_id, "snapDrives": [good], **params})

    assert _refused(lambda: cli.VM.snapshot(vmID=new_id(), snapDrives=[good])) == NO_SUCH_VM
    assert _refused(lambda: cli.VM.snapshot(vmID=vm.vm_id)) == BAD_PARAMS  # no snapDrives
    assert _refused(lambda: snap(snapDrives="vda")) == BAD_PARAMS
    assert _refused(lambda: snap(snapDrives=[{"domainID": vm.dc.sd}])) == INVALID
    assert _refused(lambda: snap(snapDrives=[{**good, "volumeID": 7}])) == INVALID
    assert _refused(lambda: snap(frozen="maybe")) == BAD_PARAMS
    assert _refused(lambda: snap(freeze_timeout=0)) == INVALID
    assert _refused(lambda: snap(timeout=-1)) == INVALID
    assert _refused(lambda: snap(jobUUID=["not", "a", "string"])) == BAD_PARAMS
    assert _refused(lambda: snap(jobUUID="")) == INVALID
    assert _refused(lambda: snap(snapMemory="not,six,ids")) == INVALID
    assert disk_source(cli, vm.vm_id) == vm.prepared(cli, leaf)
    assert metadata_volume(cli, vm.vm_id) == leaf


def test_a_snapshot_of_a_volume_the_vm_does_not_run_on_fails_its_job(
    snap_host: Any, snap_vm: SnapVm
) -> None:
    """As VDSM: the verb answers, the job fails with SnapshotFailed (48)."""
    _host, cli, _dc = snap_host
    vm = snap_vm
    leaf = vm.vols[-1]
    new = vm.new_leaf(cli)
    for drive in (
        vm.drive(new, base=new_id()),  # an unknown base volume
        vm.drive(new, base=vm.vols[0]),  # a volume of the chain, not the one it runs on
        {**vm.drive(new), "imageID": new_id()},
        vm.drive(new_id()),  # a new volume the storage does not have
    ):
        job_id = new_id()
        cli.VM.snapshot(vmID=vm.vm_id, snapDrives=[drive], frozen=True, jobUUID=job_id)
        job = wait_job(cli, job_id)
        assert job["status"] == "failed", (drive, job)
        assert job["error"]["code"] == SNAPSHOT_FAILED
        assert disk_source(cli, vm.vm_id) == vm.prepared(cli, leaf)
        assert metadata_volume(cli, vm.vm_id) == leaf
    assert volume(cli, vm.dc, vm.img, new)["voltype"] == "LEAF"


def test_a_job_id_in_use_is_refused(snap_host: Any, snap_vm: SnapVm) -> None:
    _host, cli, _dc = snap_host
    vm = snap_vm
    new = vm.new_leaf(cli)
    job_id = new_id()
    cli.VM.snapshot(vmID=vm.vm_id, snapDrives=[vm.drive(new)], frozen=True, jobUUID=job_id)
    assert wait_job(cli, job_id)["status"] == "done"
    newer = new_id()
    again = [vm.drive(newer, base=new)]
    code = _refused(lambda: cli.VM.snapshot(vmID=vm.vm_id, snapDrives=again, jobUUID=job_id))
    assert code == JOB_EXISTS
    assert metadata_volume(cli, vm.vm_id) == new
