"""Live migration between two Hostvisor hosts, driven through the wire as the Engine drives it.

Two test hosts (tests/harness/twohosts.py): each its own namespaces, libvirtd and agent,
TLS between the agents. The Engine's params are those MigrateBrokerVDSCommand builds
(ovirt-engine, vdsbroker/vdsbroker/MigrateBrokerVDSCommand.java); its status polls are
JsonRpcVdsServer.migrateStatus/migrateCancel; the destination is prepared by the source
agent with VM.migrationCreate, as VDSM's SourceThread does.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from harness.guests import Guests
from harness.twohosts import (
    TestHost,
    engine_migration_params,
    status_of,
    two_hosts,
    vm_statuses,
)
from harness.waiting import wait_for
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]

EVENTS = "jms.queue.events"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestHost, TestHost]]:
    with two_hosts(tmp_path_factory.mktemp("hosts"), migration_monitor_interval="0.2") as pair:
        yield pair


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("shared-disks"), accelerator.domain_type)


def start_guest(host: TestHost, guests: Guests, name: str) -> str:
    vm_id, xml = guests.xml(name)
    with host.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
    wait_for(lambda: status_of(host, vm_id) == "Up", 60, f"{name} Up")
    return vm_id


def qemu_running(host: TestHost, vm_id: str) -> bool:
    conn = libvirt.open(host.libvirt_uri)
    try:
        return conn.lookupByUUIDString(vm_id).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def test_a_running_guest_migrates_and_keeps_running(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id = start_guest(source, guests, "mover")
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    with source.connect() as watcher, source.connect() as cli:
        watcher.subscribe(EVENTS, events)
        watcher.Host.ping()
        assert (
            cli.VM.migrate(vmID=vm_id, params=engine_migration_params(destination, vm_id)) is True
        )
        wait_for(
            lambda: status_of(destination, vm_id) == "Up", 60, "the guest Up on the destination"
        )
        wait_for(lambda: status_of(source, vm_id) == "Down", 30, "the source VM Down")
        down = vm_statuses(source)[vm_id]
        assert down["exitReason"] == 4  # MIGRATION_SUCCEEDED
        assert down["exitCode"] == 0
        migration = cli.VM.getMigrationStatus(vmID=vm_id)
        assert migration["status"]["code"] == 0
        assert migration["progress"] == 100
        # The Engine reaps the source VM with destroy.
        assert cli.VM.destroy(vmID=vm_id) is True
    assert qemu_running(destination, vm_id)
    assert not qemu_running(source, vm_id)
    seen = []
    while not events.empty():
        method, params = events.get_nowait()
        if method.endswith(vm_id):
            seen.append((method.split("|")[2], params[vm_id]))
    kinds = [kind for kind, _ in seen]
    assert ("VM_status", "Migration Source") in [(k, p.get("status")) for k, p in seen]
    assert "VM_migration_status" in kinds
    last = [p for k, p in seen if k == "VM_migration_status"][-1]
    assert last["progress"] == 100
    with destination.connect() as cli:
        [stats] = cli.VM.getStats(vmID=vm_id)
        assert stats["status"] == "Up"
        assert cli.VM.destroy(vmID=vm_id) is True


def test_a_destination_that_cannot_be_reached_leaves_the_guest_up_on_the_source(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, _destination = hosts
    vm_id = start_guest(source, guests, "stayer")
    with source.connect() as cli:
        params = engine_migration_params(_destination, vm_id, dst="198.51.100.99:54321")
        cli.VM.migrate(vmID=vm_id, params=params)
        wait_for(
            lambda: cli.VM.getMigrationStatus(vmID=vm_id)["status"]["code"] == 10,
            60,
            "the migration to fail: no connection to the peer",
        )
        assert status_of(source, vm_id) == "Up"
        assert qemu_running(source, vm_id)
        # Nothing is stuck: a second attempt is accepted and fails the same way.
        cli.VM.migrate(vmID=vm_id, params=params)
        cli.VM.destroy(vmID=vm_id)


def test_migrate_refuses_bad_params_and_changes_nothing(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id = start_guest(source, guests, "checked")
    with source.connect() as cli:
        for bad in (
            {"dst": None},
            {"tunneled": "perhaps"},
            {"convergenceSchedule": {"init": [{"name": "explode"}]}},
            {"maxBandwidth": "fast"},
        ):
            with pytest.raises(ServerError) as refused:
                cli.VM.migrate(
                    vmID=vm_id, params=engine_migration_params(destination, vm_id, **bad)
                )
            assert refused.value.code == 91
        with pytest.raises(ServerError) as refused:
            cli.VM.migrateCancel(vmID=vm_id)
        assert refused.value.code == 47  # nothing to cancel
        with pytest.raises(ServerError) as refused:
            cli.VM.migrate(vmID="00000000-0000-0000-0000-000000000000", params={})
        assert refused.value.code in (1, 91)
        assert status_of(source, vm_id) == "Up"
        cli.VM.destroy(vmID=vm_id)
    assert vm_id not in vm_statuses(destination)


def test_migration_create_refuses_what_it_cannot_receive(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    _source, destination = hosts
    vm_id, xml = guests.xml("never-sent")
    with destination.connect() as cli:
        with pytest.raises(ServerError) as refused:
            cli.VM.migrationCreate(vmID=vm_id, params={"vmId": vm_id})
        assert refused.value.code == 91
        with pytest.raises(ServerError) as refused:
            cli.VM.migrationCreate(
                vmID="00000000-0000-0000-0000-000000000001", params={"_srcDomXML": xml}
            )
        assert refused.value.code == 91  # the id and the XML's <uuid> differ
        answer = cli.VM.migrationCreate(vmID=vm_id, params={"_srcDomXML": xml}, incomingLimit=2)
        assert answer["migrationPort"] == 0
        assert answer["params"]["status"] == "Migration Destination"
        with pytest.raises(ServerError) as refused:
            cli.VM.migrationCreate(vmID=vm_id, params={"_srcDomXML": xml})
        assert refused.value.code == 4  # exists already
        # The source gave up: it destroys what the destination made.
        assert cli.VM.destroy(vmID=vm_id) is True
    assert vm_id not in vm_statuses(destination)
