"""hostdevListByCaps on this machine, field by field against libvirt's node device XML.

The devices come from a private libvirtd's node device driver (udev) — the
embedded qemu:///embed has none, and there the list is empty. Each reported field
is checked against `virsh nodedev-dumpxml` of the same device, and the PCI extras
VDSM reads from sysfs (the config header type behind `is_assignable`) are read
again here, independently.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.hosts import embedded_host
from hostvisor.actors.actor import Link
from hostvisor.actors.admin import hostdev
from hostvisor.actors.admin.addresses import DEVICES
from hostvisor.actors.admin.devices import DevicesActor
from hostvisor.actors.admin.errors import HostdevError
from hostvisor.actors.admin.proxy import DevicesProxy
from hostvisor.actors.runtime import Runtime
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = pytest.mark.libvirt


def virsh(uri: str, *args: str) -> str:
    return subprocess.run(
        ["virsh", "-c", uri, *args], check=True, capture_output=True, text=True
    ).stdout


def dumped(uri: str) -> dict[str, ET.Element]:
    names = [name for name in virsh(uri, "nodedev-list").split() if name]
    return {name: ET.fromstring(virsh(uri, "nodedev-dumpxml", name)) for name in names}  # noqa: S314


@pytest.fixture(scope="module")
def devices_actor(system_libvirt) -> Iterator[pykka.ActorRef[Any]]:
    link = Link(path=DEVICES, runtime=Runtime.make())
    ref = DevicesActor.spawn(link, connection=lambda: system_libvirt.conn)
    link.started.get(timeout=10)
    yield ref
    ref.stop()


def header_type(pci_name: str) -> int:
    """Byte 0x0e of the device's PCI config space, read here independently."""
    config = Path("/sys/bus/pci/devices", hostdev.pci_sysfs_name(pci_name), "config")
    return config.read_bytes()[0x0E] & 0x7F


def test_every_node_device_is_reported_with_vdsms_fields(system_libvirt, devices_actor):
    listed = DevicesProxy(devices_actor).list_by_caps(()).get(timeout=30)
    xmls = dumped(system_libvirt.uri)
    assert set(listed) == set(xmls)
    assert {"pci", "net", "system"} <= {entry["params"]["capability"] for entry in listed.values()}
    for name, xml in xmls.items():
        params = listed[name]["params"]
        capability = xml.find("capability")
        assert capability is not None
        cap = capability.get("type")
        assert params["capability"] == cap, name
        if name == "computer":
            assert "parent" not in params
        else:
            assert params["parent"] == xml.findtext("parent"), name
        assert params.get("driver") == xml.findtext("driver/name"), name
        for tag in ("vendor", "product", "interface"):
            element = capability.find(tag)
            if element is None:
                assert f"{tag}_id" not in params
                continue
            assert params.get(f"{tag}_id") == element.get("id"), (name, tag)
            if element.text:
                assert params[tag] == element.text, (name, tag)
        if cap == "net":
            assert params["interface"] == capability.findtext("interface")
        if cap == "pci":
            assert params["address"] == {
                key: capability.findtext(key) for key in ("domain", "bus", "slot", "function")
            }
            group = capability.find("iommuGroup")
            assert params.get("iommu_group") == (None if group is None else group.get("number"))
            numa = capability.find("numa")
            assert params.get("numa_node") == (None if numa is None else numa.get("node"))
            inner = capability.find("capability")
            bridge = inner is not None and inner.get("type") in {"pci-bridge", "cardbus-bridge"}
            endpoint = header_type(name) == 0
            assert params["is_assignable"] == ("true" if endpoint and not bridge else "false"), name
            sriov = Path("/sys/bus/pci/devices", hostdev.pci_sysfs_name(name), "sriov_totalvfs")
            assert ("totalvfs" in params) == sriov.exists()
        else:
            assert params["is_assignable"] == "true"


def test_caps_select_devices_as_libvirts_flags_do(system_libvirt, devices_actor):
    proxy = DevicesProxy(devices_actor)
    pci = proxy.list_by_caps(("pci",)).get(timeout=30)
    assert set(pci) == set(virsh(system_libvirt.uri, "nodedev-list", "--cap", "pci").split())
    both = proxy.list_by_caps(("pci", "net")).get(timeout=30)
    assert {entry["params"]["capability"] for entry in both.values()} == {"pci", "net"}
    # an unknown capability counts as "system", as in VDSM
    assert set(proxy.list_by_caps(("no-such-cap",)).get(timeout=30)) == {"computer"}


def test_changing_the_vfs_of_a_device_without_sriov_fails_as_vdsm_does(devices_actor):
    proxy = DevicesProxy(devices_actor)
    pci = proxy.list_by_caps(("pci",)).get(timeout=30)
    without = next(name for name, entry in pci.items() if "totalvfs" not in entry["params"])
    for name in (without, "pci_0000_ff_1f_7", "net_lo_00_00_00_00_00_00"):
        with pytest.raises(HostdevError) as raised:
            proxy.change_numvfs(name, 1).get(timeout=30)
        assert raised.value.code == 100


def test_a_libvirt_without_node_devices_lists_none(tmp_path_factory, embed_root):
    with (
        embedded_host(tmp_path_factory, embed_root) as host,
        host.client() as cli,
    ):
        assert cli.Host.hostdevListByCaps() == {}
        assert cli.Host.hostdevListByCaps(caps=["pci"]) == {}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root) as running:
        yield running


def test_hostdev_verbs_refuse_bad_input(host: EmbeddedHost):
    bad = (
        ("Host.hostdevListByCaps", {"caps": "pci"}, -32602),
        ("Host.hostdevListByCaps", {"caps": [1, 2]}, -32602),
        ("Host.hostdevListByCaps", {"caps": {"pci": True}}, -32602),
        ("Host.hostdevChangeNumvfs", {"deviceName": "pci_0000_00_03_0", "numvfs": 1}, 100),
        ("Host.hostdevChangeNumvfs", {"deviceName": "no-such-device", "numvfs": 1}, 100),
        ("Host.hostdevChangeNumvfs", {"deviceName": "pci_0000_00_03_0", "numvfs": -1}, 91),
        ("Host.hostdevChangeNumvfs", {"deviceName": "pci_0000_00_03_0", "numvfs": "two"}, -32602),
        ("Host.hostdevChangeNumvfs", {"deviceName": 7, "numvfs": 1}, -32602),
        ("Host.hostdevChangeNumvfs", {"numvfs": 1}, -32602),
        ("Host.hostdevChangeNumvfs", {"deviceName": "pci_0000_00_03_0"}, -32602),
    )
    with host.client() as cli:
        for method, params, code in bad:
            with pytest.raises(ServerError) as raised:
                cli.call(method, params)
            assert raised.value.code == code, (method, params)
