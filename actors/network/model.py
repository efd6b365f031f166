"""What setupNetworks asks for, checked and made canonical; and the network config.

`parse_request` turns the Engine's `networks`, `bondings` and `options`
(reference/vdsm-wire.md §9) into frozen `NetworkAttrs` and `BondAttrs`, refusing
malformed fields with VDSM's codes (21 params, 22 addresses, 25 bonds, 26 VLANs,
27 names). `NetConfig` is the whole configuration of the host's networks, the
running one as well as the safe one; it is what gets persisted, in VDSM's own field
names. `NetConfig.apply` gives the configuration a request leads to; checking it
against the kernel's devices is `validation.check`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.network.errors import (
    BadAddress,
    BadBonding,
    BadBridge,
    BadParams,
    BadVlan,
    NetworkError,
)

log = logging.getLogger(__name__)

DEFAULT_MTU = 1500
MIN_MTU, MAX_MTU = 68, 65535
MAX_VLAN = 4094
DEFAULT_CONNECTIVITY_TIMEOUT = 4.0
MAX_CONNECTIVITY_TIMEOUT = 280.0
"""Seconds; the verb's own timeout (300 s) must leave room for the rollback."""
_DEVICE_NAME = re.compile(r"^[^\s/:]{1,15}$")
_BOND_NAME = re.compile(r"^bond\w+$")
_BOND_MODES = {
    "balance-rr": 0,
    "active-backup": 1,
    "balance-xor": 2,
    "broadcast": 3,
    "802.3ad": 4,
    "balance-tlb": 5,
    "balance-alb": 6,
}
BOND_INT_OPTIONS = ("miimon", "updelay", "downdelay", "arp_interval")
"""Bond options given to the kernel, as integers; `mode` besides."""
_NET_KEYS = frozenset(
    {
        "nic", "bonding", "vlan", "bridged", "mtu", "stp", "bootproto", "ipaddr", "netmask",
        "prefix", "gateway", "defaultRoute", "ipv6addr", "ipv6gateway", "ipv6autoconf",
        "dhcpv6", "nameservers", "switch", "hostQos", "custom", "remove", "blockingdhcp",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkAttrs:
    """One network as configured: where it sits and how its top device is set up."""

    nic: str | None = None
    bonding: str | None = None
    vlan: int | None = None
    bridged: bool = True
    mtu: int = DEFAULT_MTU
    stp: bool = False
    ipv4: str | None = None
    """`address/prefix`."""
    gateway: str | None = None
    default_route: bool = False
    ipv6: str | None = None
    """`address/prefix`."""
    ipv6gateway: str | None = None
    ipv6autoconf: bool = False
    nameservers: tuple[str, ...] = ()

    @property
    def base(self) -> str | None:
        """The NIC or bond the network rides on (None: a bridge with no port)."""
        return self.nic or self.bonding

    @property
    def vlan_device(self) -> str | None:
        """The VLAN device's name, `<base>.<id>`, or None."""
        return f"{self.base}.{self.vlan}" if self.vlan is not None and self.base else None

    @property
    def southbound(self) -> str | None:
        """The device under the bridge: the VLAN device, else the base."""
        return self.vlan_device or self.base

    def top(self, name: str) -> str:
        """The device holding the addresses: the bridge, else the southbound device."""
        southbound = self.southbound
        if self.bridged or southbound is None:
            return name
        return southbound

    def devices(self, name: str) -> tuple[str, ...]:
        """Every device this network makes or configures, bottom up."""
        chain = [self.base, self.vlan_device, name if self.bridged else None]
        return tuple(device for device in chain if device)

    def same_layout(self, other: NetworkAttrs) -> bool:
        """Whether `other` sits on the same devices (so it can be changed in place)."""
        return (self.nic, self.bonding, self.vlan, self.bridged) == (
            other.nic,
            other.bonding,
            other.vlan,
            other.bridged,
        )

    def to_wire(self) -> dict[str, Any]:
        """The attributes in VDSM's setupNetworks names (what is persisted)."""
        wire: dict[str, Any] = {"bridged": self.bridged, "mtu": self.mtu, "stp": self.stp}
        optional = {
            "nic": self.nic,
            "bonding": self.bonding,
            "vlan": self.vlan,
            "gateway": self.gateway,
            "ipv6gateway": self.ipv6gateway,
        }
        wire.update({key: value for key, value in optional.items() if value is not None})
        if self.ipv4:
            address, prefix = self.ipv4.split("/")
            wire.update(ipaddr=address, prefix=int(prefix))
        if self.ipv6:
            wire["ipv6addr"] = self.ipv6
        wire.update(
            bootproto="none",
            defaultRoute=self.default_route,
            ipv6autoconf=self.ipv6autoconf,
            dhcpv6=False,
            nameservers=list(self.nameservers),
            switch="legacy",
        )
        return wire


@dataclass(frozen=True, slots=True, kw_only=True)
class BondAttrs:
    """One bond: its slaves and its options (`mode` and the integer options)."""

    nics: tuple[str, ...]
    mode: int = 0
    options: tuple[tuple[str, int], ...] = ()
    hwaddr: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The bond in VDSM's setupNetworks names."""
        text = " ".join([f"mode={self.mode}", *(f"{k}={v}" for k, v in self.options)])
        wire: dict[str, Any] = {"nics": list(self.nics), "options": text, "switch": "legacy"}
        if self.hwaddr:
            wire["hwaddr"] = self.hwaddr
        return wire


@dataclass(frozen=True, slots=True, kw_only=True)
class NetConfig:
    """The configuration of every network and bond this agent manages."""

    networks: Mapping[str, NetworkAttrs] = field(default_factory=dict)
    bonds: Mapping[str, BondAttrs] = field(default_factory=dict)

    def apply(self, request: Request) -> NetConfig:
        """Return the configuration after `request` (removals and replacements).

        Raises:
            BadBridge: a network to remove is not configured.
            BadBonding: a bond to remove is not configured.
        """
        networks = dict(self.networks)
        bonds = dict(self.bonds)
        for name, attrs in request.networks.items():
            if attrs is None:
                if networks.pop(name, None) is None:
                    raise BadBridge(network=name, reason="cannot remove: no such network")
            else:
                networks[name] = attrs
        for name, bond in request.bonds.items():
            if bond is None:
                if bonds.pop(name, None) is None:
                    raise BadBonding(bond=name, reason="cannot remove: no such bond")
            else:
                bonds[name] = bond
        return NetConfig(networks=networks, bonds=bonds)

    def to_json(self) -> dict[str, Any]:
        """The configuration as JSON-able dicts: `networks` and `bonds` in VDSM's names."""
        return {
            "networks": {name: a.to_wire() for name, a in sorted(self.networks.items())},
            "bonds": {name: b.to_wire() for name, b in sorted(self.bonds.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NetConfig:
        """Read back what `to_json` wrote. Raises NetworkError if it does not parse."""
        networks = {name: parse_network(name, raw) for name, raw in data["networks"].items()}
        bonds = {name: parse_bond(name, raw) for name, raw in data["bonds"].items()}
        return cls(networks=networks, bonds=bonds)

    def devices(self) -> set[str]:
        """Every device the configured networks and bonds make or use."""
        names: set[str] = set()
        for name, attrs in self.networks.items():
            names.update(attrs.devices(name))
        for name, bond in self.bonds.items():
            names.add(name)
            names.update(bond.nics)
        return names


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One setupNetworks call, checked: None marks a removal."""

    networks: Mapping[str, NetworkAttrs | None]
    bonds: Mapping[str, BondAttrs | None]
    connectivity_check: bool = True
    connectivity_timeout: float = DEFAULT_CONNECTIVITY_TIMEOUT
    commit: bool = False


def parse_request(
    networks: Mapping[str, Any], bondings: Mapping[str, Any], options: Mapping[str, Any]
) -> Request:
    """Check and canonicalise a setupNetworks call (no kernel state is consulted).

    Raises:
        NetworkError: the first malformed field found, with VDSM's code.
    """
    if not isinstance(networks, Mapping) or not isinstance(bondings, Mapping):
        raise BadParams(reason="networks and bondings must be objects")
    nets: dict[str, NetworkAttrs | None] = {}
    for name, raw in networks.items():
        _check_name(name)
        nets[name] = None if _removal(raw, name) else parse_network(name, raw)
    bonds: dict[str, BondAttrs | None] = {}
    for name, raw in bondings.items():
        if not isinstance(name, str) or not _BOND_NAME.match(name) or len(name) > 15:  # noqa: PLR2004
            raise BadBonding(bond=name, reason="a bond's name is 'bond' and letters or digits")
        bonds[name] = None if _removal(raw, name) else parse_bond(name, raw)
    timeout = _number(options, "connectivityTimeout", DEFAULT_CONNECTIVITY_TIMEOUT)
    if not 0 < timeout <= MAX_CONNECTIVITY_TIMEOUT:
        raise BadParams(
            connectivityTimeout=timeout, reason=f"not in (0, {MAX_CONNECTIVITY_TIMEOUT}]"
        )
    return Request(
        networks=nets,
        bonds=bonds,
        connectivity_check=_flag(options, "connectivityCheck", default=True),
        connectivity_timeout=timeout,
        commit=_flag(options, "commitOnSuccess", default=False),
    )


def parse_network(name: str, raw: Mapping[str, Any]) -> NetworkAttrs:  # noqa: C901
    """Check one network's attributes. Raises NetworkError."""
    unknown = set(raw) - _NET_KEYS
    if unknown:
        log.info("network %s: ignoring attributes %s", name, sorted(unknown))
    for unsupported in ("hostQos", "custom"):
        if raw.get(unsupported):
            raise BadParams(network=name, reason=f"{unsupported} is not supported by this host")
    if raw.get("switch", "legacy") != "legacy":
        raise BadParams(network=name, reason="only the 'legacy' switch type is supported")
    if raw.get("bootproto", "none") not in ("none", "", None):
        raise BadParams(network=name, reason="only static addressing (bootproto 'none')")
    if _flag(raw, "dhcpv6", default=False):
        raise BadParams(network=name, reason="DHCPv6 is not supported by this host")
    nic = _nic(raw.get("nic"), name)
    bonding = raw.get("bonding") or None
    if nic and bonding:
        raise BadParams(network=name, reason="give a nic or a bonding, not both")
    if bonding is not None and not isinstance(bonding, str):
        raise BadBonding(network=name, bonding=bonding, reason="not a bond name")
    vlan = _vlan(raw.get("vlan"), name)
    bridged = _flag(raw, "bridged", default=True)
    if vlan is not None and not (nic or bonding):
        raise BadVlan(network=name, reason="a VLAN needs a nic or a bonding")
    if not bridged and not (nic or bonding):
        raise BadParams(network=name, reason="a bridgeless network needs a nic or a bonding")
    mtu = _int(raw, "mtu", DEFAULT_MTU, name)
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise BadParams(network=name, mtu=mtu, reason=f"MTU must be {MIN_MTU}..{MAX_MTU}")
    ipv4, gateway = _ipv4(raw, name)
    ipv6, ipv6gateway = _ipv6(raw, name)
    servers = raw.get("nameservers") or []
    if not isinstance(servers, list):
        raise BadParams(network=name, reason="nameservers must be a list")
    return NetworkAttrs(
        nic=nic,
        bonding=bonding,
        vlan=vlan,
        bridged=bridged,
        mtu=mtu,
        stp=_flag(raw, "stp", default=False),
        ipv4=ipv4,
        gateway=gateway,
        default_route=_flag(raw, "defaultRoute", default=False),
        ipv6=ipv6,
        ipv6gateway=ipv6gateway,
        ipv6autoconf=_flag(raw, "ipv6autoconf", default=False),
        nameservers=tuple(_address(s, name, "nameserver") for s in servers),
    )


def parse_bond(name: str, raw: Mapping[str, Any]) -> BondAttrs:
    """Check one bond. Raises BadBonding."""
    nics = raw.get("nics")
    if not isinstance(nics, list) or not nics or not all(isinstance(n, str) for n in nics):
        raise BadBonding(bond=name, reason="nics must be a non-empty list of NIC names")
    if len(set(nics)) != len(nics):
        raise BadBonding(bond=name, reason="a NIC is listed twice")
    mode, options = _bond_options(name, raw.get("options") or "")
    hwaddr = raw.get("hwaddr") or None
    if hwaddr is not None and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", hwaddr):
        raise BadBonding(bond=name, hwaddr=hwaddr, reason="not a MAC address")
    return BondAttrs(nics=tuple(sorted(nics)), mode=mode, options=options, hwaddr=hwaddr)


# -- field checkers -----------------------------------------------------------------------


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _DEVICE_NAME.match(name) or name in (".", ".."):
        raise BadBridge(network=name, reason="a network's name is 1-15 characters, no / : or space")


def _removal(raw: Any, name: str) -> bool:
    if not isinstance(raw, Mapping):
        raise BadParams(name=name, reason="attributes must be an object")
    return _flag(raw, "remove", default=False)


def _flag(raw: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = raw.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "yes",
        "on",
        "1",
        "false",
        "no",
        "off",
        "0",
    ):
        return value.lower() in ("true", "yes", "on", "1")
    raise BadParams(**{key: value}, reason="not a boolean")


def _number(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadParams(**{key: value}, reason="not a number") from None


def _int(raw: Mapping[str, Any], key: str, default: int, name: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool):
        raise BadParams(network=name, **{key: value}, reason="not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadParams(network=name, **{key: value}, reason="not an integer") from None


def _nic(value: Any, name: str) -> str | None:
    if isinstance(value, list):  # VDSM's schema says a list; the Engine sends a string
        if len(value) > 1:
            raise BadParams(network=name, nic=value, reason="one nic per network; bond them")
        value = value[0] if value else None
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _DEVICE_NAME.match(value):
        raise BadParams(network=name, nic=value, reason="not a device name")
    return value


def _vlan(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        vlan = int(value)
    except (TypeError, ValueError):
        raise BadVlan(network=name, vlan=value, reason="not an integer") from None
    if isinstance(value, bool) or not 0 <= vlan <= MAX_VLAN:
        raise BadVlan(network=name, vlan=value, reason=f"VLAN id must be 0..{MAX_VLAN}")
    return vlan


def _address(value: Any, name: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadAddress(network=name, **{what: value}, reason="not an IP address") from None


def _ipv4(raw: Mapping[str, Any], name: str) -> tuple[str | None, str | None]:
    address, netmask, prefix = raw.get("ipaddr"), raw.get("netmask"), raw.get("prefix")
    gateway = raw.get("gateway") or None
    if not address:
        if netmask or prefix or gateway:
            raise BadAddress(network=name, reason="netmask, prefix or gateway without ipaddr")
        return None, None
    if bool(netmask) == (prefix not in (None, "")):
        raise BadAddress(network=name, reason="give exactly one of netmask and prefix")
    mask = netmask or str(prefix)
    try:
        interface = ipaddress.IPv4Interface(f"{address}/{mask}")
    except ValueError as error:
        raise BadAddress(network=name, ipaddr=address, reason=str(error)) from None
    if str(interface.ip) != address:
        raise BadAddress(network=name, ipaddr=address, reason="not a dotted IPv4 address")
    if gateway is not None:
        try:
            gateway = str(ipaddress.IPv4Address(gateway))
        except ValueError:
            raise BadAddress(network=name, gateway=gateway, reason="not an IPv4 address") from None
    return f"{interface.ip}/{interface.network.prefixlen}", gateway


def _ipv6(raw: Mapping[str, Any], name: str) -> tuple[str | None, str | None]:
    address = raw.get("ipv6addr") or None
    gateway = raw.get("ipv6gateway") or None
    if gateway == "::":
        gateway = None
    if address is None:
        if gateway is not None:
            raise BadAddress(network=name, reason="ipv6gateway without ipv6addr")
        return None, None
    if not isinstance(address, str) or "/" not in address:
        raise BadAddress(network=name, ipv6addr=address, reason="give address/prefix")
    try:
        interface = ipaddress.IPv6Interface(address)
        gateway = str(ipaddress.IPv6Address(gateway)) if gateway else None
    except ValueError as error:
        raise BadAddress(network=name, ipv6addr=address, reason=str(error)) from None
    return f"{interface.ip}/{interface.network.prefixlen}", gateway


def _bond_options(name: str, text: Any) -> tuple[int, tuple[tuple[str, int], ...]]:
    if not isinstance(text, str):
        raise BadBonding(bond=name, options=text, reason="options must be a string")
    mode = 0
    options: dict[str, int] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise BadBonding(bond=name, option=word, reason="options are key=value")
        if key == "mode":
            mode = _bond_mode(name, value)
        elif key in BOND_INT_OPTIONS and value.isdigit():
            options[key] = int(value)
        else:
            raise BadBonding(bond=name, option=word, reason="unknown or malformed bond option")
    return mode, tuple(sorted(options.items()))


def _bond_mode(name: str, value: str) -> int:
    if value.isdigit() and int(value) in _BOND_MODES.values():
        return int(value)
    if value in _BOND_MODES:
        return _BOND_MODES[value]
    raise BadBonding(bond=name, mode=value, reason="unknown bond mode")


__all__ = [
    "BondAttrs",
    "NetConfig",
    "NetworkAttrs",
    "NetworkError",
    "Request",
    "parse_bond",
    "parse_network",
    "parse_request",
]
