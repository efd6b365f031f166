"""Carrying out a setupNetworks request on the kernel, all or nothing.

`transact` is the whole of it, and runs in the namespace's worker thread:

1. read the kernel once; check the wanted configuration against it (nothing
   touched yet, so a refusal needs no rollback);
2. `rollback.capture` an image of every device the change may touch;
3. run the planned steps in order: tear down the networks that go or move,
   remove and make bonds, set up the networks that come or move, change in place
   those that only change settings;
4. on any failure, `rollback.restore` the image (which verifies itself) and raise
   the step's error, carrying the kernel's reason.

The image is returned with the outcome, so that the caller can restore it later
too: that is how a connectivity check that times out is rolled back.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.network import kernel, rollback, validation
from hostvisor.actors.network.errors import BadBonding, BadVlan, FailedIfup
from hostvisor.actors.network.kernel import RT_TABLE_MAIN, NetState, Route
from hostvisor.actors.network.model import DEFAULT_MTU, NetConfig, NetworkAttrs, Request

log = logging.getLogger(__name__)

Action = Callable[[kernel.Netlink], None]


@dataclass(frozen=True, slots=True)
class Step:
    """One kernel change, and the error that stands for its failure."""

    label: str
    action: Action
    error: type[HostvisorError] = FailedIfup


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """A change that was applied: the new configuration and how to undo it."""

    config: NetConfig
    image: rollback.Image
    steps: int


@dataclass(slots=True)
class _Plan:
    steps: list[Step] = field(default_factory=list)

    def add(self, label: str, action: Action, error: type[HostvisorError] = FailedIfup) -> None:
        self.steps.append(Step(label, action, error))


def network_table(name: str) -> int:
    """The routing table of a network's own gateway (one without defaultRoute)."""
    return 0x10000 + zlib.crc32(name.encode()) % 0x7FFE0000


def transact(
    ipr: IPRoute,
    running: NetConfig,
    request: Request,
    *,
    before_steps: Callable[[rollback.Image], None] | None = None,
) -> Outcome:
    """Apply `request` on top of `running`; all or nothing (see the module docstring).

    `before_steps(image)`, if given, runs once the request is checked and the image
    taken, before the first kernel step (to record the pending change durably); if
    it raises, nothing was touched.

    Raises:
        NetworkError: the request does not fit this host (nothing was touched).
        FailedIfup, BadBonding, BadVlan: the kernel refused a step; rolled back.
        RollbackFailed: the rollback itself did not restore the image.
    """
    wanted = running.apply(request)
    netlink = kernel.Netlink(ipr)
    state = netlink.read_state()
    validation.check(running, wanted, request, state)
    touched = rollback.touched_devices(state, _devices(running, wanted, request))
    image = rollback.image_of(state, touched)
    plan = _plan(running, wanted, request, state)
    if before_steps is not None:
        before_steps(image)
    for done, step in enumerate(plan.steps):
        try:
            step.action(netlink)
        except kernel.KERNEL_ERRORS as error:
            reason = kernel.kernel_reason(error)
            log.warning("setupNetworks: %s failed (%s); rolling back %d steps", step.label,
                        reason, done)  # fmt: skip
            rollback.restore(netlink, image)
            raise step.error(step=step.label, reason=reason) from None
        except Exception:
            log.exception("setupNetworks: %s failed unexpectedly; rolling back", step.label)
            rollback.restore(netlink, image)
            raise
    return Outcome(config=wanted, image=image, steps=len(plan.steps))


def undo(ipr: IPRoute, image: rollback.Image) -> None:
    """Restore the image of an applied change (the connectivity check failed)."""
    rollback.restore(kernel.Netlink(ipr), image)


def _devices(running: NetConfig, wanted: NetConfig, request: Request) -> set[str]:
    names: set[str] = set()
    for name in request.networks:
        for config in (running, wanted):
            attrs = config.networks.get(name)
            if attrs is not None:
                names.update(attrs.devices(name))
    for name in request.bonds:
        names.add(name)
        for config in (running, wanted):
            bond = config.bonds.get(name)
            if bond is not None:
                names.update(bond.nics)
    return names


# -- the plan ----------------------------------------------------------------------------


def _plan(running: NetConfig, wanted: NetConfig, request: Request, state: NetState) -> _Plan:
    plan = _Plan()
    moved = []
    for name in request.networks:
        old, new = running.networks.get(name), wanted.networks.get(name)
        if old is not None and (new is None or not old.same_layout(new)):
            _teardown(plan, name, old)
        if new is not None:
            moved.append((name, old, new))
    _bonds(plan, running, wanted, request)
    _base_mtus(plan, running, wanted, request, state)
    for name, old, new in moved:
        if old is not None and old.same_layout(new):
            _change(plan, name, old, new)
        else:
            _setup(plan, name, new)
    return plan


def _teardown(plan: _Plan, name: str, old: NetworkAttrs) -> None:
    top = old.top(name)
    if old.bridged:
        plan.add(f"delete bridge {name}", _delete(name))
    else:
        for route in _routes(name, old):
            plan.add(f"delete route {route.dst}/{route.dst_len} of {name}", _del_route(route, top))
        for family, address, prefix in _addresses(old):
            plan.add(f"remove {address}/{prefix} from {top}", _addr("del", top, family,
                                                                      address, prefix))  # fmt: skip
    vlan_device = old.vlan_device
    if vlan_device is not None:
        plan.add(f"delete VLAN {vlan_device}", _delete(vlan_device))


def _bonds(plan: _Plan, running: NetConfig, wanted: NetConfig, request: Request) -> None:
    for name in request.bonds:
        old, new = running.bonds.get(name), wanted.bonds.get(name)
        changed = old is not None and new is not None and old.options != new.options
        if changed or (old is not None and new is not None and old.mode != new.mode):
            raise BadBonding(bond=name, reason="changing a bond's options: remove it first")
        if new is None:
            plan.add(f"delete bond {name}", _delete(name))
            continue
        if old is None:
            attrs: dict[str, object] = {f"bond_{key}": value for key, value in new.options}
            if new.hwaddr:
                attrs["address"] = new.hwaddr
            plan.add(f"create bond {name}", _create(name, "bond", bond_mode=new.mode, **attrs),
                     BadBonding)  # fmt: skip
        for nic in sorted(set(old.nics if old else ()) - set(new.nics)):
            plan.add(f"release {nic} from {name}", _set(nic, master=0), BadBonding)
        for nic in sorted(set(new.nics) - set(old.nics if old else ())):
            plan.add(f"enslave {nic} to {name}", _enslave(nic, name), BadBonding)
        plan.add(f"bring bond {name} up", _set(name, state="up"), BadBonding)


def _base_mtus(
    plan: _Plan, running: NetConfig, wanted: NetConfig, request: Request, state: NetState
) -> None:
    """Each NIC or bond under a changed network gets the largest MTU of its networks."""
    bases: set[str] = set()
    for name in request.networks:
        for config in (running, wanted):
            attrs = config.networks.get(name)
            if attrs is not None and attrs.base is not None:
                bases.add(attrs.base)
    links = state.by_name()
    for base in sorted(bases):
        mtus = [a.mtu for a in wanted.networks.values() if a.base == base]
        target = max(mtus, default=DEFAULT_MTU)
        if base in links and links[base].mtu == target and mtus:
            continue
        plan.add(f"set MTU {target} on {base}", _set(base, mtu=target))


def _setup(plan: _Plan, name: str, new: NetworkAttrs) -> None:
    base, vlan_device = new.base, new.vlan_device
    if base is not None:
        plan.add(f"bring {base} up", _set(base, state="up"))
    if vlan_device is not None and base is not None:
        plan.add(
            f"create VLAN {vlan_device}",
            lambda nl: nl.add_link(vlan_device, "vlan", link=nl.index_of(base), vlan_id=new.vlan),
            BadVlan,
        )
        plan.add(f"set MTU {new.mtu} on {vlan_device}", _set(vlan_device, mtu=new.mtu), BadVlan)
        plan.add(f"bring {vlan_device} up", _set(vlan_device, state="up"), BadVlan)
    if new.bridged:
        plan.add(
            f"create bridge {name}",
            lambda nl: nl.add_link(name, "bridge", br_stp_state=int(new.stp)),
        )
        southbound = new.southbound
        if southbound is not None:
            plan.add(f"add {southbound} to {name}", _enslave(southbound, name))
        plan.add(f"set MTU {new.mtu} on {name}", _set(name, mtu=new.mtu))
    top = new.top(name)
    _addressing(plan, name, top, None, new)
    plan.add(f"bring {top} up", _set(top, state="up"))
    for route in _routes(name, new):
        plan.add(f"add route {route.dst}/{route.dst_len} of {name}", _add_route(route, top))


def _change(plan: _Plan, name: str, old: NetworkAttrs, new: NetworkAttrs) -> None:
    top = new.top(name)
    for device in (new.vlan_device, name if new.bridged else None):
        if device is not None and old.mtu != new.mtu:
            plan.add(f"set MTU {new.mtu} on {device}", _set(device, mtu=new.mtu))
    if new.bridged and old.stp != new.stp:
        plan.add(
            f"set STP of {name}",
            lambda nl: nl.set_bridge(name, br_stp_state=int(new.stp)),
        )
    old_routes, new_routes = set(_routes(name, old)), set(_routes(name, new))
    for route in old_routes - new_routes:
        plan.add(f"delete route {route.dst}/{route.dst_len} of {name}", _del_route(route, top))
    _addressing(plan, name, top, old, new)
    for route in sorted(new_routes - old_routes, key=str):
        plan.add(f"add route {route.dst}/{route.dst_len} of {name}", _add_route(route, top))


def _addressing(
    plan: _Plan, name: str, top: str, old: NetworkAttrs | None, new: NetworkAttrs
) -> None:
    before = set(_addresses(old)) if old else set()
    after = set(_addresses(new))
    for family, address, prefix in sorted(before - after):
        plan.add(f"remove {address}/{prefix} from {top}", _addr("del", top, family, address,
                                                                  prefix))  # fmt: skip
    if old is None or old.ipv6autoconf != new.ipv6autoconf:
        value = "1" if new.ipv6autoconf else "0"
        plan.add(
            f"set IPv6 autoconf of {top} to {value}",
            lambda _nl: kernel.set_ipv6_conf(top, "autoconf", value),
        )
    for family, address, prefix in sorted(after - before):
        plan.add(f"add {address}/{prefix} to {top} ({name})", _addr("add", top, family, address,
                                                                      prefix))  # fmt: skip


def _addresses(attrs: NetworkAttrs) -> list[tuple[int, str, int]]:
    found: list[tuple[int, str, int]] = []
    for family, cidr in ((socket.AF_INET, attrs.ipv4), (socket.AF_INET6, attrs.ipv6)):
        if cidr:
            address, prefix = cidr.split("/")
            found.append((int(family), address, int(prefix)))
    return found


def _routes(name: str, attrs: NetworkAttrs) -> list[Route]:
    table = RT_TABLE_MAIN if attrs.default_route else network_table(name)
    routes = []
    for family, gateway, dst in (
        (socket.AF_INET, attrs.gateway, "0.0.0.0"),  # noqa: S104 - a route, not a bind
        (socket.AF_INET6, attrs.ipv6gateway, "::"),
    ):
        if gateway:
            routes.append(
                Route(
                    family=family,
                    dst=dst,
                    dst_len=0,
                    gateway=gateway,
                    oif=0,
                    table=table,
                    proto=0,
                    priority=0,
                )
            )
    return routes


def _addr(op: str, device: str, family: int, address: str, prefix: int) -> Action:
    if op == "add":
        return lambda nl: nl.add_addr(device, family, address, prefix)
    return lambda nl: nl.del_addr(device, family, address, prefix)


def _create(device: str, kind: str, **attrs: object) -> Action:
    return lambda nl: nl.add_link(device, kind, **attrs)


def _delete(device: str) -> Action:
    return lambda nl: nl.delete_link(device)


def _set(device: str, **attrs: object) -> Action:
    return lambda nl: nl.set_link(device, **attrs)


def _enslave(device: str, master: str) -> Action:
    def enslave(netlink: kernel.Netlink) -> None:
        netlink.set_link(device, state="down")
        netlink.set_link(device, master=netlink.index_of(master))
        netlink.set_link(device, state="up")

    return enslave


def _add_route(route: Route, device: str) -> Action:
    return lambda nl: nl.replace_route(route, device)


def _del_route(route: Route, device: str) -> Action:
    def delete(netlink: kernel.Netlink) -> None:
        oif = netlink.index_of(device)
        try:
            netlink.del_route(dataclasses.replace(route, oif=oif))
        except kernel.KERNEL_ERRORS as error:
            if kernel.error_code(error) != errno.ESRCH:  # already gone with its address
                raise

    return delete
