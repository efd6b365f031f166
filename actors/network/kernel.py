"""The kernel's network state through netlink: one read of everything, and the few writes.

Plain blocking code over a pyroute2 `IPRoute` that the caller opened in the right
namespace (see `netns.NamespaceWorker`): `read_state` reads, a `Netlink` writes
(and keeps the device indexes it knows, so that a write is one round trip). They
raise pyroute2's `NetlinkError` (an `OSError` with the kernel's errno) unchanged:
what a failure means is decided by the caller, which knows what it was trying to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetlinkError

IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOOPBACK = 0x8
SCOPE_LINK = 253
SCOPE_HOST = 254
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTN_UNICAST = 1
RTPROT_KERNEL = 2
RTPROT_RA = 9
IFA_F_PERMANENT = 0x80
VIRTUAL_KINDS = ("bridge", "bond", "vlan")
"""The device kinds Hostvisor makes and deletes; NICs are only ever configured."""

KERNEL_ERRORS = (OSError, NetlinkError)
"""What a refused netlink request raises (pyroute2's NetlinkError is not an OSError)."""

_COUNTERS = ("rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One network device, from one netlink link message."""

    index: int
    name: str
    kind: str | None
    mac: str
    mtu: int
    flags: int
    operstate: str
    master: int | None
    parent: int | None
    vlan_id: int | None
    has_device: bool
    """Backed by a device on a bus (a physical NIC), as /sys/class/net/X/device shows."""
    group: int = 0
    """The device group (`ip link set group`); the kernel can delete a group at once."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """The kind's own attributes (IFLA_BR_*, IFLA_BOND_*), by netlink name."""
    counters: Mapping[str, int] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        """Administratively up."""
        return bool(self.flags & IFF_UP)

    @property
    def running(self) -> bool:
        """Up and with a carrier."""
        return self.up and bool(self.flags & IFF_RUNNING)

    @property
    def is_nic(self) -> bool:
        """A NIC: a physical device, or the veth and dummy devices that stand in for one."""
        if self.flags & IFF_LOOPBACK:
            return False
        return self.kind in ("veth", "dummy") or (self.kind is None and self.has_device)


@dataclass(frozen=True, slots=True, kw_only=True)
class Addr:
    """One address of a device."""

    index: int
    family: int
    address: str
    prefix: int
    scope: int
    flags: int

    @property
    def cidr(self) -> str:
        """`address/prefix`."""
        return f"{self.address}/{self.prefix}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One unicast route through a device."""

    family: int
    dst: str
    dst_len: int
    gateway: str
    oif: int
    table: int
    proto: int
    priority: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NetState:
    """Every link, address and unicast route of a namespace at one moment."""

    links: tuple[Link, ...]
    addrs: tuple[Addr, ...] = ()
    routes: tuple[Route, ...] = ()

    def by_name(self) -> dict[str, Link]:
        """The links by device name."""
        return {link.name: link for link in self.links}

    def by_index(self) -> dict[int, Link]:
        """The links by interface index."""
        return {link.index: link for link in self.links}

    def addrs_of(self, index: int) -> list[Addr]:
        """The addresses of one device, in the kernel's order."""
        return [a for a in self.addrs if a.index == index]

    def routes_of(self, index: int) -> list[Route]:
        """The unicast routes through one device."""
        return [r for r in self.routes if r.oif == index]


def read_state(ipr: IPRoute, *, addresses: bool = True) -> NetState:
    """Read every link (and, if asked, every address and unicast route) in one go."""
    links = tuple(_link(message) for message in ipr.get_links())
    if not addresses:
        return NetState(links=links)
    addrs = tuple(_addr(message) for message in ipr.get_addr())
    routes: list[Route] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for message in ipr.get_routes(family=family):  # every table
            route = _route(message)
            if route is not None:
                routes.append(route)
    return NetState(links=links, addrs=addrs, routes=tuple(routes))


def _link(message: Any) -> Link:
    info = message.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info else None
    data = info.get("IFLA_INFO_DATA") if info else None
    attrs = {name: value for name, value in data["attrs"]} if data else {}  # noqa: C416
    stats = message.get("IFLA_STATS64")
    return Link(
        index=message["index"],
        name=message.get("IFLA_IFNAME"),
        kind=kind,
        mac=message.get("IFLA_ADDRESS") or "",
        mtu=message.get("IFLA_MTU") or 0,
        flags=message["flags"],
        operstate=(message.get("IFLA_OPERSTATE") or "UNKNOWN").lower(),
        master=message.get("IFLA_MASTER"),
        parent=message.get("IFLA_LINK"),
        vlan_id=attrs.get("IFLA_VLAN_ID") if kind == "vlan" else None,
        has_device=message.get("IFLA_PARENT_DEV_NAME") is not None,
        group=message.get("IFLA_GROUP") or 0,
        info=attrs,
        counters={name: int(stats.get(name) or 0) for name in _COUNTERS} if stats else {},
    )


def _addr(message: Any) -> Addr:
    return Addr(
        index=message["index"],
        family=message["family"],
        address=message.get("IFA_ADDRESS"),
        prefix=message["prefixlen"],
        scope=message["scope"],
        flags=message.get("IFA_FLAGS") or message["flags"],
    )


def _route(message: Any) -> Route | None:
    oif = message.get("RTA_OIF")
    table = message.get("RTA_TABLE") or message["table"]
    if message["type"] != RTN_UNICAST or oif is None or table == RT_TABLE_LOCAL:
        return None
    family = message["family"]
    default_dst = "0.0.0.0" if family == socket.AF_INET else "::"  # noqa: S104 - a route
    return Route(
        family=family,
        dst=message.get("RTA_DST") or default_dst,
        dst_len=message["dst_len"],
        gateway=message.get("RTA_GATEWAY") or "",
        oif=oif,
        table=table,
        proto=message["proto"],
        priority=message.get("RTA_PRIORITY") or 0,
    )


# -- writes -------------------------------------------------------------------------------


def kernel_reason(error: BaseException) -> str:
    """The kernel's words for a refused request ("Operation not supported")."""
    code = getattr(error, "code", None) if isinstance(error, NetlinkError) else None
    code = code if code is not None else getattr(error, "errno", None)
    return os.strerror(code) if code else str(error)


def error_code(error: BaseException) -> int | None:
    """The errno of a refused request, if it has one."""
    if isinstance(error, NetlinkError):
        return int(error.code)
    return getattr(error, "errno", None)


class Netlink:
    """The writes of one transaction (or one restore) on a namespace's netlink socket.

    Devices are named; netlink wants their indexes. They are learnt from a state
    already read (`learn`, `read_state`) or looked up once, then kept: a request
    costs one round trip, as it would for a caller that holds the indexes itself.
    Creating or deleting a device through this object forgets its index (a device
    made again gets a new one); renames never happen here. Use one object for one
    burst of changes in one thread: it does not see devices that others delete and
    make again meanwhile (a stale index then fails with ENODEV, as a lost race).
    Blocking; raises what pyroute2 raises (see the module docstring).
    """

    def __init__(self, ipr: IPRoute, links: Iterable[Link] = ()) -> None:
        """Write through `ipr`, knowing the indexes of `links` already."""
        self.ipr = ipr
        self._indexes: dict[str, int] = {}
        self.learn(links)

    def learn(self, links: Iterable[Link]) -> None:
        """Remember the indexes of `links` (read just now)."""
        self._indexes.update((link.name, link.index) for link in links)

    def read_state(self, *, addresses: bool = True) -> NetState:
        """`read_state`, learning every index from it."""
        state = read_state(self.ipr, addresses=addresses)
        self._indexes = {link.name: link.index for link in state.links}
        return state

    def index_of(self, name: str) -> int:
        """Return the index of device `name`; raise NetlinkError(ENODEV) if there is none."""
        index = self._indexes.get(name)
        if index is None:
            found = self.ipr.link_lookup(ifname=name)
            if not found:
                raise NetlinkError(errno.ENODEV, f"no device {name}")
            index = self._indexes[name] = int(found[0])
        return index

    def add_link(self, name: str, kind: str, **attrs: Any) -> None:
        """Create a device of `kind` (bridge, bond, vlan) with pyroute2's `attrs`."""
        self._indexes.pop(name, None)
        self.ipr.link("add", ifname=name, kind=kind, **attrs)

    def delete_link(self, name: str) -> None:
        """Delete device `name`."""
        index = self.index_of(name)
        self._indexes.pop(name, None)
        self.ipr.link("del", index=index)

    def delete_links(self, names: Iterable[str], spare_group: int) -> None:
        """Delete the virtual devices `names` (in that order if one at a time).

        The kernel deletes a whole device group in one request, and such a batch
        costs about half as much as a request per device (each unregistration
        waits for the same grace periods). So the devices are put in
        `spare_group`, which the caller checked no device is in, and the group is
        deleted; what that leaves is deleted one by one. Raises the first error
        of those, after trying them all.
        """
        names = list(names)
        grouped: list[str] = []
        for name in names:
            with contextlib.suppress(*KERNEL_ERRORS):
                self.set_link(name, group=spare_group)
                grouped.append(name)
        left = [name for name in names if name not in grouped]
        if grouped:
            try:
                self.ipr.link("del", index=0, group=spare_group)
            except KERNEL_ERRORS:
                left = names
        for name in grouped:
            self._indexes.pop(name, None)
        failures: list[BaseException] = []
        for name in left:
            try:
                self.delete_link(name)
            except KERNEL_ERRORS as error:
                failures.append(error)
        if failures:
            raise failures[0]

    def set_link(self, name: str, **attrs: Any) -> None:
        """Change a device: `mtu`, `state`, `master` (an index; 0 frees it), `address`, `group`."""
        self.ipr.link("set", index=self.index_of(name), **attrs)

    def set_bridge(self, name: str, **attrs: Any) -> None:
        """Change a bridge's own options (pyroute2 names: `br_stp_state`, ...)."""
        self.ipr.link("set", index=self.index_of(name), kind="bridge", **attrs)

    def add_addr(self, name: str, family: int, address: str, prefix: int) -> None:
        """Add a permanent address to a device."""
        self.ipr.addr("add", index=self.index_of(name), family=family, address=address,
                      prefixlen=prefix)  # fmt: skip

    def del_addr(self, name: str, family: int, address: str, prefix: int) -> None:
        """Remove an address from a device."""
        self.ipr.addr("del", index=self.index_of(name), family=family, address=address,
                      prefixlen=prefix)  # fmt: skip

    def replace_route(self, route: Route, name: str) -> None:
        """Add (or replace) a route through device `name`."""
        self.ipr.route("replace", **_route_attrs(route, self.index_of(name)))

    def del_route(self, route: Route) -> None:
        """Remove a route (through the device index it names)."""
        self.ipr.route("del", **_route_attrs(route, route.oif))


def _route_attrs(route: Route, oif: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "family": route.family,
        "dst": f"{route.dst}/{route.dst_len}",
        "oif": oif,
        "table": route.table,
    }
    if route.gateway:
        attrs["gateway"] = route.gateway
    if route.priority:
        attrs["priority"] = route.priority
    return attrs


def ipv6_conf(name: str, key: str) -> str:
    """Read /proc/sys/net/ipv6/conf/<name>/<key> (in the calling thread's namespace)."""
    try:
        return Path(f"/proc/sys/net/ipv6/conf/{name}/{key}").read_text().strip()
    except OSError:
        return ""


def set_ipv6_conf(name: str, key: str, value: str) -> None:
    """Write /proc/sys/net/ipv6/conf/<name>/<key> (in the calling thread's namespace)."""
    Path(f"/proc/sys/net/ipv6/conf/{name}/{key}").write_text(value)
