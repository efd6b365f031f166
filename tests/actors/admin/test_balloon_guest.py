"""MOM's policy on a real guest's balloon, under a simulated pressure source.

A tiny Linux guest (TCG; its initramfs loads virtio_balloon) runs on a private
libvirtd with the Engine's `minGuaranteedMemoryMb` in its metadata. The memory
actor reads its real balloon through one bulk libvirt call (`GuestReader`), the
host's pressure is the test's, and the balloon targets the actor decides are
applied as the VM's owner would apply them (a live `setMemory`): the test stands
in for that seam (the VM actor has no balloon call yet). The guest's own
balloon follows, round after round, and never goes below its guarantee.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from actors.vm.conftest import (
    _cache_dir,
    build_tiny_guest,  # the VM tests' cached guest
)

from harness.waiting import wait_for
from hostvisor.actors.actor import Link
from hostvisor.actors.admin.addresses import MEMORY
from hostvisor.actors.admin.memory import MemoryActor, PolicyRound
from hostvisor.actors.admin.memread import GuestReader, HostReading
from hostvisor.actors.admin.proxy import MemoryProxy
from hostvisor.actors.runtime import Runtime

pytestmark = [pytest.mark.libvirt, pytest.mark.kvm, pytest.mark.slow]

MIB = 1024  # KiB
MEMORY_MIB = 256
GUARANTEED_MIB = 160


def _guest_xml(vm_id: str) -> str:
    guest = build_tiny_guest(_cache_dir())
    return f"""<domain type='qemu'>
  <name>hv-balloon-{vm_id[:8]}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
    <ovirt-vm:minGuaranteedMemoryMb type="int">{GUARANTEED_MIB}</ovirt-vm:minGuaranteedMemoryMb>
  </ovirt-vm:vm></metadata>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>"""


@pytest.fixture(scope="module")
def guest(system_libvirt) -> Iterator[Any]:
    domain = system_libvirt.conn.defineXML(_guest_xml(str(uuid.uuid4())))
    domain.create()
    try:
        yield domain
    finally:
        if domain.isActive():
            domain.destroy()
        domain.undefine()


class Pressure:
    """The host's memory as the test says: 64 GiB, a chosen free fraction."""

    total = 64 * 1024 * MIB

    def __init__(self) -> None:
        self.free_fraction = 0.05

    def __call__(self) -> HostReading:
        return HostReading(mem_available=self.total, mem_free=int(self.total * self.free_fraction))


@pytest.fixture
def policy(
    system_libvirt, ksm_restored
) -> Iterator[tuple[pykka.ActorRef[Any], Pressure, list[tuple[str, int]]]]:
    pressure = Pressure()
    decided: list[tuple[str, int]] = []
    link = Link(path=MEMORY, runtime=Runtime.make())
    ref = MemoryActor.spawn(
        link,
        read_guests=GuestReader(lambda: system_libvirt.conn),
        set_balloon=lambda vm_id, target: decided.append((vm_id, target)),
        interval=0,
        read_host=pressure,  # the real KSM follows the pressure too; restored afterwards
    )
    link.started.get(timeout=10)
    yield ref, pressure, decided
    ref.stop()


def _balloon(reader: GuestReader, vm_id: str) -> Any:
    return next(reading for reading in reader() if reading.vm_id == vm_id)


def _round(ref: pykka.ActorRef[Any]) -> None:
    proxy = MemoryProxy(ref)
    before = proxy.rounds().get(timeout=10)
    ref.tell(PolicyRound())
    wait_for(lambda: proxy.rounds().get(timeout=10) > before, 30, "a policy round")


def test_a_real_balloon_shrinks_under_pressure_to_its_floor_and_grows_back(
    system_libvirt, guest, policy
):
    import libvirt  # noqa: PLC0415

    ref, pressure, decided = policy
    vm_id = guest.UUIDString()
    reader = GuestReader(lambda: system_libvirt.conn)
    booted = wait_for(
        lambda: (reading := _balloon(reader, vm_id)).mem_unused is not None and reading,
        120,
        "the guest's balloon driver to report its unused memory",
    )
    assert booted.balloon_min == GUARANTEED_MIB * MIB  # read from the ovirt-vm metadata
    assert booted.balloon_cur == booted.balloon_max == MEMORY_MIB * MIB
    assert MemoryProxy(ref).set_parameters({"balloonEnabled": True}).get(timeout=10)

    sizes = [booted.balloon_cur]
    for _ in range(12):  # critical pressure: 5 % a round, down to what the guest needs
        decided.clear()
        _round(ref)
        targets = dict(decided)
        if vm_id not in targets:
            break
        target = targets[vm_id]
        assert target >= GUARANTEED_MIB * MIB
        guest.setMemoryFlags(target, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # the VM owner's part
        wait_for(
            lambda target=target: abs(_balloon(reader, vm_id).balloon_cur - target) <= 4 * MIB,
            60,
            f"the guest's balloon to reach {target} KiB",
        )
        sizes.append(_balloon(reader, vm_id).balloon_cur)
    assert sizes[1] < sizes[0]  # it really shrank
    assert all(later <= earlier for earlier, later in itertools.pairwise(sizes))
    assert min(sizes) >= GUARANTEED_MIB * MIB - 4 * MIB  # the guarantee held
    shrunk = sizes[-1]

    pressure.free_fraction = 0.9  # relief: balloons deflate, 5 % a round at least
    for _ in range(10):
        _round(ref)  # the window fills with the relief
    decided.clear()
    _round(ref)
    grow = dict(decided)[vm_id]
    assert grow > shrunk
    guest.setMemoryFlags(grow, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    wait_for(lambda: _balloon(reader, vm_id).balloon_cur > shrunk, 60, "the balloon to grow back")
