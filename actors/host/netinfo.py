"""The host's network devices, in the shapes VDSM reports them.

Plain blocking readers: one pyroute2 (netlink) dump of links, addresses and routes,
plus /sys/class/net for what netlink does not carry (bridge options, ports, link
speed). `network_caps` is the network part of `getCapabilities` and all of
`getNetworkCapabilities`; `interface_stats` is the network part of `Host.getStats`
(reference/vdsm-wire.md §3.2 and §5).

VDSM's types are kept even where they look odd: a device's `mtu` is a string
(VDSM stringifies it for engines older than 3.7, and every engine asks so), a
NIC's `speed` is an int, and every statistics counter is a string.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from hostvisor.actors.host.hardware import read_text

_NET = Path("/sys/class/net")
_IFF_UP = 0x1
_IFF_RUNNING = 0x40
_IFA_F_SECONDARY = 0x01
_IFA_F_PERMANENT = 0x80
_SCOPE_LINK = 253
_RT_TABLE_MAIN = 254
_RTN_UNICAST = 1
_DEFAULT_SPEED = 1000  # Mb/s that VDSM reports for a link whose speed is unknown
_BOND_MODE_ACTIVE_BACKUP = "1"
# Bond options reported besides `mode`, when set to something other than off/zero.
_BOND_OPTIONS = (
    "miimon",
    "updelay",
    "downdelay",
    "arp_interval",
    "arp_ip_target",
    "primary",
    "xmit_hash_policy",
    "lacp_rate",
    "ad_select",
    "fail_over_mac",
)
_BOND_DEFAULTS = {"0", "", "layer2", "slow", "stable", "none"}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Link:
    """One network device, from one netlink link message."""

    index: int
    name: str
    kind: str | None
    address: str
    mtu: int
    flags: int
    parent: int | None
    vlan_id: int | None
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return bool(self.flags & _IFF_UP) and bool(self.flags & _IFF_RUNNING)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Addr:
    family: int
    address: str
    prefix: int
    scope: int
    flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Gateway:
    family: int
    gateway: str
    table: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Snapshot:
    links: list[_Link]
    addrs: dict[int, list[_Addr]]
    gateways: dict[int, list[_Gateway]]


def network_caps() -> dict[str, Any]:
    """Return VDSM's network capabilities of this host (`getNetworkCapabilities`).

    Returns:
        `networks` (always {} until setupNetworks exists), `bridges`, `nics`,
        `bondings`, `vlans`, `nameservers`, `supportsIPv6` and `netConfigDirty`
        ("False": nothing unpersisted yet).
    """
    snapshot = _snapshot(addresses=True)
    by_index = {link.index: link for link in snapshot.links}
    report: dict[str, Any] = {
        "networks": {},
        "bridges": {},
        "nics": {},
        "bondings": {},
        "vlans": {},
    }
    for link in snapshot.links:
        section, info = _device_info(link, by_index)
        if section is None:
            continue
        info.update(_ip_info(link, snapshot))
        report[section][link.name] = info
    report["nameservers"] = nameservers()
    report["supportsIPv6"] = socket.has_ipv6 and Path("/proc/net/if_inet6").exists()
    report["netConfigDirty"] = "False"
    return report


def interface_stats() -> dict[str, Any]:
    """Return the network part of VDSM's `Host.getStats`, read now.

    Returns:
        `network` {iface: {name, rx, tx, rxErrors, txErrors, rxDropped, txDropped,
        speed, duplex, state, sampleTime}} with cumulative counters as strings, and
        the host-wide `rxDropped`/`txDropped` sums, also strings. VDSM reports those
        two sums swapped (rx under `txDropped`); so does this, for the engine's sake.
    """
    snapshot = _snapshot(addresses=False)
    by_index = {link.index: link for link in snapshot.links}
    now = time.time()
    network: dict[str, dict[str, Any]] = {}
    rx_dropped = tx_dropped = 0
    for link in snapshot.links:
        counters = link.counters
        rx_dropped += counters.get("rx_dropped", 0)
        tx_dropped += counters.get("tx_dropped", 0)
        network[link.name] = {
            "name": link.name,
            "rx": str(counters.get("rx_bytes", 0)),
            "tx": str(counters.get("tx_bytes", 0)),
            "rxErrors": str(counters.get("rx_errors", 0)),
            "txErrors": str(counters.get("tx_errors", 0)),
            "rxDropped": str(counters.get("rx_dropped", 0)),
            "txDropped": str(counters.get("tx_dropped", 0)),
            "speed": str(_link_speed(link, by_index) or _DEFAULT_SPEED),
            "duplex": read_text(_NET / link.name / "duplex", "unknown") or "unknown",
            "state": "up" if link.running else "down",
            "sampleTime": now,
        }
    return {"network": network, "rxDropped": str(tx_dropped), "txDropped": str(rx_dropped)}


def nameservers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """Return the nameserver addresses of a resolv.conf, in order."""
    servers = []
    for line in read_text(path).splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":  # noqa: PLR2004 - keyword and value
            servers.append(words[1])
    return servers


# -- reading -------------------------------------------------------------------------------


def _snapshot(*, addresses: bool) -> _Snapshot:
    with IPRoute() as ipr:
        links = [_link(message) for message in ipr.get_links()]
        addrs: dict[int, list[_Addr]] = defaultdict(list)
        gateways: dict[int, list[_Gateway]] = defaultdict(list)
        if addresses:
            for message in ipr.get_addr():
                addrs[message["index"]].append(_addr(message))
            for family in (socket.AF_INET, socket.AF_INET6):
                for message in ipr.get_routes(family=family):
                    _add_gateway(gateways, message)
    return _Snapshot(links=links, addrs=addrs, gateways=gateways)


def _link(message: Any) -> _Link:
    info = message.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info else None
    data = info.get("IFLA_INFO_DATA") if info else None
    stats = message.get("IFLA_STATS64")
    names = ("rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")
    return _Link(
        index=message["index"],
        name=message.get("IFLA_IFNAME"),
        kind=kind,
        address=message.get("IFLA_ADDRESS") or "",
        mtu=message.get("IFLA_MTU") or 0,
        flags=message["flags"],
        parent=message.get("IFLA_LINK"),
        vlan_id=data.get("IFLA_VLAN_ID") if kind == "vlan" and data else None,
        counters={name: int(stats.get(name) or 0) for name in names} if stats else {},
    )


def _addr(message: Any) -> _Addr:
    return _Addr(
        family=message["family"],
        address=message.get("IFA_ADDRESS"),
        prefix=message["prefixlen"],
        scope=message["scope"],
        flags=message.get("IFA_FLAGS") or message["flags"],
    )


def _add_gateway(gateways: dict[int, list[_Gateway]], message: Any) -> None:
    gateway = message.get("RTA_GATEWAY")
    oif = message.get("RTA_OIF")
    if message["dst_len"] or message["type"] != _RTN_UNICAST or not gateway or oif is None:
        return
    table = message.get("RTA_TABLE") or message["table"]
    gateways[oif].append(_Gateway(family=message["family"], gateway=gateway, table=table))


# -- the capability report --------------------------------------------------------------


def _device_info(link: _Link, by_index: dict[int, _Link]) -> tuple[str | None, dict[str, Any]]:
    """Return the report section a device belongs in and its type-specific fields."""
    sysfs = _NET / link.name
    if link.kind == "bridge":
        return "bridges", {
            "ports": _listdir(sysfs / "brif"),
            "stp": _stp(sysfs),
            "opts": _bridge_opts(sysfs),
        }
    if link.kind == "bond":
        return "bondings", _bond_info(link, by_index)
    if link.kind == "vlan":
        parent = by_index.get(link.parent) if link.parent is not None else None
        return "vlans", {"iface": parent.name if parent else "", "vlanid": link.vlan_id}
    if _is_nic(link):
        info: dict[str, Any] = {"hwaddr": link.address, "speed": _nic_speed(link.name)}
        permanent = read_text(sysfs / "bonding_slave" / "perm_hwaddr")
        if permanent:
            info["permhwaddr"] = permanent
        return "nics", info
    return None, {}


def _is_nic(link: _Link) -> bool:
    """Physical devices, and the veth and dummy devices VDSM's tests treat as NICs."""
    if link.kind in ("veth", "dummy"):
        return True
    return link.kind is None and (_NET / link.name / "device").exists()


def _ip_info(link: _Link, snapshot: _Snapshot) -> dict[str, Any]:
    """Return the address, route and DHCP fields every reported device carries."""
    gateway = _gateway(snapshot.gateways[link.index], socket.AF_INET)
    ipv6gateway = _gateway(snapshot.gateways[link.index], socket.AF_INET6)
    addrs = [a for a in snapshot.addrs[link.index] if a.scope != _SCOPE_LINK]
    ipv4 = [a for a in addrs if a.family == socket.AF_INET]
    ipv6 = [a for a in addrs if a.family == socket.AF_INET6]
    primary = _primary_ipv4(ipv4, gateway)
    main_defaults = {g.gateway for g in snapshot.gateways[link.index] if g.table == _RT_TABLE_MAIN}
    return {
        "addr": primary.address if primary else "",
        "netmask": _netmask(primary.prefix) if primary else "",
        "ipv4addrs": [f"{a.address}/{a.prefix}" for a in ipv4],
        "ipv6addrs": [f"{a.address}/{a.prefix}" for a in ipv6],
        "gateway": gateway,
        "ipv6gateway": ipv6gateway or "::",
        "ipv4defaultroute": bool(gateway) and gateway in main_defaults,
        "mtu": str(link.mtu),
        "dhcpv4": any(not a.flags & _IFA_F_PERMANENT for a in ipv4),
        # A DHCPv6 lease is a dynamic /128; SLAAC gives dynamic /64s.
        "dhcpv6": any(not a.flags & _IFA_F_PERMANENT and a.prefix == 128 for a in ipv6),  # noqa: PLR2004
        "ipv6autoconf": read_text(Path(f"/proc/sys/net/ipv6/conf/{link.name}/autoconf")) == "1",
    }


def _gateway(gateways: list[_Gateway], family: int) -> str:
    """Return the one default gateway of a device in a family, or "" if none or ambiguous."""
    unique = {g.gateway for g in gateways if g.family == family}
    return unique.pop() if len(unique) == 1 else ""


def _primary_ipv4(ipv4: list[_Addr], gateway: str) -> _Addr | None:
    """Prefer the primary address in the gateway's subnet, else the first address."""
    if gateway:
        for a in ipv4:
            network = ipaddress.ip_network(f"{a.address}/{a.prefix}", strict=False)
            if not a.flags & _IFA_F_SECONDARY and ipaddress.ip_address(gateway) in network:
                return a
    return ipv4[0] if ipv4 else None


def _netmask(prefix: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in path.iterdir())
    except OSError:
        return []


def _stp(sysfs: Path) -> str:
    return "on" if read_text(sysfs / "bridge" / "stp_state") == "1" else "off"


def _bridge_opts(sysfs: Path) -> dict[str, str]:
    """Every readable bridge option, as sysfs writes it (write-only ones are skipped)."""
    opts = {}
    for name in _listdir(sysfs / "bridge"):
        value = read_text(sysfs / "bridge" / name, default="\0")
        if value != "\0":
            opts[name] = value
    return opts


def _bond_info(link: _Link, by_index: dict[int, _Link]) -> dict[str, Any]:
    bonding = _NET / link.name / "bonding"
    slaves = read_text(bonding / "slaves").split()
    return {
        "hwaddr": link.address,
        "slaves": slaves,
        "active_slave": read_text(bonding / "active_slave"),
        "opts": _bond_opts(bonding),
        "speed": _link_speed(link, by_index),
        "switch": "legacy",
    }


def _bond_opts(bonding: Path) -> dict[str, str]:
    """The bond's mode (numeric, as the engine sends it) and its non-default options."""
    opts = {"mode": _bond_value(read_text(bonding / "mode"))}
    for name in _BOND_OPTIONS:
        words = read_text(bonding / name).split()
        if words and words[0] not in _BOND_DEFAULTS:
            opts[name] = words[-1]
    return opts


def _bond_value(text: str) -> str:
    """Sysfs writes symbolic options as "name number" (e.g. "802.3ad 4"); keep the number."""
    words = text.split()
    return words[-1] if words else ""


# -- speeds --------------------------------------------------------------------------------


def _nic_speed(name: str) -> int:
    """Return a NIC's speed in Mb/s when it is up and the driver knows it, else 0."""
    if read_text(_NET / name / "operstate") != "up":
        return 0
    try:
        speed = int(read_text(_NET / name / "speed"))
    except ValueError:
        return 0
    return speed if 0 < speed < 2**16 - 1 else 0


def _link_speed(link: _Link, by_index: dict[int, _Link]) -> int:
    """VDSM's speed rules: a NIC's own, a VLAN's parent's, a bond's from its slaves."""
    if link.kind == "vlan":
        parent = by_index.get(link.parent) if link.parent is not None else None
        return _link_speed(parent, by_index) if parent else 0
    if link.kind == "bond":
        bonding = _NET / link.name / "bonding"
        if _bond_value(read_text(bonding / "mode")) == _BOND_MODE_ACTIVE_BACKUP:
            active = read_text(bonding / "active_slave")
            return _nic_speed(active) if active else 0
        return sum(_nic_speed(slave) for slave in read_text(bonding / "slaves").split())
    if _is_nic(link):
        return _nic_speed(link.name)
    return 0
