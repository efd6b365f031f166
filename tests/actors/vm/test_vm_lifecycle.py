"""A VM's life on real guests, through an in-process host and its client (VDSM §3.1, §4).

Guests are 64 MiB and boot a sector that halts at once (KVM, or TCG where /dev/kvm is
absent). Every wait is on an event or on a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import psutil
import pytest

from harness.guests import Guests, StatusEvents, qemu_pid
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.actor import WorkDone
from hostvisor.actors.clock import ManualClock, MonotonicClock
from hostvisor.actors.events import notify_time
from hostvisor.actors.vm.addresses import vm_path
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

NORMAL, ERROR = 0, 1
LOST_QEMU_CONNECTION, LIBVIRT_START_FAILED, ADMIN_SHUTDOWN, HOST_SHUTDOWN = 2, 3, 6, 11
VM_IS_DOWN = 6


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("guests"), accelerator.domain_type)


def _destroy_all(cli: Client) -> None:
    """Leave no VM behind: the embed root is shared by every test of the process."""
    for vm_id in cli.Host.getVMList():
        try:
            cli.VM.destroy(vmID=vm_id)
        except ServerError as error:
            if error.code != 1:
                raise


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with host.client() as client:
        try:
            yield client
        finally:
            _destroy_all(client)


def _status(cli: Client, vm_id: str) -> str:
    status: str = cli.VM.getStats(vmID=vm_id)[0]["status"]
    return status


def _assert_status_event(entry: dict[str, Any], params: dict[str, Any], vm_id: str) -> None:
    assert entry["vmId"] == vm_id
    assert isinstance(entry["statusTime"], str)
    assert int(entry["statusTime"]) > 2**31 - 1
    assert isinstance(params["notify_time"], int)
    assert params["notify_time"] >= int(entry["statusTime"])


def test_a_vm_lives_from_create_to_destroy(cli: Client, guests: Guests):
    events = StatusEvents(cli)
    vm_id, xml = guests.xml("life")

    created = cli.VM.create(vmID=vm_id, vmParams={"xml": xml})

    assert created["vmId"] == vm_id
    assert created["status"] == "WaitForLaunch"
    assert created["xml"] == xml
    entry, params = events.next(vm_id)
    assert entry["status"] == "Up"
    _assert_status_event(entry, params, vm_id)
    assert entry["vmName"] == "life"

    assert cli.VM.pause(vmID=vm_id) == {"vmList": {}}
    entry, params = events.next(vm_id)
    assert entry["status"] == "Paused"
    _assert_status_event(entry, params, vm_id)
    assert _status(cli, vm_id) == "Paused"
    assert cli.VM.getStats(vmID=vm_id)[0]["pauseCode"] == "NOERR"

    assert cli.VM.cont(vmID=vm_id) == {"vmList": {}}
    entry, params = events.next(vm_id)
    assert entry["status"] == "Up"
    _assert_status_event(entry, params, vm_id)

    # The halting guest ignores ACPI: after `timeout` seconds it is forced off (`force`).
    asked = time.monotonic()
    assert cli.VM.shutdown(vmID=vm_id, timeout=1, force=True) == "Machine shutting down"
    entry, params = events.next(vm_id)
    assert entry["status"] == "Powering down"
    entry, params = events.next(vm_id)
    assert time.monotonic() - asked >= 1
    assert entry["status"] == "Down"
    _assert_status_event(entry, params, vm_id)
    assert entry["exitCode"] == NORMAL
    assert entry["exitReason"] == ADMIN_SHUTDOWN
    assert isinstance(entry["exitReason"], int)
    assert entry["exitMessage"] == "Admin shut down from the engine"
    assert entry["timeOffset"] == "0"

    # Down stays listed until VM.destroy; operations on it are refused with code 6.
    assert cli.Host.getVMList(onlyUUID=False) == [{"vmId": vm_id, "status": "Down"}]
    with pytest.raises(ServerError) as raised:
        cli.VM.pause(vmID=vm_id)
    assert raised.value.code == VM_IS_DOWN
    assert "Virtual machine is down" in raised.value.message

    assert cli.VM.destroy(vmID=vm_id) is True
    assert cli.Host.getVMList() == []
    assert cli.Host.getVMList(onlyUUID=False) == []


def test_a_vm_launched_paused_is_paused_and_never_up_before(cli: Client, guests: Guests):
    events = StatusEvents(cli)
    vm_id, xml = guests.xml("paused", launch_paused=True)
    assert "<ovirt-vm:launchPaused>true</ovirt-vm:launchPaused>" in xml

    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})

    entry, _params = events.next(vm_id)
    assert entry["status"] == "Paused"  # WaitForLaunch -> Paused, no Up in between
    assert _status(cli, vm_id) == "Paused"
    before_cont = notify_time(MonotonicClock())  # the host runs in this process on it
    cli.VM.cont(vmID=vm_id)
    entry, _params = events.next(vm_id)
    assert entry["status"] == "Up"
    assert int(entry["statusTime"]) >= before_cont  # the cont's, not a late one of the launch


def test_a_vm_libvirt_cannot_start_goes_down_with_start_failed(cli: Client, guests: Guests):
    events = StatusEvents(cli)
    vm_id, xml = guests.xml("nodisk")
    xml = xml.replace(".qcow2'/>", "-missing.qcow2'/>")

    assert cli.VM.create(vmID=vm_id, vmParams={"xml": xml})["status"] == "WaitForLaunch"

    entry, _params = events.next(vm_id)
    assert entry["status"] == "Down"
    assert (entry["exitCode"], entry["exitReason"]) == (ERROR, LIBVIRT_START_FAILED)
    assert "missing.qcow2" in entry["exitMessage"]
    assert cli.Host.getVMList(onlyUUID=False) == [{"vmId": vm_id, "status": "Down"}]


def _kill(host: EmbeddedHost, embed_root: Path, name: str, vm_id: str, how: str) -> None:
    if how == "libvirt destroy":  # an admin's `virsh destroy` on the host
        host.tree.connection().lookupByUUIDString(vm_id).destroy()
        return
    pid = qemu_pid(embed_root, name, vm_id)  # the QEMU this test started
    os.kill(pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)


@pytest.mark.parametrize(
    "case",
    [
        ("SIGKILL", LOST_QEMU_CONNECTION, "Lost connection with qemu process"),
        ("libvirt destroy", LOST_QEMU_CONNECTION, "Lost connection with qemu process"),
        ("SIGTERM", HOST_SHUTDOWN, "VM has been terminated on the host"),
    ],
    ids=lambda case: case[0],
)
def test_a_guest_stopped_behind_our_back_is_down_with_an_error(
    host: EmbeddedHost, cli: Client, guests: Guests, embed_root: Path, case: tuple[str, int, str]
):
    how, reason, message = case
    events = StatusEvents(cli)
    name = f"behind-{how.split()[-1].lower()}"
    vm_id, xml = guests.xml(name)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    assert events.next(vm_id)[0]["status"] == "Up"

    _kill(host, embed_root, name, vm_id, how)

    entry, _params = events.next(vm_id)
    assert entry["status"] == "Down"
    assert (entry["exitCode"], entry["exitReason"]) == (ERROR, reason)
    assert entry["exitMessage"] == message
    stats = cli.VM.getStats(vmID=vm_id)[0]
    assert (stats["status"], stats["exitCode"], stats["exitReason"]) == ("Down", ERROR, reason)


def test_a_crashed_vm_actor_is_restarted_from_libvirt_and_the_guest_is_untouched(
    host: EmbeddedHost, cli: Client, guests: Guests, embed_root: Path
):
    events = StatusEvents(cli)
    vm_id, xml = guests.xml("phoenix")
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    assert events.next(vm_id)[0]["status"] == "Up"
    pid = qemu_pid(embed_root, "phoenix", vm_id)
    path = vm_path(vm_id)
    first = host.registry.lookup(path)
    started = wait_for(
        lambda: (elapsed := int(cli.VM.getStats(vmID=vm_id)[0]["elapsedTime"])) >= 1 and elapsed,
        10,
        "a second of elapsedTime",
    )

    def crash(_result: object) -> None:
        raise RuntimeError("a bug in a VmActor handler")

    # A tell whose handler raises something that is not a HostvisorError is a crash.
    first.tell(WorkDone(then=crash, outcome=None))

    restarted = wait_for(
        lambda: (ref := host.registry.get(path)) is not None and ref is not first and ref,
        10,
        "the supervisor to restart the VM's actor",
    )
    status = host.registry.status(path)
    assert status.restarts.count == 1
    assert "RuntimeError" in (status.restarts.last_reason or "")
    assert restarted.actor_class.__name__ == "VmActor"
    stats = cli.VM.getStats(vmID=vm_id)[0]
    assert stats["status"] == "Up"
    assert int(stats["elapsedTime"]) >= started  # the start time came back from libvirt
    assert cli.Host.getVMList(onlyUUID=False) == [{"vmId": vm_id, "status": "Up"}]
    # The guest was not touched: same QEMU, still running.
    assert qemu_pid(embed_root, "phoenix", vm_id) == pid
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    domain = host.tree.connection().lookupByUUIDString(vm_id)
    assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    # ...and the new actor runs it.
    cli.VM.pause(vmID=vm_id)
    assert events.next(vm_id)[0]["status"] == "Paused"
    assert domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED


# -- Powering up ----------------------------------------------------------------------------

POWERING_UP = 60.0
"""VDSM's: now affordable, since the test moves the host's clock instead of waiting."""


@pytest.fixture
def manual(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmbeddedHost, ManualClock, Client]]:
    """A host on a clock the test moves, whose new VMs report "Powering up" for 60 s.

    libvirt's test driver runs its guests: "Powering up" is the agent's own clock,
    not the guest's, and a second qemu:///embed root would register libvirt's QEMU
    driver again (a process can register only about 16).
    """
    clock = ManualClock(start=1000.0)
    settings = {**VM_TEST_SETTINGS, "vm_powering_up_seconds": POWERING_UP}
    config = load_config(
        state_dir=tmp_path_factory.mktemp("manual"),
        libvirt_uri="test:///default",
        management_port=0,
        **settings,
    )
    with EmbeddedHost(config, clock=clock) as host, host.client() as client:
        try:
            yield host, clock, client
        finally:
            _destroy_all(client)


def test_a_started_vm_is_powering_up_then_up(manual: Any, guests: Guests):
    _host, clock, slow_cli = manual
    events = StatusEvents(slow_cli)
    vm_id, xml = guests.xml("booting")

    slow_cli.VM.create(vmID=vm_id, vmParams={"xml": xml})

    entry, _params = events.next(vm_id)
    announced = int(entry["statusTime"])
    assert entry["status"] == "Powering up"
    assert _status(slow_cli, vm_id) == "Powering up"
    clock.advance(POWERING_UP - 1)
    assert _status(slow_cli, vm_id) == "Powering up"
    clock.advance(1)
    wait_for(lambda: _status(slow_cli, vm_id) == "Up", 10, "Up")
    # The end of "Powering up" is a status change too, and is announced.
    entry, _params = events.next(vm_id, timeout=10)
    assert entry["status"] == "Up"
    assert int(entry["statusTime"]) - announced >= POWERING_UP * 1000  # milliseconds


def test_a_restarted_vm_actor_does_not_power_up_again(manual: Any, guests: Guests):
    host, clock, slow_cli = manual
    events = StatusEvents(slow_cli)
    vm_id, xml = guests.xml("steady")
    slow_cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    assert events.next(vm_id)[0]["status"] == "Powering up"
    clock.advance(POWERING_UP)
    assert events.until(vm_id, "Up", timeout=30)[-1]["status"] == "Up"
    path = vm_path(vm_id)
    first = host.registry.lookup(path)

    def crash(_result: object) -> None:
        raise RuntimeError("a bug in a VmActor handler")

    first.tell(WorkDone(then=crash, outcome=None))
    wait_for(
        lambda: (ref := host.registry.get(path)) is not None and ref is not first,
        10,
        "the restart",
    )

    assert _status(slow_cli, vm_id) == "Up"  # not "Powering up" for another 60 s
