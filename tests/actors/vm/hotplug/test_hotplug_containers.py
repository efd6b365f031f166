"""A VM that runs as a container hotplugs nothing: every hotplug verb answers 75 naming docker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from actors.container.conftest import dockerd  # noqa: F401 - the fixture, shared
from actors.vm.hotplug.conftest import error_of

from harness.dockerd import NETWORK, PrivateDockerd, container_xml
from harness.guests import StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.libvirt]

UNSUPPORTED = 75


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory,
    embed_root: Path,
    dockerd: PrivateDockerd,  # noqa: F811 - the fixture imported above
) -> Iterator[EmbeddedHost]:
    with embedded_host(
        tmp_path_factory,
        embed_root,
        docker_socket=dockerd.socket,
        container_network=NETWORK,
        **VM_TEST_SETTINGS,
    ) as running:
        yield running


def test_every_hotplug_verb_answers_75_for_a_container_vm(cli: Client):
    vm_id = str(uuid.uuid4())
    events = StatusEvents(cli)
    cli.VM.create(vmID=vm_id, vmParams={"xml": container_xml(vm_id)})
    events.until(vm_id, "Up", timeout=60)
    params = {"vmId": vm_id, "xml": "<hotplug/>"}
    dimm = {"vmId": vm_id, "memory": {"size": 128, "node": 0, "alias": "ua-d"}}
    specs = {"poolID": "p", "domainID": "d", "imageID": "i", "volumeID": "v"}
    lease = {"type": "lease", "sd_id": str(uuid.uuid4()), "lease_id": vm_id}
    calls = {
        "hotplugDisk": lambda: cli.VM.hotplugDisk(vmID=vm_id, params=params),
        "hotunplugDisk": lambda: cli.VM.hotunplugDisk(vmID=vm_id, params=params),
        "hotplugNic": lambda: cli.VM.hotplugNic(vmID=vm_id, params=params),
        "hotunplugNic": lambda: cli.VM.hotunplugNic(vmID=vm_id, params=params),
        "setNumberOfCpus": lambda: cli.VM.setNumberOfCpus(vmID=vm_id, numberOfCpus="2"),
        "hotplugMemory": lambda: cli.VM.hotplugMemory(vmID=vm_id, params=dimm),
        "hotunplugMemory": lambda: cli.VM.hotunplugMemory(vmID=vm_id, params=dimm),
        "diskSizeExtend": lambda: cli.VM.diskSizeExtend(
            vmID=vm_id, driveSpecs=specs, newSize="1048576"
        ),
        "changeCD": lambda: cli.VM.changeCD(vmID=vm_id, driveSpec=""),
        "hotplugLease": lambda: cli.VM.hotplugLease(vmID=vm_id, lease=lease),
        "hotunplugLease": lambda: cli.VM.hotunplugLease(vmID=vm_id, lease=lease),
    }
    try:
        for name, verb in calls.items():
            error = error_of(verb)
            assert error.code == UNSUPPORTED, name
            assert "docker" in error.message
            assert name in error.message
        assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"
    finally:
        cli.VM.destroy(vmID=vm_id)
