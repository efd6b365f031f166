"""The Host namespace (reference/vdsm-wire.md §3.1): declarations and handlers.

Handlers never block the API loop: they answer inline when the answer is at
hand (ping, echo) or send the call to the owning actor and return its future.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.errors import InvalidArgument, Unavailable
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

HOST_ACTOR = "hosts/host"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def interface_of(address: str) -> str:
    """Return the name of the NIC that holds the local `address`, or ""."""
    address = address.strip("[]")
    if address.startswith("::ffff:"):
        address = address.removeprefix("::ffff:")
    for name, addresses in psutil.net_if_addrs().items():
        if any(entry.address.split("%", 1)[0] == address for entry in addresses):
            return name
    return ""


def _no_network_check() -> None:
    """Where connectivity is confirmed when no network configurator is wired in."""


@dataclass(frozen=True, slots=True)
class HostApi:
    """What the Host verbs reach: the registry, and the local interface lookup."""

    registry: Registry
    interface_of: Callable[[str], str] = interface_of
    """Returns the name of the NIC that owns a local address (lastClientIface)."""
    confirm_connectivity: Callable[[], None] = _no_network_check
    """Tells the network configurator a client reached the host (never blocks)."""

    def confirmed(self, _call: Call) -> bool:
        """Confirm connectivity (Host.ping, Host.confirmConnectivity); answer true."""
        self.confirm_connectivity()
        return True

    def host(self) -> pykka.ActorRef[Any]:
        """Return the HostActor, or raise Unavailable."""
        ref = self.registry.get(HOST_ACTOR)
        if ref is None:
            raise Unavailable(actor=HOST_ACTOR, reason="not running")
        return ref


def host_verbs(api: HostApi) -> list[Verb]:
    """Return the Host verbs served by `api`."""

    async def capabilities(request: Call) -> Any:
        info = await settled(call(api.host(), "capabilities"))
        iface = api.interface_of(request.local.rsplit(":", 1)[0]) if request.local else ""
        return {**info, "lastClientIface": iface}

    return [
        Verb(
            namespace="Host",
            name="ping",
            doc="Check the agent answers; confirms connectivity.",
            handler=api.confirmed,
            returns="boolean",
        ),
        Verb(
            namespace="Host",
            name="ping2",
            doc="Check the agent answers.",
            handler=lambda _call: True,
            returns="boolean",
        ),
        Verb(
            namespace="Host",
            name="confirmConnectivity",
            doc="Confirm that the Engine still reaches the host after setupNetworks.",
            handler=api.confirmed,
            returns="boolean",
        ),
        Verb(
            namespace="Host",
            name="echo",
            doc="Return the message sent.",
            params=(Param(name="message", kind=Kind.ANY, doc="anything"),),
            handler=lambda request: request.args["message"],
            returns="any",
        ),
        Verb(
            namespace="Host",
            name="getCapabilities",
            doc="The host's capabilities.",
            handler=capabilities,
            returns="HostCapabilities",
            timeout=60.0,
        ),
        Verb(
            namespace="Host",
            name="getStats",
            doc="The host's statistics.",
            handler=lambda _call: call(api.host(), "stats"),
            returns="HostStats",
        ),
        Verb(
            namespace="Host",
            name="getHardwareInfo",
            doc="The host's DMI data.",
            handler=lambda _call: call(api.host(), "hardware_info"),
            returns="HardwareInfo",
        ),
        Verb(
            namespace="Host",
            name="setLogLevel",
            doc="Set the level of a logger.",
            params=(
                Param(name="level", kind=Kind.STR_OR_INT, doc="DEBUG, INFO, WARNING, ERROR"),
                Param(name="name", kind=Kind.STR, doc="logger name; empty: the root", default=""),
            ),
            handler=_set_log_level,
            returns="boolean",
            errors=(InvalidArgument,),
        ),
    ]


def _set_log_level(request: Call) -> bool:
    level = request.args["level"]
    name = level.upper() if isinstance(level, str) else logging.getLevelName(level)
    if name not in _LEVELS:
        raise InvalidArgument(level=level, reason=f"not one of {', '.join(_LEVELS)}")
    logging.getLogger(request.args["name"] or None).setLevel(name)
    log.info("log level of %r set to %s", request.args["name"] or "root", name)
    return True
