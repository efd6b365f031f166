"""The one rollback mechanism: an image of the devices a change touches, and its restore.

Before a change, `capture` records what the kernel says about every device the
change may touch (absent ones included): kind, MTU, MAC, up or down, master, VLAN
parent and id, bond mode, STP, permanent addresses, IPv6 autoconf, and the routes
through them that someone configured (not the kernel's own prefix routes). After
any failure, or when the Engine does not confirm connectivity, `restore` makes the
kernel match the image again (deleting what the change made, recreating what it
deleted) and then captures again to verify: a restore that does not give the
image back raises `RollbackFailed`, naming the devices that differ.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.network import kernel
from hostvisor.actors.network.errors import RollbackFailed
from hostvisor.actors.network.kernel import (
    IFA_F_PERMANENT,
    RTPROT_KERNEL,
    RTPROT_RA,
    SCOPE_LINK,
    NetState,
    Route,
)

log = logging.getLogger(__name__)

_DELETE_ORDER = {"bridge": 0, "vlan": 1, "bond": 2}
_CREATE_ORDER = {"bond": 0, "vlan": 1, "bridge": 2}
_MTU_ORDER = {"vlan": 1, "bridge": 2}  # everything else (NICs, bonds) first
_PASSES = 2
_SPARE_GROUP = 0x48560000
"""Where to look for a free device group (any free one would do; "HV" and zeros)."""
"""A second pass settles what the first could not (an MTU a parent's change clamped)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceImage:
    """What matters of one device for putting it back."""

    name: str
    kind: str | None
    mtu: int
    mac: str
    up: bool
    master: str | None
    vlan_parent: str | None
    vlan_id: int | None
    bond_mode: int | None
    stp: bool
    addresses: frozenset[tuple[int, str, int]]
    """(family, address, prefix) of the permanent, non-link-scope addresses."""
    autoconf: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteImage:
    """A configured route, by device name (indexes change when a device is remade)."""

    family: int
    dst: str
    dst_len: int
    gateway: str
    device: str
    table: int
    priority: int

    def as_route(self, oif: int) -> Route:
        """The kernel route this image stands for, through device index `oif`."""
        return Route(
            family=self.family,
            dst=self.dst,
            dst_len=self.dst_len,
            gateway=self.gateway,
            oif=oif,
            table=self.table,
            proto=0,
            priority=self.priority,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """The state of a set of devices: None for a device that does not exist."""

    devices: dict[str, DeviceImage | None]
    routes: frozenset[RouteImage]

    def differences(self, other: Image) -> list[str]:
        """Names of the devices (and "routes") where `other` differs from this image."""
        names = [n for n in self.devices if self.devices[n] != other.devices.get(n)]
        if self.routes != other.routes:
            names.append("routes")
        return names

    def to_json(self) -> dict[str, Any]:
        """The image as JSON-able dicts (to persist a change not yet confirmed)."""
        devices = {
            name: None
            if device is None
            else {
                **dataclasses.asdict(device),
                "addresses": sorted(device.addresses),
            }
            for name, device in self.devices.items()
        }
        routes = sorted((dataclasses.asdict(route) for route in self.routes), key=repr)
        return {"devices": devices, "routes": routes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Image:
        """Read back what `to_json` wrote. Raises KeyError or TypeError if it does not fit."""
        devices: dict[str, DeviceImage | None] = {}
        for name, raw in data["devices"].items():
            if raw is None:
                devices[name] = None
                continue
            addresses = frozenset((int(f), str(a), int(p)) for f, a, p in raw["addresses"])
            devices[name] = DeviceImage(**{**raw, "addresses": addresses})
        routes = frozenset(RouteImage(**raw) for raw in data["routes"])
        return cls(devices=devices, routes=routes)


def touched_devices(state: NetState, names: Iterable[str]) -> set[str]:
    """`names` plus the current ports of those that are bridges or bonds (VM taps too)."""
    links = state.by_name()
    wanted = set(names)
    masters = {links[n].index for n in wanted if n in links}
    wanted.update(link.name for link in state.links if link.master in masters)
    return wanted


def capture(netlink: kernel.Netlink, names: Iterable[str]) -> Image:
    """Record the devices `names` (existing or not) and their configured routes."""
    return image_of(netlink.read_state(), names)


def image_of(state: NetState, names: Iterable[str]) -> Image:
    """The image of `names` in a state already read (autoconf is read now)."""
    links = state.by_name()
    by_index = state.by_index()
    devices: dict[str, DeviceImage | None] = {}
    routes: set[RouteImage] = set()
    for name in sorted(set(names)):
        link = links.get(name)
        if link is None:
            devices[name] = None
            continue
        devices[name] = DeviceImage(
            name=name,
            kind=link.kind,
            mtu=link.mtu,
            mac=link.mac,
            up=link.up,
            master=by_index[link.master].name if link.master in by_index else None,
            vlan_parent=by_index[link.parent].name
            if link.kind == "vlan" and link.parent in by_index
            else None,
            vlan_id=link.vlan_id,
            bond_mode=link.info.get("IFLA_BOND_MODE") if link.kind == "bond" else None,
            stp=bool(link.info.get("IFLA_BR_STP_STATE")),
            addresses=frozenset(
                (a.family, a.address, a.prefix)
                for a in state.addrs_of(link.index)
                if a.scope != SCOPE_LINK and a.flags & IFA_F_PERMANENT
            ),
            autoconf=kernel.ipv6_conf(name, "autoconf"),
        )
        routes.update(
            RouteImage(
                family=r.family,
                dst=r.dst,
                dst_len=r.dst_len,
                gateway=r.gateway,
                device=name,
                table=r.table,
                priority=r.priority,
            )
            for r in state.routes_of(link.index)
            if r.proto not in (RTPROT_KERNEL, RTPROT_RA)
        )
    return Image(devices=devices, routes=frozenset(routes))


def restore(netlink: kernel.Netlink, image: Image) -> None:
    """Make the kernel match `image` again, then verify it does.

    Blocking. Every step is attempted even if an earlier one failed, so that as
    much as possible is put back; the verification decides. The namespace is read
    once to find what to delete and make again, once after that, and once to
    verify (plus once before the routes, if routes are involved and a device was
    reset); the first read is of the links alone. A second pass, with its own
    reads, comes only if the first did not settle.

    Raises:
        RollbackFailed: the devices are not as the image says after the restore.
    """
    state = netlink.read_state(addresses=False)
    links = state.by_name()
    made = [n for n, d in image.devices.items() if d is None and n in links]
    if made:
        made.sort(key=lambda n: _DELETE_ORDER.get(links[n].kind or "", 3))
        _attempt(f"delete {', '.join(made)}", netlink.delete_links, made, _spare_group(state))
    gone = [d for d in image.devices.values() if d is not None and d.name not in links]
    for device in sorted(gone, key=lambda d: _CREATE_ORDER.get(d.kind or "", 3)):
        _attempt(f"recreate {device.name}", _recreate, netlink, device)
    state = netlink.read_state()
    present = sorted(
        (d for d in image.devices.values() if d is not None),
        key=lambda d: _MTU_ORDER.get(d.kind or "", 0),
    )
    differing: list[str] = []
    for _pass in range(_PASSES):
        now = image_of(state, image.devices)
        reset = [d for d in present if now.devices.get(d.name) not in (None, d)]
        for device in reset:
            _attempt(f"reset {device.name}", _reset, netlink, device, now.devices[device.name])
        if image.routes or now.routes:
            if reset:  # an address taken away takes its routes along
                now = image_of(netlink.read_state(), image.devices)
            _restore_routes(netlink, image, now)
        state = netlink.read_state()
        differing = image.differences(image_of(state, image.devices))
        if not differing:
            return
        log.info("rollback: %s still differ; another pass", differing)
    raise RollbackFailed(devices=differing)


def _spare_group(state: NetState) -> int:
    """A device group no device is in (to delete a batch of devices at once)."""
    used = {link.group for link in state.links}
    return next(g for g in range(_SPARE_GROUP, _SPARE_GROUP + len(used) + 1) if g not in used)


def _attempt(what: str, step: object, *args: object) -> None:
    try:
        step(*args)  # type: ignore[operator]
    except kernel.KERNEL_ERRORS as error:
        log.warning("rollback: %s failed: %s", what, error)


def _recreate(netlink: kernel.Netlink, device: DeviceImage) -> None:
    if device.kind == "bridge":
        netlink.add_link(device.name, "bridge", br_stp_state=int(device.stp))
    elif device.kind == "bond":
        netlink.add_link(device.name, "bond", bond_mode=device.bond_mode or 0)
    elif device.kind == "vlan" and device.vlan_parent is not None:
        parent = netlink.index_of(device.vlan_parent)
        netlink.add_link(device.name, "vlan", link=parent, vlan_id=device.vlan_id)
    else:
        log.error("rollback: %s (%s) vanished and cannot be made again", device.name, device.kind)


def _reset(netlink: kernel.Netlink, device: DeviceImage, now: DeviceImage) -> None:
    """Put one existing device's own settings back (`now`: how it is)."""
    name = device.name
    if now.master != device.master:
        master = netlink.index_of(device.master) if device.master else 0
        if device.master and now.up:
            netlink.set_link(name, state="down")  # bond slaves must be down
        netlink.set_link(name, master=master)
    if now.mtu != device.mtu:
        netlink.set_link(name, mtu=device.mtu)
    if now.mac != device.mac and device.mac:
        netlink.set_link(name, address=device.mac)
    if device.kind == "bridge" and now.stp != device.stp:
        netlink.set_bridge(name, br_stp_state=int(device.stp))
    for family, address, prefix in now.addresses - device.addresses:
        netlink.del_addr(name, family, address, prefix)
    for family, address, prefix in device.addresses - now.addresses:
        netlink.add_addr(name, family, address, prefix)
    if device.autoconf and now.autoconf != device.autoconf:
        kernel.set_ipv6_conf(name, "autoconf", device.autoconf)
    if now.up != device.up or (device.master and now.master != device.master):
        netlink.set_link(name, state="up" if device.up else "down")


def _restore_routes(netlink: kernel.Netlink, image: Image, now: Image) -> None:
    """Delete the configured routes the image lacks, add back those it has (`now`: as is)."""
    for extra in now.routes - image.routes:
        _attempt(f"delete route {extra}", _delete_route, netlink, extra)
    for missing in image.routes - now.routes:
        if now.devices.get(missing.device) is not None:
            route = missing.as_route(0)  # through the device's index now
            _attempt(f"add route {missing}", netlink.replace_route, route, missing.device)


def _delete_route(netlink: kernel.Netlink, route: RouteImage) -> None:
    netlink.del_route(route.as_route(netlink.index_of(route.device)))
