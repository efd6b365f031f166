"""NIC updates by VM.updateDevice: link state and network, as the Engine sends them.

The Engine's `UpdateVmInterfaceVDSCommand` sends the NIC as
`LibvirtVmXmlBuilder.buildHotplugNic` writes it (`<hotplug><devices><interface>…`
with its `<metadata>`); VDSM also takes the field form (alias, linkActive,
network). The NIC sits on a real Linux bridge; what changed shows in the domain
XML the Engine reads (`Host.dumpxmls`), in libvirt's own live XML, and in the
kernel (the tap moves to the other bridge).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

NO_VM, VM_DOWN, MISSING, UPDATE_FAILED, INVALID = 1, 6, 11, 56, 91
OVIRT_VM = "http://ovirt.org/vm/1.0"
MAC = "56:6f:00:00:00:01"


def engine_nic_update(alias: str, bridge: str, *, link: str) -> str:
    """The XML `UpdateVmInterfaceVDSCommand` sends (buildHotplugNic), for one NIC."""
    return (
        "<?xml version='1.0' encoding='UTF-8'?><hotplug><devices>"
        f'<interface type="bridge"><model type="virtio"/><link state="{link}"/>'
        f'<source bridge="{bridge}"/><alias name="{alias}"/><mac address="{MAC}"/>'
        f'</interface></devices><metadata><ovirt-vm:vm xmlns:ovirt-vm="{OVIRT_VM}">'
        f'<ovirt-vm:device alias="{alias}" mac_address="{MAC}"><ovirt-vm:custom/>'
        "</ovirt-vm:device></ovirt-vm:vm></metadata></hotplug>"
    )


def bridge_nic(bridge: str, mac: str, alias: str) -> str:
    """A NIC as the Engine writes it (`LibvirtVmXmlBuilder.writeInterface`), on `bridge`."""
    return (
        f'<interface type="bridge"><model type="virtio"/><link state="up"/>'
        f'<source bridge="{bridge}"/><alias name="{alias}"/><mac address="{mac}"/></interface>'
    )


def nic_of(xml: str, alias: str) -> ET.Element:
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    [nic] = [
        i
        for i in root.iterfind("devices/interface")
        if i.find(f"alias[@name='{alias}']") is not None
    ]
    return nic


def link_state(nic: ET.Element) -> str:
    link = nic.find("link")
    return "up" if link is None else link.get("state", "up")


def bridge_of(nic: ET.Element) -> str:
    source = nic.find("source")
    assert source is not None
    return source.get("bridge", "")


def dumped(cli: Client, vm_id: str) -> str:
    xml: str = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    return xml


def live(host: EmbeddedHost, vm_id: str) -> str:
    xml: str = host.tree.connection().lookupByUUIDString(vm_id).XMLDesc(0)
    return xml


def master_of(tap: str) -> str:
    """The bridge the kernel has the tap on."""
    link = Path(f"/sys/class/net/{tap}/master")
    return link.resolve().name if link.exists() else ""


@pytest.fixture
def nic_vm(halting_vm: Any, bridges: Any) -> tuple[str, str]:
    alias = f"ua-{uuid.uuid4()}"
    vm_id, _disk = halting_vm(nic=bridge_nic(bridges.first, MAC, alias), spice=False)
    return vm_id, alias


def test_the_engines_nic_update_takes_the_link_down_and_up(host: EmbeddedHost, cli: Client, nic_vm):
    vm_id, alias = nic_vm
    network = bridge_of(nic_of(live(host, vm_id), alias))
    before = cli.VM.getStats(vmID=vm_id)[0]["hash"]

    assert (
        cli.VM.updateDevice(
            vmID=vm_id,
            params={
                "deviceType": "interface",
                "xml": engine_nic_update(alias, network, link="down"),
            },
        )
        == {}
    )

    assert link_state(nic_of(live(host, vm_id), alias)) == "down"
    assert link_state(nic_of(dumped(cli, vm_id), alias)) == "down"
    assert cli.VM.getStats(vmID=vm_id)[0]["hash"] != before  # the Engine re-reads the devices

    cli.VM.updateDevice(
        vmID=vm_id,
        params={"deviceType": "interface", "xml": engine_nic_update(alias, network, link="up")},
    )
    assert link_state(nic_of(live(host, vm_id), alias)) == "up"
    assert link_state(nic_of(dumped(cli, vm_id), alias)) == "up"


def test_a_nic_moves_to_another_network(host: EmbeddedHost, cli: Client, nic_vm, bridges):
    vm_id, alias = nic_vm
    tap = nic_of(live(host, vm_id), alias).find("target").get("dev")  # type: ignore[union-attr]
    assert master_of(tap) == bridges.first

    cli.VM.updateDevice(
        vmID=vm_id,
        params={
            "deviceType": "interface",
            "xml": engine_nic_update(alias, bridges.second, link="up"),
        },
    )

    assert bridge_of(nic_of(live(host, vm_id), alias)) == bridges.second
    assert bridge_of(nic_of(dumped(cli, vm_id), alias)) == bridges.second
    assert master_of(tap) == bridges.second

    # VDSM's field form: back to the first network, link down.
    cli.VM.updateDevice(
        vmID=vm_id,
        params={
            "deviceType": "interface",
            "alias": alias,
            "network": bridges.first,
            "linkActive": False,
            "portMirroring": [],
        },
    )
    nic = nic_of(live(host, vm_id), alias)
    assert (bridge_of(nic), link_state(nic)) == (bridges.first, "down")
    assert master_of(tap) == bridges.first


def _code(call: Any) -> int:
    with pytest.raises(ServerError) as caught:
        call()
    return caught.value.code


def test_bad_nic_updates_answer_vdsms_codes_and_change_nothing(
    host: EmbeddedHost, cli: Client, nic_vm, bridges
):
    vm_id, alias = nic_vm
    before = live(host, vm_id)

    def update(params: Any, vm: str = vm_id) -> Any:
        return lambda: cli.VM.updateDevice(vmID=vm, params=params)

    down = engine_nic_update(alias, bridges.first, link="down")
    cases = {
        "unknown VM": (NO_VM, update({"deviceType": "interface", "xml": down}, str(uuid.uuid4()))),
        "no alias, no xml": (MISSING, update({"deviceType": "interface", "linkActive": False})),
        "xml not a string": (INVALID, update({"deviceType": "interface", "xml": 42})),
        "not XML": (INVALID, update({"deviceType": "interface", "xml": "<hotplug"})),
        "no interface": (INVALID, update({"deviceType": "interface", "xml": "<hotplug/>"})),
        "linkActive not a boolean": (
            INVALID,
            update({"deviceType": "interface", "alias": alias, "linkActive": "sometimes"}),
        ),
        "network not a string": (
            INVALID,
            update({"deviceType": "interface", "alias": alias, "network": ["a"]}),
        ),
        "unknown alias": (
            UPDATE_FAILED,
            update({"deviceType": "interface", "alias": "ua-nope", "linkActive": False}),
        ),
        "no such bridge": (
            UPDATE_FAILED,
            update({"deviceType": "interface", "alias": alias, "network": "hv4-missing"}),
        ),
    }
    codes = {name: _code(call) for name, (_expected, call) in cases.items()}

    assert codes == {name: expected for name, (expected, _call) in cases.items()}
    nic = nic_of(live(host, vm_id), alias)
    assert (bridge_of(nic), link_state(nic)) == (bridges.first, "up")
    assert link_state(nic_of(before, alias)) == "up"

    host.tree.connection().lookupByUUIDString(vm_id).destroy()
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Down", 30, "Down")
    assert _code(update({"deviceType": "interface", "xml": down})) == VM_DOWN
