"""Checks of a wanted network configuration against the kernel's devices.

Run before anything is touched: a request that fails here changes nothing. What
only the kernel can refuse (a VLAN on a kernel without 802.1q, an address on a
device with IPv6 disabled) is found while applying, and rolled back.
"""

from __future__ import annotations

from collections import defaultdict

from hostvisor.actors.network.errors import (
    BadBonding,
    BadBridge,
    BadNic,
    BadParams,
    BadVlan,
    UsedBond,
    UsedNic,
)
from hostvisor.actors.network.kernel import NetState
from hostvisor.actors.network.model import NetConfig, NetworkAttrs, Request


def check(running: NetConfig, wanted: NetConfig, request: Request, state: NetState) -> None:
    """Refuse `wanted` if the kernel's devices cannot carry it.

    Args:
        running: the configuration now in force (its devices are ours).
        wanted: the configuration after the request.
        request: the request (only what it names is checked against the kernel).
        state: the kernel's links now.

    Raises:
        NetworkError: the first problem found, with VDSM's code.
    """
    ours = running.devices()
    for name in request.bonds:
        bond = wanted.bonds.get(name)
        if bond is not None:
            for nic in bond.nics:
                _check_nic(state, ours, nic, bond=name)
            if name in state.by_name() and name not in ours:
                raise BadBonding(bond=name, reason="a device of that name exists and is not ours")
    for name in request.networks:
        attrs = wanted.networks.get(name)
        if attrs is not None:
            _check_network(state, ours, wanted, name, attrs)
    _check_sharing(wanted)


def _check_network(
    state: NetState, ours: set[str], wanted: NetConfig, name: str, attrs: NetworkAttrs
) -> None:
    """The network's NIC or bond exists and is free; its devices' names are free."""
    if attrs.nic is not None:
        _check_nic(state, ours, attrs.nic, network=name)
    if attrs.bonding is not None and attrs.bonding not in wanted.bonds:
        raise BadBonding(network=name, bonding=attrs.bonding, reason="no such bond")
    for device in (name if attrs.bridged else None, attrs.vlan_device):
        if device is not None and device in state.by_name() and device not in ours:
            raise BadBridge(network=name, device=device, reason="a device of that name exists")


def _check_nic(state: NetState, ours: set[str], nic: str, **who: str) -> None:
    """A NIC named by a request exists, is a NIC, and no foreign device owns it."""
    link = state.by_name().get(nic)
    if link is None or not link.is_nic:
        raise BadNic(**who, nic=nic, reason="no such NIC on this host")
    master = state.by_index().get(link.master) if link.master is not None else None
    if master is not None and master.name not in ours:
        raise UsedNic(**who, nic=nic, reason=f"enslaved to {master.name}")


def _slaves(wanted: NetConfig) -> dict[str, str]:
    """The bond of each enslaved NIC; a NIC in two bonds is refused."""
    slaves: dict[str, str] = {}
    for bond, attrs in wanted.bonds.items():
        for nic in attrs.nics:
            if nic in slaves:
                raise UsedNic(nic=nic, bonds=[slaves[nic], bond], reason="a NIC is in two bonds")
            slaves[nic] = bond
    return slaves


def _check_sharing(wanted: NetConfig) -> None:
    """Each NIC or bond carries at most one untagged network and each VLAN id once."""
    untagged: dict[str, str] = {}
    tagged: dict[tuple[str, int], str] = {}
    slaves = _slaves(wanted)
    defaults = []
    for name, attrs in sorted(wanted.networks.items()):
        base = attrs.base
        if attrs.default_route:
            defaults.append(name)
        if base is None:
            continue
        if attrs.nic in slaves:
            raise UsedNic(network=name, nic=attrs.nic, reason=f"a slave of {slaves[attrs.nic]}")
        if attrs.vlan is None:
            if base in untagged:
                error = UsedBond if attrs.bonding else UsedNic
                raise error(network=name, device=base, reason=f"carries {untagged[base]} already")
            untagged[base] = name
        else:
            key = (base, attrs.vlan)
            if key in tagged:
                raise BadVlan(network=name, vlan=attrs.vlan, reason=f"used by {tagged[key]}")
            tagged[key] = name
    if len(defaults) > 1:
        raise BadParams(networks=defaults, reason="only one network can have defaultRoute")
    _check_removed_bonds(wanted)


def _check_removed_bonds(wanted: NetConfig) -> None:
    users: dict[str, list[str]] = defaultdict(list)
    for name, attrs in wanted.networks.items():
        if attrs.bonding is not None:
            users[attrs.bonding].append(name)
    for bond, names in users.items():
        if bond not in wanted.bonds:
            raise UsedBond(bond=bond, networks=sorted(names), reason="the bond carries networks")
