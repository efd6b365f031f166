"""Recovery after the agent dies: guests keep running and are adopted again (DESIGN rule 1).

The agent runs as a real `hostvisor serve` process on an embedded QEMU driver
(`qemu:///embed` rooted in its state directory). It is killed with SIGKILL while two real
guests run, one of them paused; their QEMU processes outlive it (libvirt daemonizes
QEMU, and with `stdio_handler = "file"` QEMU holds no pipe to the agent), and a new agent
on the same state directory re-attaches to them through the same embed root.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.agent import Agent
from harness.guests import make_halting_base, make_overlay
from harness.vms import (
    kill_qemu,
    ovirt_guest_xml,
    qemu_alive,
    qemu_pid,
    statuses,
    td_domain_xml,
    write_test_node,
)
from harness.waiting import wait_for
from hostvisor.api.client import ServerError, connect
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.front import FRONT
from hostvisor.supervision.branches.vms import VmsBranch
from hostvisor.supervision.config import load_config

RECOVERING = 99

log = logging.getLogger("hostvisor.tests")


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    # A short directory: QEMU's monitor socket path under it must fit in 108 bytes.
    running = Agent(tmp_path_factory.mktemp("rec"))
    try:
        yield running
    finally:
        running.stop_all()


def _create_guests(agent: Agent, accelerator: Any, names: list[str]) -> dict[str, str]:
    base = make_halting_base(agent.directory)
    guests = {}
    with connect("127.0.0.1", agent.port, timeout=30) as cli:
        for name in names:
            vm_id = str(uuid.uuid4())
            disk = make_overlay(base, agent.directory / f"{name}.qcow2")
            xml = ovirt_guest_xml(
                name=name, vm_id=vm_id, disk=disk, domain_type=accelerator.domain_type
            )
            cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
            guests[name] = vm_id
    return guests


def _stats_flow(cli: Any, vm_ids: list[str]) -> bool:
    stats = {entry["vmId"]: entry for entry in cli.Host.getAllVmStats()}
    return all(
        "cpuUsage" in stats.get(vm, {}) and stats[vm]["monitorResponse"] == "0" for vm in vm_ids
    )


def _probe_until_recovered(agent: Agent, timeout: float) -> list[Any]:
    """Call getVMList from the agent's start until it succeeds; return every outcome.

    Before recovery ends, every answer must be 99; the first success must already be
    the whole truth (never a partial list).
    """
    outcomes: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kind, value = agent.call("Host.getVMList", onlyUUID=False)
        if kind == "ok":
            outcomes.append({vm["vmId"]: vm["status"] for vm in value})
            return outcomes
        if kind == "error":
            outcomes.append(value)
            assert value == RECOVERING, f"answered error {value} while recovering"
        assert agent.runs[-1].alive(), agent.runs[-1].log_text()
        time.sleep(0.01)  # a connection attempt per 10 ms until the port opens
    pytest.fail(f"the agent did not recover in {timeout} s: {outcomes[-5:]}")


@pytest.mark.slow
@pytest.mark.kvm
@pytest.mark.libvirt
def test_kill_9_of_the_agent_leaves_guests_running_and_a_new_agent_adopts_them(
    agent: Agent, accelerator: Any
):
    first = agent.start()
    first.wait_ready(lambda: agent.call("Host.getVMList")[0] == "ok", timeout=60)
    guests = _create_guests(agent, accelerator, ["rec-up", "rec-paused"])
    up, paused = guests["rec-up"], guests["rec-paused"]
    pids: dict[str, int] = {}
    try:
        with connect("127.0.0.1", agent.port, timeout=30) as cli:
            wait_for(lambda: statuses(cli) == {up: "Up", paused: "Up"}, 60, "both guests Up")
            cli.VM.pause(vmID=paused)
            wait_for(lambda: statuses(cli)[paused] == "Paused", 10, "the pause")
            wait_for(lambda: _stats_flow(cli, [up, paused]), 10, "stats before the kill")
        pids = {vm_id: qemu_pid(agent.embed_root, name, vm_id) for name, vm_id in guests.items()}

        os.kill(first.pid, signal.SIGKILL)
        assert first.process.wait(timeout=10) == -signal.SIGKILL
        for vm_id, pid in pids.items():
            assert qemu_alive(pid, vm_id), f"QEMU of {vm_id} died with the agent"

        agent.start()
        outcomes = _probe_until_recovered(agent, timeout=60)
        log.info("answers 99 before recovery: %d", outcomes.count(RECOVERING))
        assert outcomes[-1] == {up: "Up", paused: "Paused"}
        agent_log = agent.runs[-1].log_text()
        assert "recovered 2 VMs" in agent_log
        assert "Traceback" not in agent_log

        with connect("127.0.0.1", agent.port, timeout=30) as cli:
            for name, vm_id in guests.items():
                assert qemu_pid(agent.embed_root, name, vm_id) == pids[vm_id]  # not restarted
            wait_for(lambda: _stats_flow(cli, [up, paused]), 10, "stats after recovery")
            # The adopted actor drives its guest, and libvirt's events reach it.
            cli.VM.cont(vmID=paused)
            wait_for(lambda: statuses(cli)[paused] == "Up", 10, "the resume")
            for vm_id in guests.values():
                cli.VM.destroy(vmID=vm_id)
            assert cli.Host.getVMList() == []
    finally:
        for vm_id, pid in pids.items():
            kill_qemu(pid, vm_id)
        agent.stop_all()


# -- the recovery gate, deterministically ---------------------------------------------------


@pytest.mark.libvirt
def test_the_api_answers_99_until_recovery_is_done(tmp_path: Path, monkeypatch):
    """Recovery is held on an event, so the closed gate is seen for sure."""
    domains = [td_domain_xml(name=f"gate-{i}", paused=i == 0) for i in range(3)]
    uri = write_test_node(tmp_path / "node.xml", domains)
    release = threading.Event()
    recovering = threading.Event()
    real_recover = VmsBranch.recover

    def held_recover(branch: VmsBranch) -> int:
        recovering.set()
        assert release.wait(30)
        return real_recover(branch)

    monkeypatch.setattr(VmsBranch, "recover", held_recover)
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=uri,
        management_port=0,
        vm_powering_up_seconds=0,
    )
    host = EmbeddedHost(config)
    starting = threading.Thread(target=host.start, name="host-start")
    starting.start()
    try:
        assert recovering.wait(30)
        # The branches start in order and the API last; recovery runs beside them.
        wait_for(lambda: host.registry.get(FRONT), 30, "the API to listen", 0.01)
        with host.client(timeout=10) as cli:
            for call in (
                lambda: cli.Host.getVMList(onlyUUID=False),
                cli.Host.getAllVmStats,
                lambda: cli.VM.getStats(vmID="whatever"),
            ):
                with pytest.raises(ServerError) as raised:
                    call()
                assert raised.value.code == RECOVERING
                assert "Recovering" in raised.value.message
            release.set()
            starting.join(30)
            assert host.gate.is_open()
            listed = statuses(cli)
        assert sorted(listed.values()) == ["Paused", "Up", "Up"]
    finally:
        release.set()
        starting.join(30)
        host.stop()
