"""Typed client of the HostActor (`hostvisor.actors.host.addresses.HOST`).

Each method sends the call of the actor's method of the same name and returns at
once with a future of its answer (`hostvisor.actors.actor.call`, no pykka proxy
built per call); the only place those names are strings. Read a future with a
timeout, or await it on the API loop (`hostvisor.api.rpc.bridge.settled`).
"""

from __future__ import annotations

from typing import Any, final

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.host.actor import HostFacts


@final
class HostProxy:
    """Calls to the HostActor. Thread-safe; holds the ref only."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def capabilities(self) -> pykka.Future[dict[str, Any]]:
        """Host.getCapabilities' `info` (without lastClientIface, which the API adds)."""
        return call(self.ref, "capabilities")

    def stats(self) -> pykka.Future[dict[str, Any]]:
        """Host.getStats' `info`."""
        return call(self.ref, "stats")

    def hardware_info(self) -> pykka.Future[dict[str, str]]:
        """Host.getHardwareInfo's result."""
        return call(self.ref, "hardware_info")

    def facts(self) -> pykka.Future[HostFacts]:
        """The host's facts (uuid, …)."""
        return call(self.ref, "facts")

    def uptime(self) -> pykka.Future[float]:
        """Seconds since the HostActor started."""
        return call(self.ref, "uptime")
