"""Two test hosts on one machine (issue 14's harness): two agents, and live migration between them.

Each host has its own network and mount namespaces, its own libvirtd on
`qemu:///system` and its own agent, reached with TLS as the Engine reaches them.
A guest made through one agent migrates live (libvirt peer-to-peer, as VDSM
drives it) to the other host on a disk both hosts see.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.guests import Guests
from harness.twohosts import TestHost, status_of, two_hosts, vm_statuses
from harness.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestHost, TestHost]]:
    with two_hosts(tmp_path_factory.mktemp("hosts")) as pair:
        yield pair


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("shared-disks"), accelerator.domain_type)


def test_each_agent_is_its_own_host(hosts: tuple[TestHost, TestHost]) -> None:
    ids = []
    for host in hosts:
        with host.connect() as cli:
            caps = cli.Host.getCapabilities()
        ids.append(caps["uuid"])
        assert caps["uuid"] == host.host_uuid
    assert ids[0] != ids[1]


def test_a_guest_made_through_one_agent_migrates_live_to_the_other_host(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    import libvirt  # noqa: PLC0415 - the libvirt marker makes sure it is installed

    source, destination = hosts
    vm_id, xml = guests.xml("roamer")
    with source.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
    wait_for(lambda: status_of(source, vm_id) == "Up", 60, "the guest Up on the source")

    src = libvirt.open(source.libvirt_uri)
    dst = libvirt.open(destination.libvirt_uri)
    try:
        domain = src.lookupByUUIDString(vm_id)
        started = time.monotonic()
        domain.migrateToURI3(
            destination.peer_uri,
            {libvirt.VIR_MIGRATE_PARAM_URI: destination.migration_uri},
            libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_UNSAFE,
        )
        took = time.monotonic() - started
        arrived = dst.lookupByUUIDString(vm_id)
        assert arrived.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert vm_id not in {d.UUIDString() for d in src.listAllDomains()}
        assert took < 30
    finally:
        src.close()
        dst.close()
    # The source agent sees its guest leave; it is no longer running there.
    wait_for(lambda: status_of(source, vm_id) in (None, "Down"), 30, "the source to see it go")


def test_the_hosts_are_on_documentation_addresses_only(hosts: tuple[TestHost, TestHost]) -> None:
    for host in hosts:
        assert host.address.startswith("198.51.100.")
        shown = host.namespace.addresses()
        assert shown["eth0"] == [f"{host.address}/24"]
        assert Path(host.socket).is_socket()


def test_the_engines_domain_xml_runs_unchanged_on_a_system_libvirt(
    hosts: tuple[TestHost, TestHost], engine_xml: Any, accelerator: Any
) -> None:
    """An Engine VM (channels, SPICE and VNC on the vdsm-ovirtmgmt network, serial
    console, USB, RNG, watchdog, balloon) on a host's qemu:///system, as on the
    embedded default (test_vm_engine_xml.py): Up, its graphics reported, reaped."""
    host = hosts[0]
    vm_id = str(uuid.uuid4())
    xml = engine_xml(vm_id=vm_id, name="engine-system", domain_type=accelerator.domain_type)
    with host.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
        wait_for(lambda: status_of(host, vm_id) == "Up", 60, "the Engine's VM Up")
        [stats] = cli.VM.getStats(vmID=vm_id)
        assert {device["type"] for device in stats["displayInfo"]} == {"spice", "vnc"}
        assert all(int(device["port"]) > 0 for device in stats["displayInfo"])
        assert cli.VM.destroy(vmID=vm_id) is True
    assert vm_id not in vm_statuses(host)
