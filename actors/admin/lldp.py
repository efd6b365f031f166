"""LLDP information of the host's NICs, as VDSM's Host.getLldp reports it.

    {nic: {"enabled": bool, "tlvs": [{"name", "type", "oui"?, "subtype"?, "properties"}]}}

VDSM asks lldpad (lldptool) whether LLDP runs on each NIC that is up and, if so,
for the TLVs its neighbour sent. An empty filter means every NIC. Here the agent
is lldpd (Debian's `lldpd`, read through `lldpcli -f json0`), when its control
socket exists; its neighbour's record becomes the TLVs lldptool would show, with
VDSM's names, types and property keys (lib/vdsm/network/lldpad/lldptool.py).
Without an LLDP agent every NIC reports `enabled: False` and no TLVs.

Blocking (sysfs reads, the agent's calls); run on a worker of the devices actor.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hostvisor.actors.admin.errors import HostdevError

NET = Path("/sys/class/net")
LLDPD_SOCKET = Path("/run/lldpd.socket")
LLDPCLI = "/usr/sbin/lldpcli"
LLDPCLI_TIMEOUT = 10.0

Agent = Callable[[str], list[dict[str, Any]] | None]
"""Returns the TLVs of a NIC whose LLDP is enabled, or None when LLDP is off there."""


def no_agent(_nic: str) -> list[dict[str, Any]] | None:
    """No LLDP agent runs on this host: LLDP is off on every NIC."""
    return None


def nics(root: Path = NET) -> list[str]:
    """The host's NICs: network interfaces backed by a device (not virtual ones)."""
    return sorted(path.name for path in root.iterdir() if (path / "device").exists())


def _is_up(nic: str, root: Path) -> bool:
    try:
        return (root / nic / "operstate").read_text().strip() == "up"
    except OSError:
        return False


def lldp_info(
    devices: Sequence[str] | None, *, agent: Agent = no_agent, root: Path = NET
) -> dict[str, dict[str, Any]]:
    """Return getLldp's `info` for `devices` (None or empty: every NIC; blocking).

    Raises:
        HostdevError: a named device is not a network interface of this host.
    """
    names = list(devices) if devices else nics(root)
    for name in names:
        if "/" in name or name in {"", ".", ".."} or not (root / name).exists():
            raise HostdevError(device=name, reason="no such network interface")
    info = {}
    for name in names:
        tlvs = agent(name) if _is_up(name, root) else None
        info[name] = {"enabled": tlvs is not None, "tlvs": tlvs or []}
    return info


# -- lldpd ------------------------------------------------------------------------------------

IEEE8021, IEEE8023 = 0x0080C2, 0x00120F
_ID_SUBTYPES = {
    "mac": "MAC",
    "ifname": "IfName",
    "ifalias": "IfAlias",
    "local": "Local",
    "ip": "IP",
}
"""lldpd's chassis/port id types -> the subtype names lldptool prints."""


class LldpdAgent:
    """Reads LLDP from a running lldpd through its control socket (blocking: lldpcli).

    Callable as an `Agent`: None when lldpd is not running (no socket) or does not
    manage the NIC, else the TLVs of the NIC's first neighbour ([] when none).
    """

    def __init__(self, socket: Path = LLDPD_SOCKET, lldpcli: str = LLDPCLI) -> None:
        """Talk to the lldpd behind `socket`."""
        self.socket = socket
        self.lldpcli = lldpcli

    def _show(self, *what: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [self.lldpcli, "-u", str(self.socket), "-f", "json0", "show", *what],
            capture_output=True,
            text=True,
            timeout=LLDPCLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            return []
        document = json.loads(done.stdout or "{}")
        interfaces: list[dict[str, Any]] = []
        for entry in document.get("lldp", []):
            interfaces.extend(entry.get("interface", []))
        return interfaces

    def __call__(self, nic: str) -> list[dict[str, Any]] | None:
        """The TLVs lldpd received on `nic`, or None when LLDP is off there."""
        if not self.socket.exists():
            return None
        managed = [
            entry for entry in self._show("interfaces", "ports", nic) if entry.get("name") == nic
        ]
        if not managed or _value(managed[0].get("status")) == "disabled":
            return None
        neighbours = [
            entry
            for entry in self._show("neighbors", "details", "ports", nic)
            if entry.get("name") == nic
        ]
        return tlvs_of(neighbours[0]) if neighbours else []


def _first(items: Any) -> dict[str, Any]:
    return items[0] if isinstance(items, list) and items else {}


def _value(items: Any) -> str | None:
    value = _first(items).get("value")
    return None if value is None else str(value)


def _tlv(
    tlv_type: int, name: str, properties: dict[str, str], oui: int = 0, subtype: int = 0
) -> dict[str, Any]:
    tlv: dict[str, Any] = {"type": tlv_type, "name": name, "properties": properties}
    if oui:
        tlv["oui"] = oui
        tlv["subtype"] = subtype
    return tlv


def _id_tlv(tlv_type: int, name: str, key: str, ids: Any) -> dict[str, Any] | None:
    ident = _first(ids)
    if "value" not in ident:
        return None
    subtype = _ID_SUBTYPES.get(str(ident.get("type", "")), str(ident.get("type", "")))
    return _tlv(tlv_type, name, {f"{key} subtype": subtype, key: str(ident["value"])})


def tlvs_of(neighbour: dict[str, Any]) -> list[dict[str, Any]]:
    """One lldpd neighbour record (json0) as VDSM's TLV list (pure)."""
    chassis, port = _first(neighbour.get("chassis")), _first(neighbour.get("port"))
    tlvs = [
        _id_tlv(1, "Chassis ID", "chassis ID", chassis.get("id")),
        _id_tlv(2, "Port ID", "port ID", port.get("id")),
    ]
    singles = (
        (3, "Time to Live", _value(port.get("ttl"))),
        (4, "Port Description", _value(port.get("descr"))),
        (5, "System Name", _value(chassis.get("name"))),
        (6, "System Description", _value(chassis.get("descr"))),
    )
    for tlv_type, name, value in singles:
        if value is not None:
            tlvs.append(_tlv(tlv_type, name, {name.lower(): value}))
    capabilities = chassis.get("capability") or []
    if capabilities:
        every = ", ".join(str(cap.get("type")) for cap in capabilities)
        enabled = ", ".join(str(cap.get("type")) for cap in capabilities if cap.get("enabled"))
        tlvs.append(
            _tlv(
                7,
                "System Capabilities",
                {"system capabilities": every, "enabled capabilities": enabled},
            )
        )
    address = _value(chassis.get("mgmt-ip"))
    if address is not None:
        properties = {
            "management address subtype": "IPv6" if ":" in address else "IPv4",
            "management address": address,
            "interface numbering subtype": "Ifindex",
            "interface numbering": _value(chassis.get("mgmt-iface")) or "",
        }
        tlvs.append(_tlv(8, "Management Address", properties))
    for vlan in neighbour.get("vlan") or port.get("vlan") or []:
        if vlan.get("pvid"):
            tlvs.append(
                _tlv(0x7F, "Port VLAN ID", {"Port VLAN ID": str(vlan.get("vlan-id"))}, IEEE8021, 1)
            )
        if vlan.get("value"):
            properties = {"VLAN ID": str(vlan.get("vlan-id")), "VLAN Name": str(vlan["value"])}
            tlvs.append(_tlv(0x7F, "VLAN Name", properties, IEEE8021, 3))
    mtu = _value(port.get("mfs"))
    if mtu is not None:
        tlvs.append(_tlv(0x7F, "MTU", {"mtu": mtu}, IEEE8023, 4))
    return [tlv for tlv in tlvs if tlv is not None]
