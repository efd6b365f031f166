"""Recovery lives in the tree: a branch that escalates comes back managing every guest.

One VM's actor that crash-loops is only given up by its supervisor (its own budget;
tests/actors/vm/test_vm_crash_loop.py). So the `vms` branch is made to escalate the
way a real common-mode fault would: its guest supervisor is killed again and again
until the branch spends its budget and the root restarts it. Each time the guest
supervisor comes back empty, OTP's convention, and the recoverer after it re-reads
libvirt. Meanwhile a client polls `getAllVmStats`: every guest is listed in every
answer, with its true status; at the end every guest is managed again and its verbs
work. The agent never restarted and libvirt's domains were never touched.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, Self

import pytest

from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.actors.actor import Kill
from hostvisor.actors.vm.addresses import VM_GUESTS, VMS, vm_path
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config
from hostvisor.supervision.registry import Registry
from hostvisor.supervision.supervisor import SupervisorHandle


def given_up(registry: Registry, supervisor: str, child_id: str) -> bool:
    """Whether `supervisor` holds `child_id` given up (waiting out its backoff)."""
    handle = SupervisorHandle(registry.lookup(supervisor))
    return any(c.id == child_id and c.given_up for c in handle.which_children())


def kill_until_given_up(registry: Registry, path: str, supervisor: str) -> int:
    """Kill the actor at `path` each time it is back, until `supervisor` gives it up.

    Returns how many kills it took.
    """
    child_id = path.rsplit("/", 1)[-1]
    kills = 0
    while True:
        ref = wait_for(
            lambda: (
                ((r := registry.get(path)) is not None and r.is_alive() and r)
                or given_up(registry, supervisor, child_id)
            ),
            30,
            f"{path} to be back or given up",
        )
        if ref is True:
            return kills
        ref.tell(Kill("drill"))
        kills += 1
        wait_for(lambda ref=ref: not ref.is_alive(), 30, f"{path} to die", 0.005)


def kill_until_escalated(registry: Registry, path: str, supervisor: str) -> int:
    """Crash-loop the actor at `path` until given up, then make `supervisor` restart.

    A resource actor's crash loop is its own business (its supervisor gives it up),
    so the supervisor itself is then killed: its branch restarts it, empty, and the
    branch's recoverer re-adopts every resource. Returns how many kills the actor took.
    """
    kills = kill_until_given_up(registry, path, supervisor)
    restarts = registry.status(supervisor).restarts.count
    registry.lookup(supervisor).tell(Kill("drill"))
    wait_for(
        lambda: (
            registry.get(supervisor) is not None
            and registry.status(supervisor).restarts.count > restarts
        ),
        30,
        f"{supervisor} to be restarted",
    )
    return kills


def kill_until_branch_escalates(registry: Registry, supervisor: str, branch: str) -> int:
    """Kill the supervisor at `supervisor` each time it is back until `branch` restarts.

    Returns how many kills it took.
    """
    kills = 0
    while registry.status(branch).restarts.count == 0:
        ref = wait_for(
            lambda: (
                ((r := registry.get(supervisor)) is not None and r.is_alive() and r)
                or (registry.get(branch) is not None and registry.status(branch).restarts.count)
            ),
            30,
            f"{supervisor} to be back",
        )
        if not hasattr(ref, "tell"):
            break  # the branch was restarted meanwhile
        ref.tell(Kill("drill"))
        kills += 1
        wait_for(lambda ref=ref: not ref.is_alive(), 30, f"{supervisor} to die", 0.005)
        wait_for(lambda: registry.get(branch) is not None, 30, f"{branch} to be up")
    return kills


def all_vm_stats(cli: Any) -> dict[str, str]:
    return {vm["vmId"]: vm["status"] for vm in cli.Host.getAllVmStats()}


class Poller:
    """Polls `Host.getAllVmStats` on its own connection until stopped; keeps each answer."""

    def __init__(self, host: EmbeddedHost) -> None:
        self.host = host
        self.answers: list[dict[str, str]] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        with self.host.client(timeout=30) as cli:
            while not self.stop.is_set():
                try:
                    self.answers.append(all_vm_stats(cli))
                except Exception as error:  # noqa: BLE001 - kept for the test's assertion
                    self.errors.append(error)


@pytest.mark.libvirt
def test_the_vms_branch_escalates_and_comes_back_with_every_guest_listed_throughout(
    tmp_path: Path,
):
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

        with Poller(host) as poller:
            kills = kill_until_branch_escalates(registry, VM_GUESTS, VMS)
            wait_for(lambda: len(poller.answers) > 3, 30, "a few listings after the escalation")

        assert kills > 1  # the branch restarted its guest supervisor in place first
        assert registry.status(VMS).restarts.count == 1  # then the root restarted the branch
        assert host.runner.failed() is None
        # Every listing taken meanwhile showed every guest with its true status.
        assert poller.errors == []
        assert poller.answers
        assert [answer for answer in poller.answers if answer != expected] == []
        # Every guest is managed again, and answers its verbs.
        wait_for(lambda: len(host.tree.vms.refs()) == len(vm_ids), 30, "every VM adopted")
        assert all_vm_stats(cli) == expected
        victim = vm_ids[0]
        cli.VM.pause(vmID=victim)
        wait_for(lambda: all_vm_stats(cli)[victim] == "Paused", 30, "the victim paused")
        cli.VM.cont(vmID=victim)
        wait_for(lambda: all_vm_stats(cli)[victim] == "Up", 30, "the victim running")
        assert cli.VM.getStats(vmID=paused)[0]["status"] == "Paused"
        assert vm_path(victim) in registry.paths()
