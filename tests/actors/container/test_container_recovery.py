"""Recovery after the agent dies: containers keep running and are adopted again, untouched.

The agent runs as a real `hostvisor serve` process (libvirt's test driver; docker is
the session's private dockerd). It is killed with SIGKILL while two container VMs
run; docker owns the containers, so they outlive it. While the agent is away one
container ends behind its back. A new agent on the same state directory finds both
by their labels: the running one is Up, with the same container and the same start
(nothing was restarted), and works under the API again; the ended one is Down with
its exit status.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import agent as harness_agent
from harness.daemons import Daemon
from harness.dockerd import IMAGE, NETWORK, PrivateDockerd, container_xml
from harness.waiting import wait_for


class Agent(harness_agent.Agent):
    """`hostvisor serve` on test:///default and the test's private dockerd."""

    def __init__(self, directory: Path, docker_socket: str) -> None:
        super().__init__(
            directory,
            libvirt_uri="test:///default",
            docker_socket=docker_socket,
            container_network=NETWORK,
        )

    def start(self, env: dict[str, str] | None = None) -> Daemon:
        daemon = super().start(env)
        daemon.wait_ready(lambda: self.call("Host.ping")[0] == "ok", timeout=60)
        return daemon

    def statuses(self) -> dict[str, str]:
        outcome, vms = self.call("Host.getVMList", onlyUUID=False)
        assert outcome == "ok", vms
        return {vm["vmId"]: vm["status"] for vm in vms}


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory, dockerd: PrivateDockerd) -> Iterator[Agent]:
    running = Agent(tmp_path_factory.mktemp("crec"), dockerd.socket)
    try:
        yield running
    finally:
        for daemon in running.runs:
            daemon.stop()
        for container in dockerd.labelled():
            container.remove(force=True)


@pytest.mark.slow
def test_agent_killed_and_restarted_adopts_running_containers(
    agent: Agent, dockerd: PrivateDockerd
):
    first = agent.start()
    vms = {"keeps": str(uuid.uuid4()), "ends": str(uuid.uuid4())}
    images = {"keeps": f"{IMAGE}:latest", "ends": f"{IMAGE}:exit7"}
    for name, vm_id in vms.items():
        xml = container_xml(vm_id, name=name, image=images[name])
        assert agent.call("VM.create", vmID=vm_id, vmParams={"xml": xml})[0] == "ok"
    wait_for(lambda: set(agent.statuses().values()) == {"Up"}, 15, "both containers Up")
    before = {
        name: dockerd.client.containers.get(f"hostvisor-{vm_id}").attrs
        for name, vm_id in vms.items()
    }

    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    keeps = dockerd.client.containers.get(f"hostvisor-{vms['keeps']}")
    assert keeps.status == "running"  # the agent's death touched no container
    ends = dockerd.client.containers.get(f"hostvisor-{vms['ends']}")
    ends.kill(signal="SIGTERM")  # it ends while no agent watches (exit status 7)
    ends.wait(timeout=10)

    agent.start()
    expected = {vms["keeps"]: "Up", vms["ends"]: "Down"}
    wait_for(lambda: agent.statuses() == expected, 15, f"VMs adopted as {expected}")
    keeps.reload()
    assert keeps.id == before["keeps"]["Id"]
    assert keeps.attrs["State"]["StartedAt"] == before["keeps"]["State"]["StartedAt"]
    outcome, [ended] = agent.call("VM.getStats", vmID=vms["ends"])
    assert outcome == "ok"
    assert ended["exitCode"] == 1
    assert "container exited with status 7" in ended["exitMessage"]

    # The adopted VM is a working VM again: its operations reach docker.
    assert agent.call("VM.pause", vmID=vms["keeps"])[0] == "ok"
    keeps.reload()
    assert keeps.status == "paused"
    assert agent.call("VM.cont", vmID=vms["keeps"])[0] == "ok"
    for vm_id in vms.values():
        assert agent.call("VM.destroy", vmID=vm_id) == ("ok", True)
    assert dockerd.labelled() == []
