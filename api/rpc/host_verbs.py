"""The Host namespace (reference/vdsm-wire.md §3.1): declarations and handlers.

Handlers never block the API loop: they answer inline when the answer is at
hand (ping, echo) or send the call to the owning actor and return its future.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import psutil
import pykka

from hostvisor.actors.errors import InvalidArgument, Unavailable
from hostvisor.actors.host.addresses import HOST
from hostvisor.actors.host.proxy import HostProxy
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Call, Verb
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

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


PING_CONFIRMS_EVERY = 1.0
"""Seconds between two connectivity confirmations made by `Host.ping`."""


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

    def host(self) -> HostProxy:
        """Return the HostActor's client, or raise Unavailable (on the caller's thread)."""
        ref = self.registry.get(HOST)
        if ref is None:
            raise Unavailable(actor=HOST, reason="not running")
        return HostProxy(ref)


def host_verbs(api: HostApi) -> list[Verb]:
    """Return the Host verbs served by `api`."""
    return verbs_of(HostHandlers(api))


class HostHandlers:
    """The handlers of the Host verbs, over one `HostApi`. Each runs on the API loop."""

    def __init__(self, api: HostApi) -> None:
        """Serve through `api`."""
        self.api = api
        self.storage = StorageApi(api.registry)
        self._pinged_at = float("-inf")  # when a ping last confirmed connectivity (the loop's)
        self._ping_pending = False  # a confirmation is due at the end of the second

    @verb(
        "Host",
        "confirmConnectivity",
        doc="Confirm that the Engine still reaches the host after setupNetworks.",
    )
    def confirmed(self) -> bool:
        """Tell the network configurator that a client reached the host (never blocks)."""
        self.api.confirm_connectivity()
        return True

    @verb("Host", "ping")
    def ping(self) -> bool:
        """Check the agent answers; confirms connectivity too, at most once a second.

        The Engine pings often; telling the configurator on each ping costs a wake of
        its thread per call. A ping within a second of the last confirmation is
        confirmed at the end of that second instead (once, however many came): never
        lost, at most a second late, which changes nothing for a setupNetworks that
        waits for its whole connectivity timeout (VDSM: 120 s).
        """
        now = time.monotonic()
        due = self._pinged_at + PING_CONFIRMS_EVERY
        if now >= due:
            self._confirm_ping()
        elif not self._ping_pending:
            self._ping_pending = True
            asyncio.get_running_loop().call_later(due - now, self._confirm_ping)
        return True

    def _confirm_ping(self) -> None:
        self._ping_pending = False
        self._pinged_at = time.monotonic()
        self.api.confirm_connectivity()

    @verb("Host", "ping2")
    def ping2(self) -> bool:
        """Check the agent answers."""
        return True

    @verb("Host", "echo", returns="any")
    def echo(self, *, message: Annotated[Any, Arg("anything")]) -> Any:
        """Return the message sent."""
        return message

    @verb("Host", "getCapabilities", returns="HostCapabilities", timeout=60.0)
    async def get_capabilities(self, request: Call) -> dict[str, Any]:
        """The host's capabilities.

        `lastClientIface` is the NIC of the local address the call arrived on.
        """
        info = await settled(self.api.host().capabilities())
        iface = self.api.interface_of(request.local.rsplit(":", 1)[0]) if request.local else ""
        return {**info, "lastClientIface": iface}

    @verb("Host", "getStats", returns="HostStats")
    async def get_stats(self) -> dict[str, Any]:
        """The host's statistics.

        `storageDomains` is every monitored domain's last check, as VDSM's repoStats
        (StorageApi.repo_stats: code and version ints, lastCheck and delay strings,
        valid, acquired and actual booleans; what VdsBrokerObjectsBuilder parses).
        Asked beside the host's own figures; never waits for a check.
        """
        stats, domains = await asyncio.gather(
            settled(self.api.host().stats()), self.storage.repo_stats()
        )
        return {**stats, "storageDomains": domains}

    @verb("Host", "getHardwareInfo", returns="HardwareInfo")
    def get_hardware_info(self) -> pykka.Future[dict[str, str]]:
        """The host's DMI data."""
        return self.api.host().hardware_info()

    @verb("Host", "setLogLevel", errors=(InvalidArgument,))
    def set_log_level(
        self,
        *,
        level: Annotated[str | int, Arg("DEBUG, INFO, WARNING, ERROR")],
        name: Annotated[str, Arg("logger name; empty: the root")] = "",
    ) -> bool:
        """Set the level of a logger.

        Raises:
            InvalidArgument: `level` is not one of the levels.
        """
        named = level.upper() if isinstance(level, str) else logging.getLevelName(level)
        if named not in _LEVELS:
            raise InvalidArgument(level=level, reason=f"not one of {', '.join(_LEVELS)}")
        logging.getLogger(name or None).setLevel(named)
        log.info("log level of %r set to %s", name or "root", named)
        return True
