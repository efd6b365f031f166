"""Live migration that does not go through: a cancel mid-way, a destination that is full,
a container VM.

Same two test hosts as test_migration.py (tests/harness/twohosts.py), driven through the
wire with the Engine's params (`engine_migration_params`). A migration is kept running
for several seconds without a busy guest: a 4 GiB halting guest at the Engine's least
bandwidth (`maxBandwidth` 1 MiB/s). Its RAM is all zero pages, but each still costs a
page header on the wire, so libvirt's job takes ~17 s (measured with raw libvirt between
these hosts; a 64 MiB one takes ~1.2 s, a 512 MiB one ~3.2 s), and the guest costs no
CPU (a TCG Linux guest would hold a core). The cancel comes at the first progress event.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from harness.engine import (
    RAW,
    MiB,
    engine_vm_xml,
    local_data_center,
    new_id,
    succeeded,
    write_halting_boot_sector,
)
from harness.guests import (
    DIRTYING_SECTOR,
    Guests,
    domain_xml,
    make_boot_base,
    make_overlay,
)
from harness.twohosts import (
    TestHost,
    domain_state,
    engine_migration_params,
    status_of,
    two_hosts,
    vm_statuses,
)
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]

EVENTS = "jms.queue.events"
MIGRATION_CANCELLED = 47  # VDSM's migCancelErr, "Migration canceled"
MIGRATION_LIMIT = 82  # VDSM's migrateLimit, "Incoming migration limit exceeded"
UNSUPPORTED = 75
CREATE_ERROR = 9  # VDSM's createErr: migrationCreate's VM could not get ready
SLOW_GUEST_MIB = 4096
"""A halting guest this big, at 1 MiB/s, keeps libvirt's job running for ~17 s."""


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestHost, TestHost]]:
    with two_hosts(tmp_path_factory.mktemp("hosts"), migration_monitor_interval="0.2") as pair:
        yield pair


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("shared-disks"), accelerator.domain_type)


def start_guest(host: TestHost, guests: Guests, name: str, **options: Any) -> str:
    vm_id, xml = guests.xml(name, **options)
    with host.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
    wait_for(lambda: status_of(host, vm_id) == "Up", 60, f"{name} Up")
    return vm_id


def next_event(
    events: queue.Queue[tuple[str, dict[str, Any]]], method: str, timeout: float
) -> dict[str, Any]:
    """The params of the next event named `method` (an event wait: no polling, no sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            name, params = events.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            pytest.fail(f"no {method} event within {timeout} s")
        if name == method:
            return params


def test_a_cancel_mid_way_leaves_the_guest_up_on_the_source_and_nothing_on_the_destination(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id = start_guest(source, guests, "cancelled", memory_mib=SLOW_GUEST_MIB)
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    params = engine_migration_params(destination, vm_id, maxBandwidth=1)
    with source.connect() as watcher, source.connect() as cli:
        watcher.subscribe(EVENTS, events)
        watcher.Host.ping()  # the SUBSCRIBE is in place once a later request is answered
        assert cli.VM.migrate(vmID=vm_id, params=params) is True
        # libvirt's job is under way once the monitor publishes its progress.
        progress = next_event(events, f"|virt|VM_migration_status|{vm_id}", 60)[vm_id]
        assert progress["progress"] < 100
        assert status_of(destination, vm_id) == "Migration Destination"
        assert domain_state(destination, vm_id) == libvirt.VIR_DOMAIN_PAUSED  # arriving
        assert cli.VM.migrateCancel(vmID=vm_id) is True
        status = wait_for(
            lambda: (s := cli.VM.getMigrationStatus(vmID=vm_id))["status"]["code"] != 0 and s,
            60,
            "the migration to end",
        )
        assert status["status"] == {"code": MIGRATION_CANCELLED, "message": "Migration canceled"}
        assert status["progress"] < 100
        assert "downtime" not in status
        # Up again on the source, as the Engine sees it and as libvirt says.
        wait_for(lambda: status_of(source, vm_id) == "Up", 30, "the source VM Up again")
        assert domain_state(source, vm_id) == libvirt.VIR_DOMAIN_RUNNING
        # Nothing left on the destination: neither a VM nor a domain.
        wait_for(lambda: vm_id not in vm_statuses(destination), 30, "the destination VM gone")
        wait_for(lambda: domain_state(destination, vm_id) is None, 30, "the domain gone there")
        # A second cancel finds nothing to cancel; the guest still runs.
        with pytest.raises(ServerError) as refused:
            cli.VM.migrateCancel(vmID=vm_id)
        assert refused.value.code == MIGRATION_CANCELLED  # VDSM's migCancelErr, not in progress
        assert status_of(source, vm_id) == "Up"
        assert cli.VM.destroy(vmID=vm_id) is True


def test_a_destination_at_its_incoming_limit_refuses_and_the_guest_stays_up(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    # An earlier migration holds the destination's only incoming slot: its VM is made
    # (migrationCreate) and waits for a guest that is not coming yet.
    pending_id, pending_xml = guests.xml("pending")
    with destination.connect() as there:
        answer = there.VM.migrationCreate(
            vmID=pending_id, params={"_srcDomXML": pending_xml}, incomingLimit=1
        )
        assert answer["params"]["status"] == "Migration Destination"
    vm_id = start_guest(source, guests, "refused")
    with source.connect() as cli:
        params = engine_migration_params(destination, vm_id, incomingLimit=1)
        assert cli.VM.migrate(vmID=vm_id, params=params) is True
        status = wait_for(
            lambda: (s := cli.VM.getMigrationStatus(vmID=vm_id))["status"]["code"] != 0 and s,
            60,
            "the destination to refuse",
        )
        assert status["status"]["code"] == MIGRATION_LIMIT
        assert status["progress"] == 0
        assert status_of(source, vm_id) == "Up"
        assert domain_state(source, vm_id) == libvirt.VIR_DOMAIN_RUNNING
        on_destination = vm_statuses(destination)
        assert vm_id not in on_destination
        assert on_destination[pending_id]["status"] == "Migration Destination"
        assert domain_state(destination, vm_id) is None
        # The slot comes back once the pending migration is given up: the same guest
        # then migrates, with the same limit.
        with destination.connect() as there:
            assert there.VM.destroy(vmID=pending_id) is True
        assert cli.VM.migrate(vmID=vm_id, params=params) is True
        wait_for(lambda: status_of(destination, vm_id) == "Up", 60, "the guest Up there")
        wait_for(lambda: status_of(source, vm_id) == "Down", 30, "the source VM Down")
        done = cli.VM.getMigrationStatus(vmID=vm_id)
        assert done["status"]["code"] == 0
        assert done["progress"] == 100
        assert isinstance(done.get("downtime"), int), done  # libvirt's job-completed event
        assert cli.VM.destroy(vmID=vm_id) is True
    with destination.connect() as there:
        assert there.VM.destroy(vmID=vm_id) is True
    assert domain_state(destination, vm_id) is None, "destroy left the domain defined"


def test_a_destination_that_cannot_prepare_the_disk_refuses_and_the_guest_stays_up(
    hosts: tuple[TestHost, TestHost], tmp_path: Path, accelerator: Any
) -> None:
    """The guest's disk is a volume of a data center only the source is connected to."""
    source, destination = hosts
    dc = local_data_center(tmp_path / "local-sd")
    img, vol, vm_id = new_id(), new_id(), new_id()
    with source.connect() as cli:
        dc.setup(cli)
        succeeded(cli, dc.create_volume(cli, img, vol, fmt=RAW, size=MiB))
        write_halting_boot_sector(dc.prepare(cli, img, vol))
        xml = engine_vm_xml(
            name="unprepared", vm_id=vm_id, dc=dc, img=img, vol=vol, kind=accelerator.domain_type
        )
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
        wait_for(lambda: status_of(source, vm_id) == "Up", 60, "the guest Up")
        assert cli.VM.migrate(vmID=vm_id, params=engine_migration_params(destination, vm_id))
        status = wait_for(
            lambda: (s := cli.VM.getMigrationStatus(vmID=vm_id))["status"]["code"] != 0 and s,
            60,
            "the destination to refuse",
        )
        assert status["status"]["code"] == CREATE_ERROR, status  # what migrationCreate said
        assert status["progress"] == 0
        assert status_of(source, vm_id) == "Up"
        assert domain_state(source, vm_id) == libvirt.VIR_DOMAIN_RUNNING
        assert vm_id not in vm_statuses(destination)
        assert domain_state(destination, vm_id) is None
        assert cli.VM.destroy(vmID=vm_id) is True


def dirtying_guest(host: TestHost, directory: Path, domain_type: str) -> str:
    """Start a 64 MiB guest that keeps 512 KiB of its RAM dirty (DIRTYING_SECTOR)."""
    base = make_boot_base(directory, DIRTYING_SECTOR, "dirtying")
    vm_id = str(uuid.uuid4())
    disk = make_overlay(base, directory / f"dirtying-{vm_id[:8]}.qcow2")
    xml = domain_xml(
        name="dirtying", uuid=vm_id, disk=disk, domain_type=domain_type, ovirt_metadata=True
    )
    with host.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
    wait_for(lambda: status_of(host, vm_id) == "Up", 60, "the dirtying guest Up")
    # Up comes with QEMU's start; the firmware runs for seconds before the boot sector.
    wait_for(lambda: dirtied_word(host, vm_id) != 0, 60, "the guest writing its memory")
    return vm_id


def dirtied_word(host: TestHost, vm_id: str) -> int:
    """The first word the dirtying loop writes (its pass count, 0 before it starts)."""
    conn = libvirt.open(host.libvirt_uri)
    try:
        domain = conn.lookupByUUIDString(vm_id)
        return int.from_bytes(domain.memoryPeek(0x10000, 2, libvirt.VIR_MEMORY_PHYSICAL), "little")
    finally:
        conn.close()


def test_a_guest_that_dirties_memory_converges_only_through_the_schedule(
    hosts: tuple[TestHost, TestHost], tmp_path: Path, accelerator: Any
) -> None:
    """At 1 MiB/s, 512 KiB always dirty needs ~0.5 s of downtime: 30 ms never does."""
    source, destination = hosts
    vm_id = dirtying_guest(source, tmp_path, accelerator.domain_type)
    abort = {"name": "abort", "params": []}
    flat = {
        "init": [{"name": "setDowntime", "params": ["30"]}],
        "stalling": [{"limit": 3, "action": abort}],
    }
    stepping = {
        "init": [{"name": "setDowntime", "params": ["30"]}],
        "stalling": [
            {"limit": 1, "action": {"name": "setDowntime", "params": ["200"]}},
            {"limit": 2, "action": {"name": "setDowntime", "params": ["1000"]}},
            {"limit": 3, "action": {"name": "setDowntime", "params": ["3000"]}},
            {"limit": -1, "action": abort},
        ],
    }
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    with source.connect() as watcher, source.connect() as cli:
        watcher.subscribe(EVENTS, events)
        watcher.Host.ping()

        def migrate(schedule: dict[str, Any]) -> dict[str, Any]:
            params = engine_migration_params(
                destination,
                vm_id,
                maxBandwidth=1,
                autoConverge="false",
                convergenceSchedule=schedule,
            )
            assert cli.VM.migrate(vmID=vm_id, params=params) is True
            return wait_for(
                lambda: (
                    (
                        (s := cli.VM.getMigrationStatus(vmID=vm_id))["status"]["code"] != 0
                        or (s["progress"] == 100 and status_of(source, vm_id) == "Down")
                    )
                    and s
                ),
                120,
                "the migration to end",
            )

        # Without a growing downtime the guest never converges: the schedule aborts it.
        failed = migrate(flat)
        assert failed["status"]["code"] != 0, failed
        wait_for(lambda: status_of(source, vm_id) == "Up", 30, "the source VM Up again")
        wait_for(lambda: vm_id not in vm_statuses(destination), 30, "nothing on the destination")
        # Stepped up by the schedule, the same guest moves.
        while not events.empty():
            events.get_nowait()
        done = migrate(stepping)
        assert done["status"]["code"] == 0, done
        assert done["progress"] == 100
        wait_for(lambda: status_of(destination, vm_id) == "Up", 30, "the guest Up there")
        assert domain_state(destination, vm_id) == libvirt.VIR_DOMAIN_RUNNING
        # The events showed it going: progress reports, then 100.
        reports = []
        while not events.empty():
            name, params = events.get_nowait()
            if name == f"|virt|VM_migration_status|{vm_id}":
                reports.append(params[vm_id]["progress"])
        assert len(reports) >= 3, reports
        assert reports[-1] == 100, reports
        assert reports[:-1] == sorted(reports[:-1]), reports
        assert isinstance(done["downtime"], int), done
        assert cli.VM.destroy(vmID=vm_id) is True
    with destination.connect() as there:
        assert there.VM.destroy(vmID=vm_id) is True


# -- a container VM does not migrate --------------------------------------------------------


@pytest.fixture(scope="module")
def container_host(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path
) -> Iterator[tuple[Any, Any]]:
    """A private dockerd and an in-process host that runs container VMs on it."""
    from harness.dockerd import NETWORK, PrivateDockerd  # noqa: PLC0415 - docker is optional
    from harness.hosts import VM_TEST_SETTINGS, embedded_host  # noqa: PLC0415

    engine = PrivateDockerd()
    try:
        engine.start().prepare()
        with embedded_host(
            tmp_path_factory,
            embed_root,
            docker_socket=engine.socket,
            container_network=NETWORK,
            **VM_TEST_SETTINGS,
        ) as host:
            yield host, engine
    finally:
        engine.close()


def test_a_container_vm_answers_75_to_every_migration_verb(
    container_host: tuple[Any, Any],
) -> None:
    from harness.dockerd import container_xml  # noqa: PLC0415 - docker is optional

    host, _engine = container_host
    vm_id = str(uuid.uuid4())
    cli: Client
    with host.client() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": container_xml(vm_id)})
        wait_for(
            lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 60, "the container VM Up"
        )
        params = {
            "vmId": vm_id,
            "src": "192.0.2.1",
            "dst": "192.0.2.7:54321",
            "method": "online",
            "tunneled": "false",
            "abortOnError": "true",
            "maxBandwidth": 500,
            "incomingLimit": 2,
            "outgoingLimit": 2,
        }
        for name, verb in (
            ("migrate", lambda: cli.VM.migrate(vmID=vm_id, params=params)),
            ("migrateCancel", lambda: cli.VM.migrateCancel(vmID=vm_id)),
            ("getMigrationStatus", lambda: cli.VM.getMigrationStatus(vmID=vm_id)),
        ):
            with pytest.raises(ServerError) as refused:
                verb()
            assert refused.value.code == UNSUPPORTED, name
            assert "docker" in refused.value.message, name
        [stats] = cli.VM.getStats(vmID=vm_id)
        assert stats["status"] == "Up"
        assert cli.VM.destroy(vmID=vm_id) is True
