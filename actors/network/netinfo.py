"""The host's network devices, in the shapes VDSM reports them.

`network_caps` is the network part of `getCapabilities` and all of
`getNetworkCapabilities`; `interface_stats` is the network part of `Host.getStats`
(reference/vdsm-wire.md §3.2 and §5). Both read one netlink dump through an
`IPRoute` opened in the managed namespace, plus what netlink does not carry: a
NIC's speed and duplex (the ethtool ioctl) and IPv6 autoconf (/proc/sys/net). All
three follow the namespace of the calling thread, so these run in the namespace's
worker (`netns.NamespaceWorker`); /sys/class/net would not, and is not read.

VDSM's types are kept even where they look odd: a device's `mtu` is a string
(VDSM stringifies it for engines older than 3.7, and every engine asks so), a
NIC's `speed` is an int, and every statistics counter is a string. Bridge options
are named as in /sys/class/net/<bridge>/bridge/ (netlink's IFLA_BR_FORWARD_DELAY is
`forward_delay`; IFLA_BR_MCAST_* are `multicast_*`), with sysfs's units.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from hostvisor.actors.network.kernel import (
    IFA_F_PERMANENT,
    RT_TABLE_MAIN,
    SCOPE_LINK,
    Addr,
    Link,
    NetState,
    ipv6_conf,
    read_state,
)

_IFA_F_SECONDARY = 0x01
_DEFAULT_SPEED = 1000  # Mb/s that VDSM reports for a link whose speed is unknown
_SIOCETHTOOL = 0x8946
_ETHTOOL_GSET = 1
_DUPLEX = {0: "half", 1: "full"}
_BOND_MODE_ACTIVE_BACKUP = 1
# Bond options reported besides `mode` when set (IFLA_BOND_<NAME> in netlink).
_BOND_OPTIONS = ("miimon", "updelay", "downdelay", "arp_interval", "xmit_hash_policy")
_BRIDGE_OPTS_SKIPPED = frozenset({"fdb_flush", "pad", "multi_boolopt"})
_MCAST = "mcast_"  # netlink's prefix of the multicast options; sysfs says "multicast_"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkView:
    """How one configured network sits on the devices, for the `networks` report."""

    name: str
    bridged: bool
    iface: str
    """The top device: the bridge, else the VLAN device, else the NIC or bond."""
    southbound: str
    """The device under the bridge (or the top device itself when bridgeless)."""
    vlan: int | None = None


def network_caps(
    ipr: IPRoute,
    networks: Mapping[str, NetworkView] | None = None,
    *,
    dirty: bool = False,
) -> dict[str, Any]:
    """Return VDSM's network capabilities (`getNetworkCapabilities`).

    Blocking: one netlink dump, an ethtool ioctl per NIC. Runs in the thread whose
    namespace is reported.

    Args:
        ipr: a netlink socket of the namespace to report.
        networks: the configured networks (the running config), by name.
        dirty: whether the running config differs from the safe one.

    Returns:
        `networks`, `bridges`, `nics`, `bondings`, `vlans`, `nameservers`,
        `supportsIPv6` and `netConfigDirty` ("True"/"False").
    """
    state = read_state(ipr)
    report: dict[str, Any] = {"bridges": {}, "nics": {}, "bondings": {}, "vlans": {}}
    devices: dict[str, dict[str, Any]] = {}
    for link in state.links:
        section, info = _device_info(link, state)
        if section is None:
            continue
        info.update(_ip_info(link, state))
        report[section][link.name] = info
        devices[link.name] = info
    report["networks"] = {
        name: _network_info(view, devices) for name, view in (networks or {}).items()
    }
    report["nameservers"] = nameservers()
    report["supportsIPv6"] = socket.has_ipv6 and Path("/proc/net/if_inet6").exists()
    report["netConfigDirty"] = str(bool(dirty))
    return report


def interface_stats(ipr: IPRoute) -> dict[str, Any]:
    """Return the network part of VDSM's `Host.getStats`, read now (blocking).

    Returns:
        `network` {iface: {name, rx, tx, rxErrors, txErrors, rxDropped, txDropped,
        speed, duplex, state, sampleTime}} with cumulative counters as strings, and
        the host-wide `rxDropped`/`txDropped` sums, also strings. VDSM reports those
        two sums swapped (rx under `txDropped`); so does this, for the engine's sake.
    """
    state = read_state(ipr, addresses=False)
    by_index = state.by_index()
    now = time.time()
    network: dict[str, dict[str, Any]] = {}
    rx_dropped = tx_dropped = 0
    for link in state.links:
        counters = link.counters
        rx_dropped += counters.get("rx_dropped", 0)
        tx_dropped += counters.get("tx_dropped", 0)
        _speed, duplex = ethtool_link(link.name) if link.is_nic else (0, "unknown")
        network[link.name] = {
            "name": link.name,
            "rx": str(counters.get("rx_bytes", 0)),
            "tx": str(counters.get("tx_bytes", 0)),
            "rxErrors": str(counters.get("rx_errors", 0)),
            "txErrors": str(counters.get("tx_errors", 0)),
            "rxDropped": str(counters.get("rx_dropped", 0)),
            "txDropped": str(counters.get("tx_dropped", 0)),
            "speed": str(_link_speed(link, by_index) or _DEFAULT_SPEED),
            "duplex": duplex,
            "state": "up" if link.running else "down",
            "sampleTime": now,
        }
    return {"network": network, "rxDropped": str(tx_dropped), "txDropped": str(rx_dropped)}


def nameservers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """Return the nameserver addresses of a resolv.conf, in order."""
    try:
        text = path.read_text()
    except OSError:
        return []
    servers = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":  # noqa: PLR2004 - keyword and value
            servers.append(words[1])
    return servers


def ethtool_link(name: str) -> tuple[int, str]:
    """Return a device's (speed in Mb/s, duplex) from the ethtool ioctl; (0, "unknown") if none.

    Runs in the namespace of the calling thread (the socket is made there).
    """
    buffer = array.array("B", struct.pack("I", _ETHTOOL_GSET) + bytes(40))
    request = struct.pack("16sP", name.encode()[:15], buffer.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, request)
    except OSError:
        return 0, "unknown"
    data = buffer.tobytes()
    speed, duplex = struct.unpack_from("HB", data, 12)
    (speed_hi,) = struct.unpack_from("H", data, 28)
    speed |= speed_hi << 16
    return (speed if 0 < speed < 2**16 - 1 else 0), _DUPLEX.get(duplex, "unknown")


# -- the capability report --------------------------------------------------------------


def _device_info(link: Link, state: NetState) -> tuple[str | None, dict[str, Any]]:
    """Return the report section a device belongs in and its type-specific fields."""
    by_index = state.by_index()
    if link.kind == "bridge":
        ports = sorted(port.name for port in state.links if port.master == link.index)
        return "bridges", {
            "ports": ports,
            "stp": "on" if link.info.get("IFLA_BR_STP_STATE") else "off",
            "opts": _bridge_opts(link),
        }
    if link.kind == "bond":
        return "bondings", _bond_info(link, state)
    if link.kind == "vlan":
        parent = by_index.get(link.parent) if link.parent is not None else None
        return "vlans", {"iface": parent.name if parent else "", "vlanid": link.vlan_id}
    if link.is_nic:
        speed = ethtool_link(link.name)[0] if link.operstate == "up" else 0
        return "nics", {"hwaddr": link.mac, "speed": speed}
    return None, {}


def _network_info(view: NetworkView, devices: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """VDSM's `networks[name]`: the top device's IP fields plus how it is built."""
    top = devices.get(view.iface, {})
    ip_fields = {k: v for k, v in top.items() if k not in ("ports", "stp", "opts", "hwaddr")}
    info: dict[str, Any] = {
        **ip_fields,
        "bridged": view.bridged,
        "iface": view.iface,
        "southbound": view.southbound,
        "switch": "legacy",
    }
    if view.vlan is not None:
        info["vlanid"] = view.vlan
    if view.bridged:
        info["ports"] = top.get("ports", [])
        info["stp"] = top.get("stp", "off")
    else:
        info["interface"] = view.iface
    return info


def _ip_info(link: Link, state: NetState) -> dict[str, Any]:
    """Return the address, route and DHCP fields every reported device carries."""
    routes = [r for r in state.routes_of(link.index) if r.dst_len == 0 and r.gateway]
    gateway = _gateway(routes, socket.AF_INET)
    ipv6gateway = _gateway(routes, socket.AF_INET6)
    addrs = [a for a in state.addrs_of(link.index) if a.scope != SCOPE_LINK]
    ipv4 = [a for a in addrs if a.family == socket.AF_INET]
    ipv6 = [a for a in addrs if a.family == socket.AF_INET6]
    primary = _primary_ipv4(ipv4, gateway)
    main_defaults = {r.gateway for r in routes if r.table == RT_TABLE_MAIN}
    return {
        "addr": primary.address if primary else "",
        "netmask": _netmask(primary.prefix) if primary else "",
        "ipv4addrs": [a.cidr for a in ipv4],
        "ipv6addrs": [a.cidr for a in ipv6],
        "gateway": gateway,
        "ipv6gateway": ipv6gateway or "::",
        "ipv4defaultroute": bool(gateway) and gateway in main_defaults,
        "mtu": str(link.mtu),
        "dhcpv4": any(not a.flags & IFA_F_PERMANENT for a in ipv4),
        # A DHCPv6 lease is a dynamic /128; SLAAC gives dynamic /64s.
        "dhcpv6": any(not a.flags & IFA_F_PERMANENT and a.prefix == 128 for a in ipv6),  # noqa: PLR2004
        "ipv6autoconf": ipv6_conf(link.name, "autoconf") == "1",
    }


def _gateway(routes: list[Any], family: int) -> str:
    """Return the one default gateway of a device in a family, or "" if none or ambiguous."""
    unique = {r.gateway for r in routes if r.family == family}
    return unique.pop() if len(unique) == 1 else ""


def _primary_ipv4(ipv4: list[Addr], gateway: str) -> Addr | None:
    """Prefer the primary address in the gateway's subnet, else the first address."""
    if gateway:
        for a in ipv4:
            network = ipaddress.ip_network(a.cidr, strict=False)
            if not a.flags & _IFA_F_SECONDARY and ipaddress.ip_address(gateway) in network:
                return a
    return ipv4[0] if ipv4 else None


def _netmask(prefix: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


def _bridge_opts(link: Link) -> dict[str, str]:
    """The bridge's options by their sysfs names, values as sysfs writes them."""
    opts: dict[str, str] = {}
    for attr, value in link.info.items():
        if not attr.startswith("IFLA_BR_"):
            continue
        name = attr.removeprefix("IFLA_BR_").lower()
        if name in _BRIDGE_OPTS_SKIPPED:
            continue
        if name.startswith(_MCAST):
            name = "multicast_" + name.removeprefix(_MCAST)
        opts[name] = _bridge_value(value)
    return opts


def _bridge_value(value: Any) -> str:
    if isinstance(value, dict) and "prio" in value:  # a bridge id, as sysfs prints it
        return f"{value['prio']:04x}.{value['addr'].replace(':', '')}"
    return str(value)


def _bond_info(link: Link, state: NetState) -> dict[str, Any]:
    by_index = state.by_index()
    slaves = sorted(s.name for s in state.links if s.master == link.index)
    active = link.info.get("IFLA_BOND_ACTIVE_SLAVE")
    return {
        "hwaddr": link.mac,
        "slaves": slaves,
        "active_slave": by_index[active].name if active in by_index else "",
        "opts": _bond_opts(link),
        "speed": _link_speed(link, by_index),
        "switch": "legacy",
    }


def _bond_opts(link: Link) -> dict[str, str]:
    """The bond's mode (numeric, as the engine sends it) and its options that are set."""
    opts = {"mode": str(link.info.get("IFLA_BOND_MODE", 0))}
    for name in _BOND_OPTIONS:
        value = link.info.get(f"IFLA_BOND_{name.upper()}")
        if value:
            opts[name] = str(value)
    return opts


def _link_speed(link: Link, by_index: Mapping[int, Link]) -> int:
    """VDSM's speed rules: a NIC's own, a VLAN's parent's, a bond's from its slaves."""
    if link.kind == "vlan":
        parent = by_index.get(link.parent) if link.parent is not None else None
        return _link_speed(parent, by_index) if parent else 0
    if link.kind == "bond":
        slaves = [s for s in by_index.values() if s.master == link.index]
        if link.info.get("IFLA_BOND_MODE") == _BOND_MODE_ACTIVE_BACKUP:
            active = by_index.get(link.info.get("IFLA_BOND_ACTIVE_SLAVE", -1))
            return _link_speed(active, by_index) if active else 0
        return sum(_link_speed(s, by_index) for s in slaves)
    if link.is_nic and link.operstate == "up":
        return ethtool_link(link.name)[0]
    return 0
