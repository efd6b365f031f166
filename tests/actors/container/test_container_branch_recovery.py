"""The `containers` branch escalates and comes back with every container VM adopted.

One container VM's actor is killed until `containers/guests` spends its budget; the
branch restarts it empty and its recoverer re-reads docker's labels: both container
VMs are listed again with their true status, and they answer their verbs. Docker's
containers were never touched (same id, same start).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervision.test_branch_recovery import all_vm_stats, kill_until_escalated

from harness.dockerd import IMAGE, NETWORK, PrivateDockerd, container_xml
from harness.waiting import wait_for
from hostvisor.actors.container.addresses import CONTAINER_GUESTS, CONTAINERS, container_path
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config


@pytest.fixture
def host(tmp_path: Path, dockerd: PrivateDockerd) -> Iterator[EmbeddedHost]:
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri="test:///default",
        management_port=0,
        docker_socket=dockerd.socket,
        container_network=NETWORK,
        vm_powering_up_seconds=0,
        vm_sample_interval=0.5,
    )
    with EmbeddedHost(config) as running:
        try:
            yield running
        finally:
            for container in dockerd.labelled():
                container.remove(force=True)


@pytest.mark.slow
def test_a_container_crash_loop_escalates_and_the_branch_adopts_every_container(
    host: EmbeddedHost, dockerd: PrivateDockerd
):
    vm_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    with host.client(timeout=30) as cli:
        for n, vm_id in enumerate(vm_ids):
            xml = container_xml(vm_id, name=f"esc{n}", image=f"{IMAGE}:latest")
            cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        expected = dict.fromkeys(vm_ids, "Up")
        wait_for(lambda: all_vm_stats(cli) == expected, 30, "both containers Up")
        before = {
            vm_id: dockerd.client.containers.get(f"hostvisor-{vm_id}").attrs for vm_id in vm_ids
        }

        kills = kill_until_escalated(host.registry, container_path(vm_ids[0]), CONTAINER_GUESTS)

        assert kills > 1
        assert host.registry.status(CONTAINER_GUESTS).restarts.count == 1
        wait_for(lambda: host.gate.reports.get(CONTAINERS) == 2, 30, "the second recovery")
        wait_for(lambda: all_vm_stats(cli) == expected, 30, "both container VMs listed again")
        for vm_id in vm_ids:
            container = dockerd.client.containers.get(f"hostvisor-{vm_id}")
            assert container.id == before[vm_id]["Id"]
            assert container.attrs["State"]["StartedAt"] == before[vm_id]["State"]["StartedAt"]
        cli.VM.pause(vmID=vm_ids[0])
        wait_for(lambda: all_vm_stats(cli)[vm_ids[0]] == "Paused", 30, "the victim paused")
        for vm_id in vm_ids:
            assert cli.VM.destroy(vmID=vm_id) is True
        assert dockerd.labelled() == []
