"""An agent killed (SIGKILL) mid-migration, on either side: after its restart each agent
reports what libvirt says, and no guest is lost or runs twice.

libvirt drives the migration itself (peer to peer, libvirtd to libvirtd), so it goes on
while the agent that asked for it is dead. The restarted agent must find it in flight
and follow it to its end: the source says "Migration Source" and then Down
(MIGRATION_SUCCEEDED), the destination "Migration Destination" and then Up — not
"Paused" forever, and not a VM the Engine would take for lost.

Same two test hosts and slow halting guest as test_migration_more.py: 4 GiB at the
Engine's least bandwidth (1 MiB/s) keeps libvirt's job running for ~17 s.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from harness.agent import kill9
from harness.guests import Guests
from harness.twohosts import (
    TestHost,
    domain_state,
    engine_migration_params,
    status_of,
    two_hosts,
    vm_statuses,
)
from harness.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]

EVENTS = "jms.queue.events"
SLOW_GUEST_MIB = 4096
MIGRATION_SUCCEEDED = 4  # VDSM's exitReason for a source VM whose guest moved away


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestHost, TestHost]]:
    with two_hosts(tmp_path_factory.mktemp("hosts"), migration_monitor_interval="0.2") as pair:
        yield pair


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("shared-disks"), accelerator.domain_type)


def start_slow_migration(source: TestHost, destination: TestHost, guests: Guests, name: str) -> str:
    """Start a guest on `source` and migrate it slowly; return once libvirt's job runs."""
    vm_id, xml = guests.xml(name, memory_mib=SLOW_GUEST_MIB)
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    with source.connect() as watcher, source.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
        wait_for(lambda: status_of(source, vm_id) == "Up", 60, f"{name} Up")
        watcher.subscribe(EVENTS, events)
        watcher.Host.ping()  # the SUBSCRIBE is in place once a later request is answered
        params = engine_migration_params(destination, vm_id, maxBandwidth=1)
        assert cli.VM.migrate(vmID=vm_id, params=params) is True
        deadline = time.monotonic() + 60
        while True:  # an event wait: the monitor's first progress report
            method, _params = events.get(timeout=max(deadline - time.monotonic(), 0.001))
            if method == f"|virt|VM_migration_status|{vm_id}":
                break
    assert domain_state(destination, vm_id) == libvirt.VIR_DOMAIN_PAUSED  # arriving
    return vm_id


def never_running_twice(source: TestHost, destination: TestHost, vm_id: str) -> None:
    """Fail if libvirt runs the guest's vCPUs on both hosts at once."""
    states = (domain_state(source, vm_id), domain_state(destination, vm_id))
    assert states != (libvirt.VIR_DOMAIN_RUNNING,) * 2, "the guest runs on both hosts"


def restart(host: TestHost) -> None:
    host.start_agent()
    host.wait_agent()


def test_the_source_agent_killed_mid_migration_finds_it_and_follows_it_to_the_end(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id = start_slow_migration(source, destination, guests, "source-killed")
    kill9(source.agent)
    restart(source)
    # libvirt's job went on without the agent: the restarted agent says so (once its
    # look at libvirt's job, made off the VM actor's turn, is back).
    wait_for(lambda: status_of(source, vm_id) == "Migration Source", 10, "Migration Source")
    assert status_of(destination, vm_id) == "Migration Destination"

    def arrived() -> bool:
        never_running_twice(source, destination, vm_id)
        return status_of(destination, vm_id) == "Up"

    wait_for(arrived, 60, "the guest Up on the destination")
    assert domain_state(destination, vm_id) == libvirt.VIR_DOMAIN_RUNNING
    wait_for(lambda: domain_state(source, vm_id) is None, 30, "the source domain gone")
    gone = wait_for(
        lambda: (vm := vm_statuses(source).get(vm_id)) and vm["status"] == "Down" and vm,
        30,
        "the source VM Down",
    )
    assert gone["exitReason"] == MIGRATION_SUCCEEDED, gone
    with source.connect() as cli:
        assert cli.VM.destroy(vmID=vm_id) is True  # the Engine reaps it
    assert vm_id not in vm_statuses(source)
    with destination.connect() as cli:
        assert cli.VM.destroy(vmID=vm_id) is True
    assert domain_state(destination, vm_id) is None, "destroy left the domain defined"


def test_the_destination_agent_killed_mid_migration_finds_the_guest_arriving(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id = start_slow_migration(source, destination, guests, "destination-killed")
    kill9(destination.agent)
    restart(destination)
    wait_for(
        lambda: status_of(destination, vm_id) == "Migration Destination",
        10,
        "Migration Destination (not Paused)",
    )
    assert status_of(source, vm_id) == "Migration Source"

    def arrived() -> bool:
        never_running_twice(source, destination, vm_id)
        return status_of(destination, vm_id) == "Up"

    wait_for(arrived, 60, "the guest Up on the destination")
    gone = wait_for(
        lambda: (vm := vm_statuses(source).get(vm_id)) and vm["status"] == "Down" and vm,
        30,
        "the source VM Down",
    )
    assert gone["exitReason"] == MIGRATION_SUCCEEDED, gone
    with source.connect() as cli:
        assert cli.VM.destroy(vmID=vm_id) is True
    with destination.connect() as cli:
        assert cli.VM.destroy(vmID=vm_id) is True
    # The arrived guest was made transient by the restarted agent too: nothing is left.
    assert domain_state(destination, vm_id) is None, "destroy left the domain defined"


def test_a_migration_found_after_a_restart_can_be_cancelled(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id = start_slow_migration(source, destination, guests, "cancelled-after-restart")
    kill9(source.agent)
    restart(source)
    wait_for(lambda: status_of(source, vm_id) == "Migration Source", 10, "Migration Source")
    with source.connect() as cli:
        assert cli.VM.migrateCancel(vmID=vm_id) is True
        wait_for(lambda: status_of(source, vm_id) == "Up", 30, "the source VM Up again")
        assert domain_state(source, vm_id) == libvirt.VIR_DOMAIN_RUNNING
        # libvirt dropped the half-arrived guest; the destination's VM is Down for the
        # Engine to reap (the restarted source no longer knows where it was going).
        wait_for(lambda: domain_state(destination, vm_id) is None, 30, "no domain there")
        wait_for(lambda: status_of(destination, vm_id) == "Down", 30, "the destination VM Down")
        with destination.connect() as there:
            assert there.VM.destroy(vmID=vm_id) is True
        # The guest never stopped running on the source; it migrates again from here.
        params = engine_migration_params(destination, vm_id)
        assert cli.VM.migrate(vmID=vm_id, params=params) is True
        wait_for(lambda: status_of(destination, vm_id) == "Up", 90, "the guest Up there")
        assert cli.VM.destroy(vmID=vm_id) is True  # Down or just leaving: either is reaped
    with destination.connect() as there:
        assert there.VM.destroy(vmID=vm_id) is True
