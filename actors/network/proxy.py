"""Typed clients of the network actors (addresses in hostvisor.actors.network.addresses).

Each method sends the call of the actor's method of the same name and returns at
once with a future of its answer (`hostvisor.actors.actor.call`, no pykka proxy
built per call); the only place those names are strings. Read a future with a
timeout, or await it on the API loop (`hostvisor.api.rpc.bridge.settled`).

The configurator's slow answers (`setup_networks`, `capabilities`, `statistics`)
are themselves futures, settled by its namespace workers: await both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.network.actor import NetworkStatus
from hostvisor.actors.network.configurator import ConfirmConnectivity
from hostvisor.actors.network.model import NetConfig


@final
class NetworkConfiguratorProxy:
    """Calls to the NetworkConfigurator. Thread-safe; holds the ref only."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def setup_networks(
        self, networks: Mapping[str, Any], bondings: Mapping[str, Any], options: Mapping[str, Any]
    ) -> pykka.Future[pykka.Future[dict[str, Any]]]:
        """Start a setupNetworks; the inner future is VDSM's status once it is in force.

        Fails (outer future) with NetworkBusy or a NetworkError for a bad request.
        """
        return call(self.ref, "setup_networks", networks, bondings, options)

    def confirm_connectivity(self) -> None:
        """Tell (no answer) that a client reached the host now.

        Raises:
            pykka.ActorDeadError: the configurator is not running.
        """
        self.ref.tell(ConfirmConnectivity())

    def set_safe_config(self) -> pykka.Future[None]:
        """Mark the running configuration safe. Fails with NetworkBusy mid-change."""
        return call(self.ref, "set_safe_config")

    def dirty(self) -> pykka.Future[bool]:
        """Whether the running configuration differs from the safe one."""
        return call(self.ref, "dirty")

    def running_config(self) -> pykka.Future[NetConfig]:
        """The configuration in force."""
        return call(self.ref, "running_config")

    def capabilities(self) -> pykka.Future[pykka.Future[dict[str, Any]]]:
        """VDSM's network capabilities, read in the managed namespace."""
        return call(self.ref, "capabilities")

    def statistics(self) -> pykka.Future[pykka.Future[dict[str, Any]]]:
        """The network part of Host.getStats, read in the managed namespace."""
        return call(self.ref, "statistics")


@final
class NetworkProxy:
    """Calls to one NetworkActor. Thread-safe; holds the ref only."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def status(self) -> pykka.Future[NetworkStatus]:
        """The network's view of its devices."""
        return call(self.ref, "status")
