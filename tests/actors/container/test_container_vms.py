"""Container VMs through the API, on a private dockerd, as the Engine and vdsm-client see them.

A VM whose custom properties say `containerType=docker` runs as a docker container
and is reported as an ordinary VM (reference/vdsm-wire.md §6): VM statuses and
events, VDSM's stats fields and types (§5), VDSM's error codes (§2).
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from harness.components import need
from harness.dockerd import GATEWAY, IMAGE, NETWORK, PrivateDockerd, container_xml
from harness.guests import Guests, StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.actor import call
from hostvisor.actors.container.addresses import container_path
from hostvisor.actors.guest.errors import UnsupportedOperation
from hostvisor.actors.vm.addresses import vm_path
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

NO_VM, VM_IS_DOWN, CREATE_ERROR, UNSUPPORTED = 1, 6, 9, 75
PERCENT = re.compile(r"^\d+\.\d\d$")
INT = re.compile(r"^\d+$")

pytestmark = [pytest.mark.libvirt]


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path, dockerd: PrivateDockerd
) -> Iterator[EmbeddedHost]:
    with embedded_host(
        tmp_path_factory,
        embed_root,
        docker_socket=dockerd.socket,
        container_network=NETWORK,
        **VM_TEST_SETTINGS,
    ) as running:
        yield running


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with host.client() as client:
        try:
            yield client
        finally:  # leave no VM (nor container) behind for the next test
            for vm_id in client.Host.getVMList():
                try:
                    client.VM.destroy(vmID=vm_id)
                except ServerError as error:
                    if error.code != NO_VM:
                        raise


def _create(cli: Client, events: StatusEvents, **options: Any) -> tuple[str, dict[str, Any]]:
    """Create a container VM; return its id and its first status event past WaitForLaunch."""
    vm_id = str(uuid.uuid4())
    created = cli.VM.create(vmID=vm_id, vmParams={"xml": container_xml(vm_id, **options)})
    assert created["vmId"] == vm_id
    assert created["status"] == "WaitForLaunch"
    first, _params = events.next(vm_id)
    return vm_id, first


def _container(dockerd: PrivateDockerd, vm_id: str) -> Any:
    return dockerd.client.containers.get(f"hostvisor-{vm_id}")


def _stats(cli: Client, vm_id: str) -> dict[str, Any]:
    [stats] = cli.VM.getStats(vmID=vm_id)
    return stats


def _error(call_: Any, **params: Any) -> ServerError:
    with pytest.raises(ServerError) as raised:
        call_(**params)
    return raised.value


def test_lifecycle_create_stats_pause_cont_shutdown_destroy(cli: Client, dockerd: PrivateDockerd):
    events = StatusEvents(cli)
    vm_id, first = _create(cli, events, memory_mib=96)
    assert first["status"] == "Up"
    container = _container(dockerd, vm_id)
    assert container.status == "running"
    assert container.labels["org.ovirt.hostvisor.vm-id"] == vm_id

    # Stats: docker's figures under VDSM's names and types, once two samples are in.
    stats = wait_for(
        lambda: (
            (s := _stats(cli, vm_id)).get("memoryStats", {}).get("pageflt") is not None
            and "network" in s
            and s
        ),
        10,
        "container stats",
    )
    assert stats["status"] == "Up"
    assert stats["vmName"] == "ct"
    assert PERCENT.match(stats["cpuUser"])
    assert PERCENT.match(stats["cpuSys"])
    assert INT.match(stats["cpuUsage"])
    assert int(stats["cpuUsage"]) > 0
    assert stats["vcpuCount"] == "1"
    assert INT.match(stats["memUsage"])
    assert stats["memoryStats"]["mem_total"] == str(96 * 1024)  # the limit, in KiB
    assert isinstance(stats["memoryStats"]["pageflt"], int)
    assert stats["monitorResponse"] == "0"
    assert INT.match(stats["elapsedTime"])
    assert set(stats["network"]) == {"eth0"}

    cli.VM.pause(vmID=vm_id)
    assert _stats(cli, vm_id)["status"] == "Paused"
    assert events.next(vm_id)[0]["status"] == "Paused"
    container.reload()
    assert container.status == "paused"

    cli.VM.cont(vmID=vm_id)
    assert _stats(cli, vm_id)["status"] == "Up"
    container.reload()
    assert container.status == "running"

    assert cli.VM.shutdown(vmID=vm_id, timeout=10) == "Machine shutting down"
    down = events.until(vm_id, "Down")[-1]
    assert down["exitCode"] == 0
    assert down["exitReason"] == 6  # ADMIN_SHUTDOWN
    assert "container exited with status 0" in down["exitMessage"]
    stats = _stats(cli, vm_id)
    assert stats["status"] == "Down"
    assert stats["exitCode"] == 0
    container.reload()
    assert container.status == "exited"
    assert _error(cli.VM.pause, vmID=vm_id).code == VM_IS_DOWN

    assert cli.VM.destroy(vmID=vm_id) is True
    assert vm_id not in cli.Host.getVMList()
    with pytest.raises(docker.errors.NotFound):
        _container(dockerd, vm_id)
    assert _error(cli.VM.getStats, vmID=vm_id).code == NO_VM


def test_a_container_that_dies_is_down_with_its_exit_status(cli: Client, dockerd: PrivateDockerd):
    events = StatusEvents(cli)
    vm_id, first = _create(cli, events, image=f"{IMAGE}:exit7")
    assert first["status"] == "Up"
    _container(dockerd, vm_id).kill(signal="SIGTERM")  # behind Hostvisor's back
    down = events.until(vm_id, "Down")[-1]
    assert down["exitCode"] == 1
    assert down["exitReason"] == 1  # GENERIC_ERROR
    assert "container exited with status 7" in down["exitMessage"]
    assert [vm["status"] for vm in cli.Host.getVMList(onlyUUID=False)] == ["Down"]


def test_reset_restarts_the_container_and_it_stays_up(cli: Client, dockerd: PrivateDockerd):
    events = StatusEvents(cli)
    vm_id, _first = _create(cli, events)
    container = _container(dockerd, vm_id)
    started = container.attrs["State"]["StartedAt"]
    assert cli.VM.reset(vmID=vm_id) is True
    container.reload()
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] != started
    assert _stats(cli, vm_id)["status"] == "Up"
    cli.Host.ping()  # any event of the restart has been published by now
    assert events.queue.empty() or all(
        params[vm_id]["status"] != "Down"
        for _method, params in list(events.queue.queue)
        if vm_id in params
    )


def test_memory_and_cpu_settings_are_honoured(cli: Client, dockerd: PrivateDockerd):
    events = StatusEvents(cli)
    cputune = "<cputune><shares>512</shares><period>50000</period><quota>25000</quota></cputune>"
    vm_id, _first = _create(cli, events, memory_mib=80, vcpus=2, cputune=cputune)
    host_config = _container(dockerd, vm_id).attrs["HostConfig"]
    assert host_config["Memory"] == 80 * 1024 * 1024
    assert host_config["MemorySwap"] == 80 * 1024 * 1024
    assert host_config["CpuPeriod"] == 50000
    assert host_config["CpuQuota"] == 2 * 25000  # libvirt's quota is per vCPU
    assert host_config["CpuShares"] == 512
    stats = wait_for(lambda: "vcpuQuota" in (s := _stats(cli, vm_id)) and s, 10, "stats")
    assert (stats["vcpuCount"], stats["vcpuQuota"], stats["vcpuPeriod"]) == ("2", "25000", "50000")


def test_volume_map_mounts_the_disks_in_the_container(
    cli: Client, dockerd: PrivateDockerd, tmp_path: Path
):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hello from the host\n")
    image = tmp_path / "disk.raw"
    image.write_bytes(b"raw disk bytes" + bytes(4096))
    devices = f"""
    <disk type='dir' device='disk'><source dir='{shared}'/><target dev='vda'/></disk>
    <disk type='file' device='disk'><source file='{image}'/><target dev='vdb'/><readonly/></disk>"""
    custom = {
        "containerType": "docker",
        "containerImage": f"{IMAGE}:latest",
        "volumeMap": "vda:data,vdb:/mnt/image",
    }
    events = StatusEvents(cli)
    vm_id, first = _create(cli, events, custom=custom, devices=devices)
    assert first["status"] == "Up"
    container = _container(dockerd, vm_id)
    seen = container.exec_run(["cat", "/data/hello.txt"])
    assert (seen.exit_code, seen.output) == (0, b"hello from the host\n")
    written = container.exec_run(["sh", "-c", "echo from the container > /data/back.txt"])
    assert written.exit_code == 0
    assert (shared / "back.txt").read_text() == "from the container\n"
    head = container.exec_run(["head", "-c", "14", "/mnt/image"])
    assert head.output == b"raw disk bytes"
    refused = container.exec_run(["sh", "-c", "echo x > /mnt/image"])
    assert refused.exit_code != 0  # <readonly/> disk
    assert image.read_bytes().startswith(b"raw disk bytes")


def test_network_counters_come_from_docker(cli: Client, dockerd: PrivateDockerd):
    events = StatusEvents(cli)
    vm_id, _first = _create(cli, events)
    before = wait_for(lambda: _stats(cli, vm_id).get("network"), 10, "network stats")["eth0"]
    pinged = _container(dockerd, vm_id).exec_run(["ping", "-c", "3", "-W", "2", GATEWAY])
    assert pinged.exit_code == 0, pinged.output

    def grown() -> dict[str, Any] | None:
        nic = _stats(cli, vm_id).get("network", {}).get("eth0", {})
        return nic if int(nic.get("tx", 0)) >= int(before["tx"]) + 3 * 84 else None

    nic = wait_for(grown, 10, "tx counter to grow by three pings")
    assert nic["name"] == "eth0"
    assert int(nic["rx"]) > int(before["rx"])
    assert all(isinstance(nic[k], str) for k in ("rx", "tx", "rxErrors", "txDropped", "speed"))
    assert isinstance(nic["sampleTime"], float)


def test_unsupported_operations_fail_with_code_75_naming_docker(cli: Client, host: EmbeddedHost):
    events = StatusEvents(cli)
    vm_id, _first = _create(cli, events)
    ref = host.registry.lookup(container_path(vm_id))
    for operation in ("migrate", "snapshot", "hotplugDisk", "hotplugNic", "freeze", "merge"):
        with pytest.raises(UnsupportedOperation) as raised:
            call(ref, operation, params={}).get(timeout=5)
        assert raised.value.code == UNSUPPORTED
        assert "docker" in str(raised.value)
        assert operation in str(raised.value)
    # Only verbs the runtime declares unsupported answer 75: any other is a caller's
    # bug (an internal error on the wire), and the actor carries on.
    for misspelt in ("hotplug_disk", "fly"):
        with pytest.raises(AttributeError) as wrong:
            call(ref, misspelt, params={}).get(timeout=5)
        assert misspelt in str(wrong.value)
    # The same over the wire, as the Engine sends them.
    wire = {
        "migrate": lambda: cli.VM.migrate(vmID=vm_id, params={"dst": "192.0.2.7:54321"}),
        "snapshot": lambda: cli.VM.snapshot(vmID=vm_id),
        "hotplugDisk": lambda: cli.VM.hotplugDisk(params={"vmId": vm_id, "xml": "<hotplug/>"}),
        "hotunplugNic": lambda: cli.VM.hotunplugNic(params={"vmId": vm_id, "xml": "<x/>"}),
    }
    for operation, verb in wire.items():
        error = _error(verb)
        assert error.code == UNSUPPORTED, operation
        assert "docker" in error.message
        assert operation in error.message
    assert _stats(cli, vm_id)["status"] == "Up"  # the actor carried on


def test_bad_container_settings_are_refused_with_create_error(cli: Client):
    cases = {
        "unknown runtime": {"containerType": "rkt", "containerImage": "busybox"},
        "no image": {"containerType": "docker"},
        "volumeMap of a missing disk": {
            "containerType": "docker",
            "containerImage": "busybox",
            "volumeMap": "vdz:data",
        },
        "volumeMap that is not disk:label": {
            "containerType": "docker",
            "containerImage": "busybox",
            "volumeMap": "vda",
        },
    }
    for case, custom in cases.items():
        vm_id = str(uuid.uuid4())
        xml = container_xml(vm_id, custom=custom)
        error = _error(cli.VM.create, vmID=vm_id, vmParams={"xml": xml})
        assert error.code == CREATE_ERROR, case
    assert cli.Host.getVMList() == []


def test_an_image_docker_cannot_find_gives_a_down_vm_with_the_reason(cli: Client):
    events = StatusEvents(cli)
    _vm_id, first = _create(cli, events, image=f"{IMAGE}:no-such-tag")
    assert first["status"] == "Down"
    assert first["exitCode"] == 1
    assert first["exitReason"] == 3  # LIBVIRT_START_FAILED: the launch failed
    assert "no-such-tag" in first["exitMessage"]


def test_capabilities_report_containers(cli: Client):
    assert cli.Host.getCapabilities()["containers"] is True


@pytest.mark.kvm
def test_a_container_and_a_kvm_guest_side_by_side(
    cli: Client, dockerd: PrivateDockerd, tmp_path: Path, accelerator: Any
):
    events = StatusEvents(cli)
    guests = Guests(tmp_path, accelerator.domain_type)
    kvm_id, kvm_xml = guests.xml("guest")
    cli.VM.create(vmID=kvm_id, vmParams={"xml": kvm_xml})
    assert events.next(kvm_id)[0]["status"] == "Up"
    container_id, _first = _create(cli, events)

    assert sorted(cli.Host.getVMList()) == sorted([kvm_id, container_id])
    both = wait_for(
        lambda: len(s := [x for x in cli.Host.getAllVmStats() if "cpuUsage" in x]) == 2 and s,
        10,
        "stats of both VMs",
    )
    by_id = {entry["vmId"]: entry for entry in both}
    assert by_id[kvm_id]["status"] == by_id[container_id]["status"] == "Up"
    assert by_id[kvm_id]["kvmEnable"] == "true"
    assert by_id[container_id]["kvmEnable"] == "false"
    for entry in both:
        assert PERCENT.match(entry["cpuUser"])
        assert INT.match(entry["memUsage"])
    full = {entry["vmId"]: entry for entry in cli.Host.getVMFullList()}
    assert "containerImage" in full[container_id]["xml"]
    assert full[kvm_id]["xml"].startswith("<domain")

    # Each verb reaches its own kind of VM.
    cli.VM.pause(vmID=container_id)
    cli.VM.pause(vmID=kvm_id)
    statuses = {vm["vmId"]: vm["status"] for vm in cli.Host.getVMList(onlyUUID=False)}
    assert statuses == {kvm_id: "Paused", container_id: "Paused"}
    assert cli.VM.destroy(vmID=kvm_id) is True
    assert cli.Host.getVMList() == [container_id]


def test_without_container_type_the_container_settings_are_ignored(
    cli: Client, dockerd: PrivateDockerd, host: EmbeddedHost
):
    vm_id = str(uuid.uuid4())
    custom = {"containerImage": f"{IMAGE}:latest", "volumeMap": "vda:data"}
    xml = container_xml(vm_id, custom=custom)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    assert host.registry.get(vm_path(vm_id)) is not None  # a VmActor: libvirt runs it
    assert host.registry.get(container_path(vm_id)) is None
    assert dockerd.labelled() == [] or all(
        c.labels["org.ovirt.hostvisor.vm-id"] != vm_id for c in dockerd.labelled()
    )


def test_vdsm_client_getcapabilities_grep_containers(host: EmbeddedHost):
    vdsm_client = Path(sys.executable).parent / "vdsm-client"
    need(vdsm_client.exists(), f"{vdsm_client} is missing: run .venv/bin/pip install -e .")
    _address, port = host.address
    argv = [str(vdsm_client), "--insecure", "-a", "127.0.0.1", "-p", str(port)]
    shown = subprocess.run(
        [*argv, "Host", "getCapabilities"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert [line.strip() for line in shown.splitlines() if "containers" in line] == [
        '"containers": true,'
    ]


def test_reboot_restarts_the_container_through_reboot_in_progress(
    cli: Client, dockerd: PrivateDockerd
):
    events = StatusEvents(cli)
    vm_id, _first = _create(cli, events)
    started = _container(dockerd, vm_id).attrs["State"]["StartedAt"]
    cli.VM.shutdown(vmID=vm_id, reboot=True, timeout=5)
    seen = [entry["status"] for entry in events.until(vm_id, "Up")]
    assert seen == ["RebootInProgress", "Up"]
    assert _container(dockerd, vm_id).attrs["State"]["StartedAt"] != started


def test_shutdown_without_force_leaves_a_container_that_ignores_its_stop_signal_running(
    cli: Client, dockerd: PrivateDockerd
):
    events = StatusEvents(cli)
    vm_id, _first = _create(cli, events, image=f"{IMAGE}:stubborn")
    cli.VM.shutdown(vmID=vm_id, timeout=1)
    assert events.next(vm_id)[0]["status"] == "Powering down"
    assert events.next(vm_id, timeout=15)[0]["status"] == "Up"
    assert _container(dockerd, vm_id).attrs["State"]["Running"] is True
    cli.VM.destroy(vmID=vm_id)


def test_shutdown_kills_a_container_that_ignores_its_stop_signal_after_the_timeout(
    cli: Client, dockerd: PrivateDockerd
):
    events = StatusEvents(cli)
    vm_id, _first = _create(cli, events, image=f"{IMAGE}:stubborn")
    cli.VM.shutdown(vmID=vm_id, timeout=1, force=True)
    assert events.next(vm_id)[0]["status"] == "Powering down"
    down = events.until(vm_id, "Down", timeout=15)[-1]
    assert (down["exitCode"], down["exitReason"]) == (0, 6)  # asked for: the admin's
    assert "container exited with status 137" in down["exitMessage"]  # SIGKILL
