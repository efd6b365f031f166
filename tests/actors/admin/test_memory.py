"""The memory actor drives this kernel's KSM and hands balloon targets to the VM seam.

The host's memory pressure is simulated (a reading function the test holds);
KSM is the real /sys/kernel/mm/ksm, read back after each write, and every knob a
test changes is restored. The verbs are called on a whole embedded host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.hosts import embedded_host
from harness.waiting import wait_for
from hostvisor.actors.actor import Link
from hostvisor.actors.admin import ksm
from hostvisor.actors.admin.addresses import MEMORY
from hostvisor.actors.admin.memory import MemoryActor, PolicyRound
from hostvisor.actors.admin.memread import GuestReading, HostReading, guaranteed_kib, read_host
from hostvisor.actors.admin.mompolicy import PolicyParameters
from hostvisor.actors.admin.proxy import MemoryProxy
from hostvisor.actors.clock import ManualClock
from hostvisor.actors.runtime import Runtime
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.branches import admin as memory_branch

KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")
GIB = 1024 * 1024


def sysfs(knob: str) -> int:
    return int((ksm.KSM_ROOT / knob).read_text())


# -- the actor, with a simulated pressure source ----------------------------------------------


class Pressure:
    """The host's memory as the test wants it: the real total, a chosen free fraction."""

    def __init__(self) -> None:
        self.total = read_host().mem_available
        self.free_fraction = 0.8

    def __call__(self) -> HostReading:
        return HostReading(mem_available=self.total, mem_free=int(self.total * self.free_fraction))


@pytest.fixture
def memory_actor() -> Iterator[tuple[pykka.ActorRef[Any], Pressure, list[tuple[str, int]]]]:
    pressure = Pressure()
    ballooned: list[tuple[str, int]] = []
    guests = (
        GuestReading(
            vm_id="roomy",
            balloon_cur=4 * GIB,
            balloon_min=GIB,
            balloon_max=4 * GIB,
            mem_unused=2 * GIB,
        ),
        GuestReading(
            vm_id="guaranteed", balloon_cur=2 * GIB, balloon_min=3 * GIB, balloon_max=4 * GIB
        ),
    )
    link = Link(path=MEMORY, runtime=Runtime.make(ManualClock(start=100.0)))
    ref = MemoryActor.spawn(
        link,
        read_guests=lambda: guests,
        set_balloon=lambda vm_id, target: ballooned.append((vm_id, target)),
        interval=0,
        read_host=pressure,
    )
    link.started.get(timeout=10)
    yield ref, pressure, ballooned
    ref.stop()


def _round(ref: pykka.ActorRef[Any]) -> None:
    proxy = MemoryProxy(ref)
    before = proxy.rounds().get(timeout=10)
    ref.tell(PolicyRound())
    wait_for(lambda: proxy.rounds().get(timeout=10) > before, 10, "a policy round")


def test_pressure_starts_ksm_and_shrinks_balloons_and_relief_stops_it(memory_actor, ksm_restored):
    ref, pressure, ballooned = memory_actor
    proxy = MemoryProxy(ref)
    ksm.write({"run": 0, "pages_to_scan": 100})
    pressure.free_fraction = 0.05  # simulated pressure: 5 % free (critical)
    assert proxy.set_parameters({"balloonEnabled": True}).get(timeout=10) is True  # a round
    wait_for(lambda: proxy.rounds().get(timeout=10) >= 1, 10, "the first round")
    report = proxy.last_round().get(timeout=10)
    assert report is not None
    assert report.ksm_error is None
    expected_sleep = max(10, 10 * 16 * GIB // pressure.total)
    assert (sysfs("run"), sysfs("pages_to_scan"), sysfs("sleep_millisecs")) == (
        1,
        400,
        expected_sleep,
    )
    # critical pressure: margin 0, floor = used (2 GiB); the 5 % step wins;
    # the guest below its guaranteed memory gets it back
    assert dict(ballooned) == {"roomy": int(4 * GIB * 0.95), "guaranteed": 3 * GIB}

    for _ in range(3):
        _round(ref)
    assert sysfs("pages_to_scan") == 1250  # boosted by 300 a round, capped

    pressure.free_fraction = 0.9
    ballooned.clear()
    for _ in range(10):  # MOM's window: ten samples until the relief shows fully
        _round(ref)
    assert sysfs("run") == 0  # KSM stopped again
    assert "roomy" not in dict(ballooned)  # at its size: nothing to give back


def test_balloons_stay_while_ballooning_is_disabled(memory_actor, ksm_restored):
    ref, pressure, ballooned = memory_actor
    pressure.free_fraction = 0.05
    for _ in range(10):
        _round(ref)
    assert MemoryProxy(ref).parameters().get(timeout=10) == PolicyParameters()
    assert [vm_id for vm_id, _ in ballooned] == ["guaranteed"] * 10  # only the guaranteed floor


def test_a_host_that_does_not_drive_ksm_decides_but_writes_nothing(ksm_restored):
    pressure = Pressure()
    pressure.free_fraction = 0.05
    link = Link(path=MEMORY, runtime=Runtime.make(ManualClock(start=100.0)))
    ref = MemoryActor.spawn(link, interval=0, read_host=pressure, drive_ksm=False)
    link.started.get(timeout=10)
    try:
        before = {knob: sysfs(knob) for knob in ksm_restored}
        _round(ref)
        report = MemoryProxy(ref).last_round().get(timeout=10)
        assert report is not None
        assert report.decision.ksm["run"] == 1  # decided...
        assert {knob: sysfs(knob) for knob in ksm_restored} == before  # ...not written
    finally:
        ref.stop()


def test_the_guaranteed_memory_is_read_from_the_ovirt_vm_metadata():
    metadata = (
        '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">'
        '<ovirt-vm:minGuaranteedMemoryMb type="int">512</ovirt-vm:minGuaranteedMemoryMb>'
        "</ovirt-vm:vm>"
    )
    assert guaranteed_kib(metadata) == 512 * 1024
    # what libvirt's metadata() returns: the element without its namespace
    assert (
        guaranteed_kib('<vm><minGuaranteedMemoryMb type="int">64</minGuaranteedMemoryMb></vm>')
        == 64 * 1024
    )
    assert guaranteed_kib('<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0"/>') == 0
    assert guaranteed_kib("not xml") == 0


# -- the verbs on a whole host ----------------------------------------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, host_sample_interval=0.5) as running:
        yield running


def _parameters(host: EmbeddedHost) -> PolicyParameters:
    return MemoryProxy(host.registry.lookup(MEMORY)).parameters().get(timeout=10)


@pytest.mark.libvirt
def test_mom_status_is_active_while_the_policy_runs(host: EmbeddedHost):
    assert memory_branch.mom_status(host.tree.ctx)() == "active"


@pytest.mark.libvirt
def test_set_mom_policy_parameters_takes_the_engines_booleans(host: EmbeddedHost):
    with host.client() as cli:
        cli.Host.setMOMPolicyParameters(
            key_value_store={
                "balloonEnabled": True,
                "ksmEnabled": True,
                "ksmMergeAcrossNodes": True,
            }
        )
        assert _parameters(host) == PolicyParameters(balloon_enabled=True)
        cli.Host.setMOMPolicyParameters(key_value_store={"balloonEnabled": False})
    assert _parameters(host) == PolicyParameters()


@pytest.mark.libvirt
def test_set_mom_policy_parameters_refuses_bad_input_and_changes_nothing(host: EmbeddedHost):
    before = _parameters(host)
    bad = (
        ({"key_value_store": {"balloonEnabled": "yes"}}, 54),
        ({"key_value_store": {"noSuchVariable": True}}, 54),
        ({"key_value_store": {"balloonEnabled": True, "ksmEnabled": [1]}}, 54),
        ({"key_value_store": ["balloonEnabled"]}, -32602),
        ({"key_value_store": "balloonEnabled=1"}, -32602),
        ({}, -32602),
    )
    with host.client() as cli:
        for params, code in bad:
            with pytest.raises(ServerError) as raised:
                cli.call("Host.setMOMPolicyParameters", params)
            assert raised.value.code == code, params
    assert _parameters(host) == before


@pytest.mark.libvirt
def test_set_ksm_tune_writes_sysfs_and_reads_back(host: EmbeddedHost, ksm_restored):
    with host.client() as cli:
        cli.Host.setKsmTune(tuningParams={"pages_to_scan": 123, "sleep_millisecs": 33})
        assert (sysfs("pages_to_scan"), sysfs("sleep_millisecs")) == (123, 33)
        cli.Host.setKsmTune(tuningParams={"pages_to_scan": "77"})  # supervdsm's int(value)
        assert sysfs("pages_to_scan") == 77
        wait_for(lambda: cli.Host.getStats()["ksmPages"] == 77, 10, "getStats' ksmPages")


@pytest.mark.libvirt
def test_set_ksm_tune_refuses_bad_input_and_changes_nothing(host: EmbeddedHost, ksm_restored):
    before = {knob: sysfs(knob) for knob in KNOBS}
    bad = (
        ({"tuningParams": {"pages_to_scan": 50, "nonsense": 1}}, 71),
        ({"tuningParams": {"pages_to_scan": 50, "run": 7}}, 71),
        ({"tuningParams": {"sleep_millisecs": -5}}, 71),
        ({"tuningParams": {"pages_to_scan": "many"}}, 71),
        ({"tuningParams": {"run": True}}, 71),
        ({"tuningParams": [["run", 1]]}, -32602),
        ({}, -32602),
    )
    with host.client() as cli:
        for params, code in bad:
            with pytest.raises(ServerError) as raised:
                cli.call("Host.setKsmTune", params)
            assert raised.value.code == code, params
    assert {knob: sysfs(knob) for knob in KNOBS} == before
