"""Typed client of the HypervisorActor (`hostvisor.actors.hypervisor.addresses.HYPERVISOR`).

Each method sends the call of the actor's method of the same name and returns at
once with a future of its answer (`hostvisor.actors.actor.call`); the only place
those names are strings. Read a future with a timeout.
"""

from __future__ import annotations

from typing import Any, final

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.hypervisor.connection import HypervisorInfo


@final
class HypervisorProxy:
    """Calls to the HypervisorActor. Thread-safe; holds the ref only."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def info(self) -> pykka.Future[HypervisorInfo]:
        """The hypervisor's facts (uri, driver, versions, accelerator)."""
        return call(self.ref, "info")

    def connection(self) -> pykka.Future[Any]:
        """The open libvirt connection (a thread-safe handle)."""
        return call(self.ref, "connection")
