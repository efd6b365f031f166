"""NIC updates: VM.updateDevice for interfaces (link state, network), as VDSM does them.

The Engine (4.2+) sends `{deviceType: "interface", xml}` where `xml` is what
`LibvirtVmXmlBuilder.buildHotplugNic` writes (`UpdateVmInterfaceVDSCommand`):
`<hotplug><devices><interface type="bridge">` with the NIC's `<alias name="ua-…">`,
`<mac>`, `<link state="up|down">`, `<source bridge="<network>">`, and a
`<metadata><ovirt-vm:vm><ovirt-vm:device alias=… mac_address=…>` holding its port
mirroring and custom properties. Older Engines (and VDSM's own API) send the
fields instead: `{deviceType, alias, linkActive, network, portMirroring, …}`.
VDSM (`vm.py` `updateDevice` / `_updateInterfaceDevice` / `setLinkAndNetwork`)
reads either into the NIC's alias, link state and network, sets `<link state>` and
`<source bridge>` on the live `<interface>` and calls
`updateDeviceFlags(xml, AFFECT_LIVE)`.

Departures, said here once: port mirroring (VDSM's tc rules through supervdsm)
is not set up: a request carrying it is logged and applied without it; an empty
network (VDSM's `;vdsmdummy;` bridge) takes the link down and keeps the NIC on
its bridge; a NIC that is not on a bridge (`type="ethernet"`) changes its link
state only.

`nic_update` and `updated_interface` are pure; `update_nic` blocks on libvirt and
runs on a worker.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libvirt

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.errors import MissingParameter, UpdateDeviceFailed

log = logging.getLogger(__name__)

_META_DEVICE = f"{{{domxml.OVIRT_VM}}}device"
_META_MIRRORING = f"{{{domxml.OVIRT_VM}}}portMirroring"
_META_NETWORK = f"{{{domxml.OVIRT_VM}}}network"


@dataclass(frozen=True, slots=True, kw_only=True)
class NicUpdate:
    """What an interface update asks for: None leaves a property as it is."""

    alias: str | None
    mac: str | None = None
    link_up: bool | None = None
    network: str | None = None
    port_mirroring: tuple[str, ...] = ()


def nic_update(params: Mapping[str, Any]) -> NicUpdate:
    """Read an interface update from VM.updateDevice's params (XML or fields). Pure.

    Raises:
        MissingParameter: neither `xml` nor `alias`.
        InvalidArgument: an unreadable XML, or a field of the wrong type.
    """
    xml = params.get("xml")
    if xml is not None:
        if not isinstance(xml, str):
            raise InvalidArgument(param="params.xml", reason="not a string")
        return _from_xml(xml)
    if "alias" not in params:
        raise MissingParameter(param="params.alias")
    alias = params["alias"]
    if not isinstance(alias, str) or not alias:
        raise InvalidArgument(param="params.alias", reason="not a device alias")
    link = params.get("linkActive")
    network = params.get("network")
    if network is not None and not isinstance(network, str):
        raise InvalidArgument(param="params.network", reason="not a string")
    mirroring = params.get("portMirroring", [])
    if not isinstance(mirroring, list) or not all(isinstance(n, str) for n in mirroring):
        raise InvalidArgument(param="params.portMirroring", reason="not a list of networks")
    return NicUpdate(
        alias=alias,
        link_up=None if link is None else _boolean(link, "params.linkActive"),
        network=network,
        port_mirroring=tuple(mirroring),
    )


def _boolean(value: Any, name: str) -> bool:
    """VDSM's `conv.tobool`: a bool, or "true"/"false" in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidArgument(param=name, reason="not a boolean")


def _from_xml(xml: str) -> NicUpdate:
    domxml.check_untrusted(xml)
    root = ET.fromstring(xml)  # noqa: S314 - checked by check_untrusted
    interface = root if root.tag == "interface" else root.find("devices/interface")
    if interface is None:
        raise InvalidArgument(param="params.xml", reason="no <interface> in it")
    alias = interface.find("alias")
    mac = interface.find("mac")
    link = interface.find("link")
    source = interface.find("source")
    name = alias.get("name") if alias is not None else None
    mac_address = mac.get("address") if mac is not None else None
    if not name and not mac_address:
        raise InvalidArgument(param="params.xml", reason="the interface has no alias and no MAC")
    mirroring: tuple[str, ...] = ()
    for device in root.iterfind(f"metadata/*/{_META_DEVICE}"):
        if device.get("alias") == name or device.get("mac_address") == mac_address:
            mirroring = tuple(
                (n.text or "").strip()
                for n in device.iterfind(f"{_META_MIRRORING}/{_META_NETWORK}")
            )
    network = source.get("bridge") if source is not None else None
    return NicUpdate(
        alias=name or None,
        mac=mac_address,
        link_up=None if link is None else link.get("state", "up") != "down",
        network=network,
        port_mirroring=mirroring,
    )


def updated_interface(live_xml: str, update: NicUpdate) -> str:
    """The live `<interface>` the update names, changed as asked, as XML text. Pure.

    Raises:
        UpdateDeviceFailed: the domain has no such interface.
    """
    root = ET.fromstring(live_xml)  # noqa: S314 - libvirt's own XML
    interface = _find(root, update)
    if interface is None:
        raise UpdateDeviceFailed(reason=f"no interface with alias {update.alias} ({update.mac})")
    link_up = update.link_up
    source = interface.find("source")
    if update.network is not None:
        if update.network == "":
            link_up = False  # no network: VDSM's dummy bridge, link down
        elif source is not None and source.get("bridge") is not None:
            source.set("bridge", update.network)
        elif interface.get("type") != "bridge":
            log.info("interface %s is not on a bridge: its network stays", update.alias)
    if link_up is not None:
        link = interface.find("link")
        if link is None:
            link = ET.SubElement(interface, "link")
        link.set("state", "up" if link_up else "down")
    if update.port_mirroring:
        log.warning(
            "interface %s: port mirroring of %s is not set up on this host",
            update.alias,
            ", ".join(update.port_mirroring),
        )
    interface.tail = None
    return ET.tostring(interface, encoding="unicode")


def _find(root: ET.Element, update: NicUpdate) -> ET.Element | None:
    interfaces = list(root.iterfind("devices/interface"))
    if update.alias:
        for interface in interfaces:
            alias = interface.find("alias")
            if alias is not None and alias.get("name") == update.alias:
                return interface
    if update.mac:
        for interface in interfaces:
            mac = interface.find("mac")
            if mac is not None and (mac.get("address") or "").lower() == update.mac.lower():
                return interface
    return None


def update_nic(domain: Any, update: NicUpdate) -> str:
    """Apply `update` to the running domain's NIC; return the live XML after (blocks).

    Raises:
        UpdateDeviceFailed: no such interface, or libvirt refused the change.
        libvirt.libvirtError: the domain is gone (VIR_ERR_NO_DOMAIN).
    """
    element = updated_interface(domain.XMLDesc(0), update)
    try:
        domain.updateDeviceFlags(element, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise
        raise UpdateDeviceFailed(alias=update.alias, reason=str(error)) from None
    live: str = domain.XMLDesc(0)
    return live
