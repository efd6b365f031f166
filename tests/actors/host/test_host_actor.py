"""The host actor answers getStats at once, whatever libvirt and the network configurator do.

A HostActor on libvirt's test driver and this machine; the network configurator
is stood in for by plain functions the test can hold (an Event), as the tree's
asks to netconf can hang up to their timeout. Time is a ManualClock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pykka
import pytest

from harness.waiting import wait_for
from hostvisor.actors.actor import Link, call
from hostvisor.actors.clock import ManualClock
from hostvisor.actors.host.actor import STATS_DEADLINE, HostActor, HostNetwork
from hostvisor.actors.runtime import Runtime

pytestmark = pytest.mark.libvirt


@dataclass
class Gates:
    """What the fake collaborators wait on, and how often they were called."""

    libvirt: threading.Event = field(default_factory=threading.Event)
    dirty: threading.Event = field(default_factory=threading.Event)
    dirty_value: bool = False
    vm_count: int = 0
    caps_reads: int = 0
    dirty_reads: int = 0

    def __post_init__(self) -> None:
        self.libvirt.set()
        self.dirty.set()


@pytest.fixture
def gates() -> Iterator[Gates]:
    opened = Gates()
    yield opened
    opened.libvirt.set()  # let workers held by a test finish
    opened.dirty.set()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=500.0)


@pytest.fixture
def host(tmp_path: Path, gates: Gates, clock: ManualClock) -> Iterator[pykka.ActorRef[Any]]:
    conn = libvirt.open("test:///default")

    def connection() -> Any:
        gates.caps_reads += 1
        gates.libvirt.wait(30)
        return conn

    def dirty() -> bool:
        gates.dirty_reads += 1
        gates.dirty.wait(30)
        return gates.dirty_value

    network = HostNetwork(
        caps=lambda: {"networks": {}, "bridges": {}, "nics": {}, "netConfigDirty": "False"},
        stats=lambda: {"network": {}, "rxDropped": "0", "txDropped": "0"},
        dirty=dirty,
    )
    link = Link(path="hosts/host", runtime=Runtime.make(clock))
    ref = HostActor.spawn(
        link,
        state_dir=tmp_path,
        connection=connection,
        sample_interval=15,
        vm_counts=lambda: {"vmCount": gates.vm_count},
        network=network,
    )
    link.started.get(timeout=10)
    yield ref
    ref.stop()
    conn.close()


def _stats(ref: pykka.ActorRef[Any]) -> dict[str, Any]:
    answer: dict[str, Any] = call(ref, "stats").get(timeout=10)
    return answer


def test_stats_report_fresh_vm_counts_dirtiness_and_uptime(host, gates: Gates, clock):
    assert (_stats(host)["vmCount"], _stats(host)["netConfigDirty"]) == (0, "False")
    gates.vm_count, gates.dirty_value = 3, True
    clock.advance(42)
    stats = _stats(host)
    assert (stats["vmCount"], stats["netConfigDirty"]) == (3, "True")
    assert stats["elapsedTime"] == "42.00"
    assert stats["dateTime"].endswith(" GMT")
    assert stats["cpuIdle"]  # the sample's figures are there


def test_stats_answer_while_capabilities_are_stuck_in_libvirt(host, gates: Gates):
    gates.libvirt.clear()
    first = call(host, "capabilities")
    wait_for(lambda: gates.caps_reads == 1, 5, "the capabilities read to start")
    second = call(host, "capabilities")  # comes while a read runs: waits for the next

    for _ in range(20):
        assert _stats(host)["netConfigDirty"] == "False"
    with pytest.raises(pykka.Timeout):
        first.get(timeout=0.1)

    gates.libvirt.set()
    caps = first.get(timeout=30)
    assert caps["uuid"] == call(host, "facts").get(timeout=5).host_uuid
    assert second.get(timeout=30)["uuid"] == caps["uuid"]
    assert gates.caps_reads == 2  # one read per wave of asks, never one older than its ask


def test_stats_fall_back_to_what_is_known_when_the_configurator_hangs(host, gates, clock):
    gates.dirty_value = True
    assert _stats(host)["netConfigDirty"] == "True"
    gates.dirty.clear()
    gates.dirty_value = False
    reads = gates.dirty_reads
    late, later = call(host, "stats"), call(host, "stats")
    with pytest.raises(pykka.Timeout):
        late.get(timeout=0.2)
    assert gates.dirty_reads == reads + 1  # one read holds one worker, however many ask

    clock.advance(STATS_DEADLINE)

    assert late.get(timeout=5)["netConfigDirty"] == "True"  # the last known
    assert later.get(timeout=5)["netConfigDirty"] == "True"
    gates.dirty.set()
    wait_for(lambda: _stats(host)["netConfigDirty"] == "False", 10, "the fresh value")


def test_hardware_info_is_read_off_the_actor(host):
    info = call(host, "hardware_info").get(timeout=10)
    assert all(type(value) is str for value in info.values())
