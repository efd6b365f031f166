"""VM.freeze and VM.thaw through the qemu guest agent, and a snapshot that freezes.

A tiny Linux guest with qemu-ga (conftest `tiny_guest`, TCG) runs on a volume of the
data center: freeze and thaw answer their status; a snapshot with `frozen=false`
freezes the guest's file systems around libvirt's switch and thaws them after (the
agent answers afterwards). Without an agent, freeze and thaw fail with VDSM's codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from snapshot_helpers import SnapVm, make_image, metadata_volume, snapshot

from harness.engine import new_id, qemu_chain
from harness.guests import StatusEvents
from harness.waiting import wait_for
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.kvm]

NO_SUCH_VM = 1
BAD_PARAMS = -32602
FREEZE_FAILED, THAW_FAILED = 76, 77
NO_AGENT = (19, 76)
"""No agent channel: libvirt says "not configured" (76); one that never answers: 19."""


def _refused(call: Callable[[], Any]) -> int:
    with pytest.raises(ServerError) as refused:
        call()
    return refused.value.code


def test_freeze_and_thaw_without_a_guest_agent_fail_with_vdsms_codes(
    snap_host: Any, snap_vm: SnapVm
) -> None:
    _host, cli, _dc = snap_host
    vm = snap_vm
    assert _refused(lambda: cli.VM.freeze(vmID=vm.vm_id)) == FREEZE_FAILED
    assert _refused(lambda: cli.VM.thaw(vmID=vm.vm_id)) == THAW_FAILED
    assert _refused(lambda: cli.VM.freeze(vmID=new_id())) == NO_SUCH_VM
    assert _refused(lambda: cli.VM.thaw(vmID=new_id())) == NO_SUCH_VM
    assert _refused(cli.VM.freeze) == BAD_PARAMS
    assert _refused(lambda: cli.VM.thaw(vmID=["x"])) == BAD_PARAMS
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Up"
    # A snapshot still goes on: nothing to freeze, as VDSM without an agent.
    new = vm.new_leaf(cli)
    job_id = new_id()
    cli.VM.snapshot(vmID=vm.vm_id, snapDrives=[vm.drive(new)], frozen=False, jobUUID=job_id)
    assert wait_for(
        lambda: (
            (cli.Host.getJobs(job_type="virt", job_ids=[job_id]).get(job_id) or {}).get("status")
            == "done"
        ),
        60,
        "the snapshot job to be done",
    )


def _agent_vm(cli: Any, dc: Any, tiny_guest: Any, engine_xml: Any, engine_disk_ids: Any) -> str:
    vm_id = new_id()
    events = StatusEvents(cli)
    xml = engine_xml(
        vm_id=vm_id,
        name=f"sn-ga-{vm_id[:6]}",
        domain_type="qemu",  # TCG: this host's nested KVM hangs Linux guests (ENVIRONMENT.md)
        disk=engine_disk_ids,
        kernel=tiny_guest.boot(),
        memory_mib=256,
        spice=False,
    )
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    events.until(vm_id, "Up", timeout=60)
    return vm_id


def _answers(cli: Any, vm_id: str) -> bool:
    try:
        cli.VM.freeze(vmID=vm_id)
    except ServerError as error:
        if error.code not in NO_AGENT:
            raise
        return False
    cli.VM.thaw(vmID=vm_id)
    return True


@pytest.mark.usefixtures("accelerator")
def test_a_guest_with_an_agent_is_frozen_for_its_snapshot_and_thawed_after(
    snap_host: Any,
    tiny_guest: Any,
    engine_xml: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _host, cli, dc = snap_host
    img, vols = make_image(cli, dc)
    disk = StorageDisk(
        path=vm_path_guess(dc, img, vols[-1]),
        pool_id=dc.sp,
        domain_id=dc.sd,
        image_id=img,
        volume_id=vols[-1],
    )
    vm_id = _agent_vm(cli, dc, tiny_guest, engine_xml, disk)
    vm = SnapVm(dc=dc, vm_id=vm_id, img=img, vols=vols)
    wait_for(lambda: _answers(cli, vm_id), 120, "the guest agent to answer freeze", step=1.0)

    caplog.set_level(logging.INFO, logger="hostvisor.actors.vm.snapshot_work")
    caplog.clear()
    new = vm.new_leaf(cli)
    assert snapshot(cli, vm, new, frozen=False)["status"] == "done"
    frozen = [r for r in caplog.records if "guest file systems frozen" in r.getMessage()]
    assert frozen, "the snapshot did not freeze the guest"
    assert metadata_volume(cli, vm_id) == new
    assert qemu_chain(vm.path(new)) == [*vols, new]
    assert _answers(cli, vm_id)  # thawed: the agent freezes and thaws again

    # The Engine froze it itself (frozen=true): no freeze here.
    caplog.clear()
    vm.vols.append(new)
    newer = vm.new_leaf(cli)
    assert snapshot(cli, vm, newer, frozen=True)["status"] == "done"
    assert not [r for r in caplog.records if "guest file systems frozen" in r.getMessage()]
    cli.VM.destroy(vmID=vm_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageDisk:
    """A disk for `engine_xml`: named by storage ids, its path the Engine's guess."""

    path: str
    pool_id: str
    domain_id: str
    image_id: str
    volume_id: str
    format: str = "qcow2"


def vm_path_guess(dc: Any, img: str, vol: str) -> str:
    """The Engine's guess at a volume's path (the host replaces it when it prepares)."""
    return f"/rhev/data-center/{dc.sp}/{dc.sd}/images/{img}/{vol}"
