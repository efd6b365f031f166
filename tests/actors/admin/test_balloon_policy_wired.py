"""MOM's policy moves a real guest's balloon through the host's own tree.

A whole embedded host (`qemu:///embed`) runs a tiny Linux guest (TCG; its
initramfs loads virtio_balloon) created by VM.create, with the Engine's
`minGuaranteedMemoryMb` in its metadata. Nothing stands in for the VM side: the
memory actor's targets go through `admin.tell_balloon` (what `supervision/tree.py`
passes) as a tell to the VM's actor, which has libvirt set the live memory.

- With the tree exactly as built, the policy gives a guest below its guarantee
  its guaranteed memory back (MOM does that whatever the pressure).
- Then the memory child is replaced, in the same `admin` supervisor, by one whose
  host reading is simulated (the pressure source of tests/actors/admin): under
  critical pressure the balloon shrinks round after round, never below the
  guarantee, with `VM.getStats` balloonInfo and libvirt's own view following.
- `Host.getStats` reports momStatus "active" while the memory actor runs and
  "inactive" while it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from actors.vm.conftest import _cache_dir, build_tiny_guest  # the VM tests' cached guest
from actors.vm.test_vm_balloon import GUARANTEED_MIB, MEMORY_MIB, balloon_guest_xml

from harness.hosts import VM_TEST_SETTINGS, client_destroying_vms, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.admin.addresses import ADMIN, MEMORY, MEMORY_ID
from hostvisor.actors.admin.memory import MemoryActor, PolicyRound
from hostvisor.actors.admin.memread import GuestReader, HostReading
from hostvisor.actors.admin.proxy import MemoryProxy
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.branches import admin
from hostvisor.supervision.spec import ChildSpec
from hostvisor.supervision.supervisor import DeleteChild, StartChild, TerminateChild

pytestmark = [pytest.mark.libvirt, pytest.mark.kvm, pytest.mark.slow]

MIB = 1024  # KiB
VM_ID = "5b0d6a52-4c3e-4a8e-9d6e-0b1a11000002"


class Pressure:
    """The host's memory as the test says: 64 GiB, a chosen free fraction."""

    total = 64 * 1024 * MIB

    def __init__(self) -> None:
        self.free_fraction = 0.05

    def __call__(self) -> HostReading:
        return HostReading(mem_available=self.total, mem_free=int(self.total * self.free_fraction))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    settings = {**VM_TEST_SETTINGS, "host_sample_interval": 0.5}
    with embedded_host(tmp_path_factory, embed_root, **settings) as running:
        yield running


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with client_destroying_vms(host) as client:  # the embed root is shared by every test
        yield client


def _balloon_info(cli: Client) -> dict[str, Any]:
    info: dict[str, Any] = cli.VM.getStats(vmID=VM_ID)[0].get("balloonInfo", {})
    return info


def _actual(host: EmbeddedHost) -> int:
    actual: int = host.tree.connection().lookupByUUIDString(VM_ID).memoryStats()["actual"]
    return actual


def _near(host: EmbeddedHost, target: int) -> bool:
    """Whether QEMU's balloon and libvirt's current memory (dominfo) are at `target`."""
    domain = host.tree.connection().lookupByUUIDString(VM_ID)
    actual, current = domain.memoryStats()["actual"], domain.info()[2]
    return abs(actual - target) <= 4 * MIB and abs(current - target) <= 4 * MIB


def _round(memory: pykka.ActorRef[Any]) -> Any:
    """Run one policy round on `memory`; return what it decided."""
    proxy = MemoryProxy(memory)
    before = proxy.rounds().get(timeout=10)
    memory.tell(PolicyRound())
    wait_for(lambda: proxy.rounds().get(timeout=10) > before, 30, "a policy round")
    report = proxy.last_round().get(timeout=10)
    assert report is not None
    return report.decision


def _mom_status(cli: Client) -> str:
    status: str = cli.Host.getStats()["momStatus"]
    return status


def _ask(supervisor: pykka.ActorRef[Any], message: Any) -> Any:
    return supervisor.ask(message, block=False).get(timeout=30)


def test_the_policy_sets_a_real_guests_balloon_through_the_tree(host: EmbeddedHost, cli: Client):
    guest = build_tiny_guest(_cache_dir())
    xml = balloon_guest_xml(
        VM_ID,
        kernel=guest.kernel,
        initrd=guest.initrd,
        domain_type="qemu",  # TCG: this host's nested KVM hangs Linux guests (ENVIRONMENT.md)
        name="policy",
    )
    cli.VM.create(vmID=VM_ID, vmParams={"xml": xml})
    up = wait_for(
        lambda: (stats := cli.VM.getStats(vmID=VM_ID)[0])["status"] != "WaitForLaunch" and stats,
        60,
        "the launch",
    )
    assert up["status"] in ("Up", "Powering up"), up
    wait_for(
        lambda: "unused" in host.tree.connection().lookupByUUIDString(VM_ID).memoryStats(),
        120,
        "the guest's balloon driver",
    )
    wait_for(lambda: _mom_status(cli) == "active", 30, "momStatus active")
    guaranteed = GUARANTEED_MIB * MIB

    # 1. the tree as built: below its guarantee, the policy gives the guest it back
    below = 128 * MIB
    assert cli.VM.setBalloonTarget(vmID=VM_ID, target=below)["code"] == 0
    wait_for(lambda: _near(host, below), 60, "the balloon to shrink below the guarantee")
    decision = _round(host.registry.lookup(MEMORY))
    assert decision.balloons[VM_ID] == guaranteed
    wait_for(lambda: _near(host, guaranteed), 60, "the policy's target reached in the guest")
    wait_for(
        lambda: _balloon_info(cli).get("balloon_target") == str(guaranteed),
        30,
        "VM.getStats' balloon_target to follow the policy",
    )

    # 2. the same branch, its memory child reading a simulated host under pressure
    supervisor = host.registry.lookup(ADMIN)
    _ask(supervisor, TerminateChild(MEMORY_ID))
    wait_for(lambda: _mom_status(cli) == "inactive", 30, "momStatus inactive")
    _ask(supervisor, DeleteChild(MEMORY_ID))
    ctx, pressure = host.tree.ctx, Pressure()
    simulated = ChildSpec(
        id=MEMORY_ID,
        start=lambda link: MemoryActor.spawn(
            link,
            read_guests=GuestReader(ctx.connection),
            set_balloon=admin.tell_balloon(ctx),
            interval=0,
            read_host=pressure,
            drive_ksm=False,
        ),
    )
    _ask(supervisor, StartChild(simulated))
    wait_for(lambda: _mom_status(cli) == "active", 30, "momStatus active again")
    memory = host.registry.lookup(MEMORY)
    cli.Host.setMOMPolicyParameters(key_value_store={"balloonEnabled": True})  # (a round)

    assert cli.VM.setBalloonTarget(vmID=VM_ID, target=MEMORY_MIB * MIB)["code"] == 0
    wait_for(lambda: _near(host, MEMORY_MIB * MIB), 60, "the balloon to deflate fully")
    sizes = [_actual(host)]
    for _ in range(3):  # critical pressure: 5 % a round
        target = _round(memory).balloons[VM_ID]
        assert guaranteed <= target < sizes[-1]
        wait_for(lambda target=target: _near(host, target), 60, f"the balloon at {target} KiB")
        wait_for(
            lambda target=target: _balloon_info(cli).get("balloon_target") == str(target),
            30,
            f"balloon_target {target}",
        )
        sizes.append(_actual(host))
    info = wait_for(
        lambda: (
            (info := _balloon_info(cli))
            and abs(int(info["balloon_cur"]) - sizes[-1]) <= 4 * MIB
            and info
        ),
        30,
        "VM.getStats' balloon_cur to follow",
    )
    assert info["balloon_max"] == str(MEMORY_MIB * MIB)


def test_a_target_for_a_vm_with_no_actor_is_dropped(host: EmbeddedHost):
    tell = admin.tell_balloon(host.tree.ctx)
    tell("5b0d6a52-4c3e-4a8e-9d6e-0b1a1100dead", 64 * MIB)  # no actor: nothing, no error
