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

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute

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


def touched_devices(state: NetState, names: Iterable[str]) -> set[str]:
    """`names` plus the current ports of those that are bridges or bonds (VM taps too)."""
    links = state.by_name()
    wanted = set(names)
    masters = {links[n].index for n in wanted if n in links}
    wanted.update(link.name for link in state.links if link.master in masters)
    return wanted


def capture(ipr: IPRoute, names: Iterable[str]) -> Image:
    """Record the devices `names` (existing or not) and their configured routes."""
    return image_of(kernel.read_state(ipr), names)


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


def restore(ipr: IPRoute, image: Image) -> None:
    """Make the kernel match `image` again, then verify it does.

    Blocking. Every step is attempted even if an earlier one failed, so that as
    much as possible is put back; the verification decides.

    Raises:
        RollbackFailed: the devices are not as the image says after the restore.
    """
    state = kernel.read_state(ipr)
    links = state.by_name()
    made = [n for n, d in image.devices.items() if d is None and n in links]
    for name in sorted(made, key=lambda n: _DELETE_ORDER.get(links[n].kind or "", 3)):
        _attempt(f"delete {name}", kernel.delete_link, ipr, name)
    gone = [d for d in image.devices.values() if d is not None and d.name not in links]
    for device in sorted(gone, key=lambda d: _CREATE_ORDER.get(d.kind or "", 3)):
        _attempt(f"recreate {device.name}", _recreate, ipr, device)
    present = sorted(
        (d for d in image.devices.values() if d is not None),
        key=lambda d: _MTU_ORDER.get(d.kind or "", 0),
    )
    differing: list[str] = []
    for _pass in range(_PASSES):
        now = capture(ipr, image.devices)
        for device in present:
            current = now.devices.get(device.name)
            if current is not None and current != device:
                _attempt(f"reset {device.name}", _reset, ipr, device, current)
        _restore_routes(ipr, image)
        differing = image.differences(capture(ipr, image.devices))
        if not differing:
            return
        log.info("rollback: %s still differ; another pass", differing)
    raise RollbackFailed(devices=differing)


def _attempt(what: str, step: object, *args: object) -> None:
    try:
        step(*args)  # type: ignore[operator]
    except kernel.KERNEL_ERRORS as error:
        log.warning("rollback: %s failed: %s", what, error)


def _recreate(ipr: IPRoute, device: DeviceImage) -> None:
    if device.kind == "bridge":
        kernel.add_link(ipr, device.name, "bridge", br_stp_state=int(device.stp))
    elif device.kind == "bond":
        kernel.add_link(ipr, device.name, "bond", bond_mode=device.bond_mode or 0)
    elif device.kind == "vlan" and device.vlan_parent is not None:
        parent = kernel.index_of(ipr, device.vlan_parent)
        kernel.add_link(ipr, device.name, "vlan", link=parent, vlan_id=device.vlan_id)
    else:
        log.error("rollback: %s (%s) vanished and cannot be made again", device.name, device.kind)


def _reset(ipr: IPRoute, device: DeviceImage, now: DeviceImage) -> None:
    """Put one existing device's own settings back (`now`: how it is)."""
    if now.master != device.master:
        master = kernel.index_of(ipr, device.master) if device.master else 0
        if device.master and now.up:
            kernel.set_link(ipr, device.name, state="down")  # bond slaves must be down
        kernel.set_link(ipr, device.name, master=master)
    if now.mtu != device.mtu:
        kernel.set_link(ipr, device.name, mtu=device.mtu)
    if now.mac != device.mac and device.mac:
        kernel.set_link(ipr, device.name, address=device.mac)
    if device.kind == "bridge" and now.stp != device.stp:
        kernel.set_bridge(ipr, device.name, br_stp_state=int(device.stp))
    for family, address, prefix in now.addresses - device.addresses:
        kernel.del_addr(ipr, device.name, family, address, prefix)
    for family, address, prefix in device.addresses - now.addresses:
        kernel.add_addr(ipr, device.name, family, address, prefix)
    if device.autoconf and now.autoconf != device.autoconf:
        kernel.set_ipv6_conf(device.name, "autoconf", device.autoconf)
    if now.up != device.up or (device.master and now.master != device.master):
        kernel.set_link(ipr, device.name, state="up" if device.up else "down")


def _restore_routes(ipr: IPRoute, image: Image) -> None:
    current = capture(ipr, image.devices).routes
    links = kernel.read_state(ipr, addresses=False).by_name()
    for extra in current - image.routes:
        if extra.device in links:
            route = extra.as_route(links[extra.device].index)
            _attempt(f"delete route {extra}", kernel.del_route, ipr, route)
    for missing in image.routes - current:
        if missing.device in links:
            route = missing.as_route(links[missing.device].index)
            _attempt(f"add route {missing}", kernel.replace_route, ipr, route, missing.device)
