"""Recovery lives in the tree: a branch that escalates comes back managing every guest.

One VM's actor is killed again and again until its dynamic supervisor (`vms/guests`)
spends its restart budget and escalates. The `vms` branch then restarts it — empty,
OTP's convention — and the recoverer after it, which re-reads libvirt: every running
domain has an actor again, is listed with its true status, and its verbs work. The
agent never restarted and libvirt's domains were never touched.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.actors.actor import Kill
from hostvisor.actors.vm.addresses import VM_GUESTS, VMS, vm_path
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config
from hostvisor.supervision.registry import Registry


def kill_until_escalated(registry: Registry, path: str, supervisor: str) -> int:
    """Kill the actor at `path` each time it is back, until `supervisor` was restarted.

    Returns how many kills it took.
    """
    kills = 0
    while registry.status(supervisor).restarts.count == 0:
        ref = wait_for(
            lambda: registry.get(path) or registry.status(supervisor).restarts.count,
            30,
            f"{path} to be back",
        )
        if not hasattr(ref, "tell"):
            break  # the supervisor was restarted meanwhile
        ref.tell(Kill("drill"))
        kills += 1
        wait_for(
            lambda ref=ref: registry.get(path) is not ref,
            30,
            f"{path} to die",
            0.005,
        )
    return kills


def all_vm_stats(cli: Any) -> dict[str, str]:
    return {vm["vmId"]: vm["status"] for vm in cli.Host.getAllVmStats()}


@pytest.mark.libvirt
def test_a_vm_crash_loop_escalates_and_the_branch_comes_back_with_every_guest(tmp_path: Path):
    vm_ids = [str(uuid.uuid4()) for _ in range(4)]
    paused = vm_ids[1]
    domains = [
        td_domain_xml(name=f"esc-{i}", vm_id=vm_id, paused=vm_id == paused)
        for i, vm_id in enumerate(vm_ids)
    ]
    uri = write_test_node(tmp_path / "node.xml", domains)
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=uri,
        management_port=0,
        vm_powering_up_seconds=0,
        vm_sample_interval=0.5,
    )
    expected = {vm_id: "Paused" if vm_id == paused else "Up" for vm_id in vm_ids}
    with EmbeddedHost(config) as host, host.client(timeout=30) as cli:
        assert all_vm_stats(cli) == expected
        registry = host.registry
        victim = vm_ids[0]

        kills = kill_until_escalated(registry, vm_path(victim), VM_GUESTS)

        assert kills > 1  # restarted in place first, within the budget
        assert registry.status(VM_GUESTS).restarts.count == 1
        assert registry.status(VMS).restarts.count == 0  # the branch held; the root never saw it
        wait_for(lambda: host.gate.reports.get(VMS) == 2, 30, "the recoverer's second report")
        # Every guest is managed again, with its true status, and answers its verbs.
        assert wait_for(lambda: all_vm_stats(cli) == expected, 30, "every VM listed again")
        assert len(host.tree.vms.refs()) == len(vm_ids)
        cli.VM.pause(vmID=victim)
        wait_for(lambda: all_vm_stats(cli)[victim] == "Paused", 30, "the victim paused")
        cli.VM.cont(vmID=victim)
        wait_for(lambda: all_vm_stats(cli)[victim] == "Up", 30, "the victim running")
        assert cli.VM.getStats(vmID=paused)[0]["status"] == "Paused"
