"""Actors killed at random across the tree never bring the root down.

A bounded drill: one actor at a time, picked at random among every actor of the tree
but the root (branch supervisors, workers, VMs, the API's front), is sent `Kill`,
as fast as the tree reports each death. Branch restarts count against each branch's
own budget at the root (`hostvisor.supervision.spec.ROOT_FLAGS`), so however the kills
fall the agent keeps running; at the end the whole tree is back, every guest is listed
with its true status and answers its verbs.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from supervision.test_branch_recovery import all_vm_stats

from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.actors.actor import Kill
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config
from hostvisor.supervision.registry import ROOT, Registry

ROUNDS = 150
SEED = 20261206


def alive(registry: Registry, path: str) -> bool:
    ref = registry.get(path)
    return ref is not None and ref.is_alive()


@pytest.mark.libvirt
def test_random_kills_across_branches_do_not_bring_the_root_down(tmp_path: Path):
    vm_ids = [str(uuid.uuid4()) for _ in range(4)]
    paused = vm_ids[1]
    domains = [
        td_domain_xml(name=f"kill-{i}", vm_id=vm_id, paused=vm_id == paused)
        for i, vm_id in enumerate(vm_ids)
    ]
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=write_test_node(tmp_path / "node.xml", domains),
        management_port=0,
        vm_powering_up_seconds=0,
        vm_sample_interval=0.5,
    )
    expected = {vm_id: "Paused" if vm_id == paused else "Up" for vm_id in vm_ids}
    rng = random.Random(SEED)  # noqa: S311 - a reproducible drill, not a secret
    with EmbeddedHost(config) as host:
        registry = host.registry
        with host.client(timeout=30) as cli:
            assert all_vm_stats(cli) == expected
        tree = sorted(path for path in registry.paths() if path != ROOT)
        killed: dict[str, int] = {}

        for _ in range(ROUNDS):
            assert host.runner.failed() is None
            candidates = [path for path in registry.paths() if path != ROOT]
            if not candidates:
                break  # the tree is gone: the assertion below says why
            path = rng.choice(candidates)
            ref = registry.get(path)
            if ref is None or not ref.is_alive():
                continue
            ref.tell(Kill("drill"))
            killed[path] = killed.get(path, 0) + 1
            wait_for(lambda ref=ref: not ref.is_alive(), 10, f"{path} to die", 0.002)

        assert host.runner.failed() is None
        # Branches were hit, directly and by escalation: more than the old root's 3.
        branches = [p for p in killed if "/" not in p]
        assert sum(killed[p] for p in branches) > 3
        # Given-up children come back after their backoff; the whole tree runs again.
        wait_for(
            lambda: all(alive(registry, path) for path in tree),
            120,
            "every actor of the tree back",
            0.1,
        )
        assert host.runner.failed() is None
        with host.client(timeout=30) as cli:
            wait_for(lambda: all_vm_stats(cli) == expected, 30, "every guest listed as it is")
            victim = vm_ids[0]
            cli.VM.pause(vmID=victim)
            wait_for(lambda: all_vm_stats(cli)[victim] == "Paused", 30, "the victim paused")
            assert cli.VM.getStats(vmID=paused)[0]["status"] == "Paused"
