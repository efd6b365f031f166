"""When the docker engine restarts, or is missing, container VMs say so and KVM VMs never notice.

The restart test runs its own private dockerd (not the session's): stopping it makes
docker stop its containers (SIGTERM; the image exits 7 on it), and the container
actor must report that truth once docker is back, through the reconnected event
stream and a fresh inspect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.dockerd import IMAGE, NETWORK, PrivateDockerd, container_xml
from harness.guests import Guests, StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.actor import call
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

NO_VM = 1

pytestmark = [pytest.mark.libvirt]


def _destroy_all(cli: Client) -> None:
    for vm_id in cli.Host.getVMList():
        try:
            cli.VM.destroy(vmID=vm_id)
        except ServerError as error:
            if error.code != NO_VM:
                raise


def _create(cli: Client, image: str = f"{IMAGE}:latest") -> str:
    vm_id = str(uuid.uuid4())
    cli.VM.create(vmID=vm_id, vmParams={"xml": container_xml(vm_id, image=image)})
    return vm_id


def _status(cli: Client, vm_id: str) -> dict[str, Any]:
    [stats] = cli.VM.getStats(vmID=vm_id)
    return stats


@pytest.fixture
def own_dockerd() -> Iterator[PrivateDockerd]:
    engine = PrivateDockerd()
    try:
        engine.start().prepare()
        yield engine
    finally:
        engine.close()


@pytest.mark.slow
def test_dockerd_restart_under_a_running_container(
    own_dockerd: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory
):
    config = load_config(
        state_dir=tmp_path_factory.mktemp("state"),
        libvirt_uri="test:///default",
        management_port=0,
        docker_socket=own_dockerd.socket,
        container_network=NETWORK,
        **VM_TEST_SETTINGS,
    )
    with EmbeddedHost(config) as host, host.client() as cli:
        docker_actor = host.registry.lookup("infra/docker")
        wait_for(lambda: call(docker_actor, "connections").get(timeout=5) == 1, 10, "events")
        events = StatusEvents(cli)
        vm_id = _create(cli, f"{IMAGE}:exit7")
        assert events.next(vm_id)[0]["status"] == "Up"

        own_dockerd.restart()  # docker stops the container (SIGTERM: it exits 7)

        down = events.until(vm_id, "Down", timeout=60)[-1]
        assert down["exitCode"] == 1
        assert "container exited with status 7" in down["exitMessage"]
        wait_for(lambda: call(docker_actor, "connections").get(timeout=5) == 2, 30, "reconnect")
        assert _status(cli, vm_id)["status"] == "Down"

        # The actors talk to the new engine: a new container, and its events arrive.
        second = _create(cli)
        assert events.next(second)[0]["status"] == "Up"
        own_dockerd.client.containers.get(f"hostvisor-{second}").kill(signal="SIGTERM")
        gone = events.until(second, "Down")[-1]
        assert (gone["exitCode"], gone["exitReason"]) == (0, 7)  # the guest's own shutdown
        _destroy_all(cli)
        assert own_dockerd.labelled() == []


@pytest.fixture(scope="module")
def dockerless(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path
) -> Iterator[EmbeddedHost]:
    missing = f"unix://{tmp_path_factory.mktemp('nodocker')}/docker.sock"
    settings = {**VM_TEST_SETTINGS, "docker_socket": missing}
    with embedded_host(tmp_path_factory, embed_root, **settings) as running:
        yield running


def test_without_docker_capabilities_say_no_containers(dockerless: EmbeddedHost):
    with dockerless.client() as cli:
        assert cli.Host.getCapabilities()["containers"] is False


@pytest.mark.kvm
def test_without_docker_a_container_vm_fails_clearly_and_kvm_vms_run(
    dockerless: EmbeddedHost, tmp_path: Path, accelerator: Any
):
    with dockerless.client() as cli:
        try:
            events = StatusEvents(cli)
            vm_id = _create(cli)
            first = events.next(vm_id)[0]
            assert first["status"] == "Down"
            assert first["exitReason"] == 3  # the launch failed
            assert "Container runtime unavailable" in first["exitMessage"]
            assert "docker" in first["exitMessage"]
            assert dockerless.config.docker_socket in first["exitMessage"]

            guests = Guests(tmp_path, accelerator.domain_type)
            kvm_id, xml = guests.xml("beside")
            cli.VM.create(vmID=kvm_id, vmParams={"xml": xml})
            assert events.next(kvm_id)[0]["status"] == "Up"
            cli.VM.pause(vmID=kvm_id)
            assert _status(cli, kvm_id)["status"] == "Paused"
            statuses = {vm["vmId"]: vm["status"] for vm in cli.Host.getVMList(onlyUUID=False)}
            assert statuses == {vm_id: "Down", kvm_id: "Paused"}
            assert cli.VM.destroy(vmID=vm_id) is True  # never made: nothing to ask docker
        finally:
            _destroy_all(cli)


@pytest.fixture
def live_restore_dockerd() -> Iterator[PrivateDockerd]:
    engine = PrivateDockerd("--live-restore")
    try:
        engine.start().prepare()
        yield engine
    finally:
        engine.close()


@pytest.mark.slow
def test_while_docker_is_away_the_vm_says_so_and_comes_back_untouched(
    live_restore_dockerd: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory
):
    engine = live_restore_dockerd
    config = load_config(
        state_dir=tmp_path_factory.mktemp("state"),
        libvirt_uri="test:///default",
        management_port=0,
        docker_socket=engine.socket,
        container_network=NETWORK,
        **VM_TEST_SETTINGS,
    )
    with EmbeddedHost(config) as host, host.client() as cli:
        docker_actor = host.registry.lookup("infra/docker")
        events = StatusEvents(cli)
        vm_id = _create(cli)
        assert events.next(vm_id)[0]["status"] == "Up"
        started = engine.client.containers.get(f"hostvisor-{vm_id}").attrs["State"]["StartedAt"]
        wait_for(lambda: call(docker_actor, "connections").get(timeout=5) == 1, 10, "events")

        engine.stop_engine()  # --live-restore: the container keeps running without dockerd
        away = wait_for(
            lambda: (s := _status(cli, vm_id))["monitorResponse"] == "-1" and s, 10, "-1"
        )
        assert away["status"] == "Up"
        with pytest.raises(ServerError) as raised:
            cli.VM.pause(vmID=vm_id)
        assert raised.value.code == 40
        assert "Container runtime unavailable" in raised.value.message
        assert engine.socket in raised.value.message
        assert cli.Host.getCapabilities()["containers"] is False

        engine.start()
        wait_for(lambda: call(docker_actor, "connections").get(timeout=5) == 2, 30, "reconnect")
        back = wait_for(lambda: (s := _status(cli, vm_id))["monitorResponse"] == "0" and s, 10, "0")
        assert back["status"] == "Up"
        container = engine.client.containers.get(f"hostvisor-{vm_id}")
        assert container.attrs["State"]["StartedAt"] == started  # never restarted
        cli.VM.pause(vmID=vm_id)
        container.reload()
        assert container.status == "paused"
        assert cli.Host.getCapabilities()["containers"] is True
        _destroy_all(cli)
