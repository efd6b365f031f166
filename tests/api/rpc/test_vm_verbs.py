"""The VM verbs and the Host verbs about VMs, on real guests, as the Engine calls them.

Errors carry VDSM's codes (reference/vdsm-wire.md §2); stats have VDSM's fields and
types (§5). Guests are 64 MiB and halt at once after boot.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.guests import OVIRT_VM_NS as OVIRT_VM
from harness.guests import Guests, StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

NO_VM, VM_EXISTS, VM_IS_DOWN, CREATE_ERROR, UNSUPPORTED, INVALID_PARAMETER = 1, 4, 6, 9, 75, 91
PERCENT = re.compile(r"^\d+\.\d\d$")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("guests"), accelerator.domain_type)


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with host.client() as client:
        try:
            yield client
        finally:  # the embed root is shared by every test of the process: leave no VM
            for vm_id in client.Host.getVMList():
                try:
                    client.VM.destroy(vmID=vm_id)
                except ServerError as error:
                    if error.code != NO_VM:
                        raise


def _up(cli: Client, guests: Guests, name: str, **options: Any) -> tuple[str, str]:
    """Create a guest and wait for its first status past WaitForLaunch."""
    events = StatusEvents(cli)
    vm_id, xml = guests.xml(name, **options)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    events.next(vm_id)
    return vm_id, xml


def _error(call: Any, **params: Any) -> ServerError:
    with pytest.raises(ServerError) as raised:
        call(**params)
    return raised.value


# -- errors -----------------------------------------------------------------------------------


def test_create_needs_the_domain_xml(cli: Client):
    for params in ({}, {"xml": ""}, {"xml": "   "}, {"memSize": 64, "vmName": "legacy"}):
        error = _error(cli.VM.create, vmID="1b0f0c4e-5b7a-4c43-9d52-4d0e7a57c0aa", vmParams=params)
        assert error.code == CREATE_ERROR
        assert "vmParams.xml is required" in error.message
        assert "domain XML" in error.message
    assert cli.Host.getVMList() == []


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        ("<domain type='kvm'><name>x</name>", "not well-formed XML"),
        ("<domain type='kvm'><name>no-uuid</name></domain>", "the domain has no valid <uuid>"),
        ("<domain type='kvm'><uuid>nope</uuid></domain>", "the domain has no valid <uuid>"),
        ("<network><name>n</name></network>", "expected <domain>, got <network>"),
        (
            f"<domain type='kvm'><uuid>{uuid.uuid4()}</uuid>{'<a>' * 3000}{'</a>' * 3000}</domain>",
            "nested deeper than",
        ),
        (
            f"<domain type='kvm'><uuid>{uuid.uuid4()}</uuid><vcpu>lots</vcpu></domain>",
            "<vcpu> is not a count",
        ),
        (
            "<!DOCTYPE d [<!ENTITY a 'x'>]><domain><uuid>u</uuid></domain>",
            "entity declarations are refused",
        ),
    ],
    ids=["malformed", "no uuid", "bad uuid", "not a domain", "too deep", "bad vcpu", "dtd"],
)
def test_create_refuses_xml_it_cannot_read_with_a_clear_error(cli: Client, xml: str, reason: str):
    error = _error(cli.VM.create, vmParams={"xml": xml})

    assert error.code == INVALID_PARAMETER
    assert "'param': 'xml'" in error.message
    assert reason in error.message
    assert cli.Host.getVMList() == []


def test_create_of_an_existing_id_is_refused_and_leaves_the_vm_alone(cli: Client, guests: Guests):
    vm_id, xml = _up(cli, guests, "twice")

    error = _error(cli.VM.create, vmID=vm_id, vmParams={"xml": xml})

    assert error.code == VM_EXISTS
    assert vm_id in error.message
    assert cli.Host.getVMList(onlyUUID=False) == [{"vmId": vm_id, "status": "Up"}]


def test_verbs_this_host_does_not_implement_answer_code_75_and_the_vm_runs_on(
    cli: Client, guests: Guests
):
    vm_id, _xml = _up(cli, guests, "no-snapshot")

    # VM.snapshot is implemented (tests/actors/vm/snapshots/): one without its disks is
    # refused as any verb missing a param (-32602), and the VM runs on.
    assert _error(lambda: cli.VM.snapshot(vmID=vm_id)).code == -32602
    # The hotplug verbs are implemented (tests/actors/vm/hotplug/): a document without
    # the device is refused (91), and the VM runs on.
    for verb in (cli.VM.hotunplugNic, cli.VM.hotplugNic):
        error = _error(lambda verb=verb: verb(params={"vmId": vm_id, "xml": "<hotplug/>"}))
        assert error.code == INVALID_PARAMETER
    assert _error(lambda: cli.VM.hotplugDisk(params={"vmId": "nope"})).code == NO_VM
    assert cli.Host.getVMList(onlyUUID=False) == [{"vmId": vm_id, "status": "Up"}]
    assert cli.VM.pause(vmID=vm_id) == {"vmList": {}}  # the actor carried on


def test_verbs_on_an_unknown_vm_answer_code_1(cli: Client):
    unknown = "0d4f6b0e-28a4-4c0f-8a43-1f1e0d1b9a77"
    for verb in (cli.VM.destroy, cli.VM.pause, cli.VM.cont, cli.VM.getStats, cli.VM.shutdown):
        error = _error(verb, vmID=unknown)
        assert error.code == NO_VM
        assert error.message == f"Virtual machine does not exist: {{'vmId': '{unknown}'}}"


def test_operations_on_a_down_vm_answer_code_6_and_destroy_reaps_it(cli: Client, guests: Guests):
    events = StatusEvents(cli)
    vm_id, _xml = _up(cli, guests, "reaped")
    cli.VM.shutdown(vmID=vm_id, timeout=0.5, force=True)
    events.until(vm_id, "Down")

    for verb in (cli.VM.pause, cli.VM.cont, cli.VM.reset, cli.VM.shutdown):
        error = _error(verb, vmID=vm_id)
        assert error.code == VM_IS_DOWN, verb
    stats = cli.VM.getStats(vmID=vm_id)
    assert len(stats) == 1
    assert stats[0]["status"] == "Down"
    assert (stats[0]["exitCode"], stats[0]["exitReason"]) == (0, 6)
    assert stats[0]["exitMessage"] == "Admin shut down from the engine"
    assert stats[0]["timeOffset"] == "0"
    assert "cpuUser" not in stats[0]
    assert [s["vmId"] for s in cli.Host.getAllVmStats()] == [vm_id]

    assert cli.VM.destroy(vmID=vm_id) is True
    assert cli.Host.getVMList() == []
    assert _error(cli.VM.destroy, vmID=vm_id).code == NO_VM


# -- stats ------------------------------------------------------------------------------------


def test_stats_after_two_samples_have_vdsm_fields(cli: Client, guests: Guests):
    vm_id, _xml = _up(cli, guests, "sampled")

    def stats() -> dict[str, Any]:
        listed = cli.VM.getStats(vmID=vm_id)
        assert len(listed) == 1
        entry: dict[str, Any] = listed[0]
        return entry

    first = wait_for(lambda: (s := stats()).get("cpuUsage") and s, 10, "a first sample")
    # A later sample whose cumulative CPU time grew: now two samples make the rates.
    second = wait_for(
        lambda: int((s := stats()).get("cpuUsage", 0)) > int(first["cpuUsage"]) and s,
        20,
        "a second sample with more CPU time",
    )

    assert second["vmId"] == vm_id
    assert second["status"] == "Up"
    assert isinstance(second["statusTime"], str)
    assert int(second["statusTime"]) > 0
    for field in ("cpuUser", "cpuSys"):
        assert PERCENT.match(second[field]), (field, second[field])
    assert second["balloonInfo"]["balloon_max"] == "65536"
    assert "vda" in second["disks"]
    assert second["monitorResponse"] in {"0", "-1"}  # -1 only while a sample is stuck
    assert isinstance(second["elapsedTime"], str)
    assert int(second["elapsedTime"]) >= 0
    assert second["vmName"] == "sampled"
    assert second["vcpuCount"] == "1"
    assert second["pauseCode"] == "NOERR"
    assert second["kvmEnable"] == ("true" if guests.domain_type == "kvm" else "false")
    wait_for(lambda: stats()["monitorResponse"] == "0", 10, "monitorResponse 0")
    all_stats = cli.Host.getAllVmStats()
    assert [s["vmId"] for s in all_stats] == [vm_id]
    assert all_stats[0]["balloonInfo"]["balloon_max"] == "65536"


# -- listing ----------------------------------------------------------------------------------


def test_host_lists_vms_with_status_definitions_and_xml(cli: Client, guests: Guests):
    up_id, _ = _up(cli, guests, "listed-up")
    paused_id, _ = _up(cli, guests, "listed-paused", launch_paused=True)

    assert sorted(cli.Host.getVMList()) == sorted([up_id, paused_id])
    assert sorted(cli.Host.getVMList(onlyUUID=False), key=lambda vm: vm["vmId"]) == sorted(
        [{"vmId": up_id, "status": "Up"}, {"vmId": paused_id, "status": "Paused"}],
        key=lambda vm: vm["vmId"],
    )
    assert cli.Host.getVMList(vmList=[paused_id], onlyUUID=False) == [
        {"vmId": paused_id, "status": "Paused"}
    ]
    assert cli.Host.getVMList(vmList=[up_id]) == [up_id]

    full = {vm["vmId"]: vm for vm in cli.Host.getVMFullList()}
    assert set(full) == {up_id, paused_id}
    assert full[up_id]["status"] == "Up"
    assert full[paused_id]["status"] == "Paused"
    assert full[up_id]["vmName"] == "listed-up"
    for vm_id in (up_id, paused_id):
        # The XML libvirt runs, not the one sent: it has the domain's id, the device
        # aliases libvirt assigned and the start time in the metadata.
        live = ET.fromstring(full[vm_id]["xml"])  # noqa: S314
        assert live.findtext("uuid") == vm_id
        assert live.get("id") is not None
        assert live.find("devices/disk/alias") is not None
        assert live.findtext(f"metadata/{{{OVIRT_VM}}}vm/{{{OVIRT_VM}}}startTime")
    assert [vm["vmId"] for vm in cli.Host.getVMFullList(vmList=[up_id])] == [up_id]

    dumped = cli.Host.dumpxmls()
    assert set(dumped) == {up_id, paused_id}
    assert ET.fromstring(dumped[paused_id]).findtext("name") == "listed-paused"  # noqa: S314
    assert cli.Host.dumpxmls(vmList=[up_id]) == {up_id: full[up_id]["xml"]}
    assert cli.Host.getStats()["vmCount"] == 2


def test_shutdown_without_force_leaves_a_guest_that_ignores_it_running(cli: Client, guests: Guests):
    """As VDSM's powerdown: only `force` powers off a guest that ignores ACPI."""
    vm_id, _xml = _up(cli, guests, "stubborn")
    events = StatusEvents(cli)
    # As JsonRpcVdsServer.shutdown sends it: `delay` a string, no `timeout`, no `force`.
    assert _error(cli.VM.shutdown, vmID=vm_id, delay="soon").code == 91
    assert _error(cli.VM.shutdown, vmID=vm_id, timeout=-1).code == 91
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"  # the refusals changed nothing
    said = cli.VM.shutdown(vmID=vm_id, delay="30", message="going down", timeout=0.5)
    assert said == "Machine shutting down"
    assert events.next(vm_id)[0]["status"] == "Powering down"
    assert events.next(vm_id)[0]["status"] == "Up"  # the halting guest ignored it
    stats = cli.VM.getStats(vmID=vm_id)[0]
    assert stats["status"] == "Up"
    assert cli.VM.destroy(vmID=vm_id) is True
