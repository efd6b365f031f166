"""The Host verbs about networks (reference/vdsm-wire.md §3.1, §9).

Every verb goes to the network configurator (`networks/netconf`), which answers
with a future (the work runs in the managed namespace's worker), so each handler
awaits twice. `Host.setupNetworks` may wait for the Engine's connectivity
confirmation (up to `connectivityTimeout`, which is bounded below this verb's own
timeout), and answers VDSM's status `{"code": 0, "message": "Done"}`.
`Host.confirmConnectivity` and `Host.ping` are Host verbs; they reach the
configurator through `NetworkApi.confirm`, which never blocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.errors import Unavailable
from hostvisor.actors.network import errors
from hostvisor.actors.network.configurator import ConfirmConnectivity
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

NETCONF = "networks/netconf"
SETUP_TIMEOUT = 300.0
"""Seconds setupNetworks may take: the connectivity wait (at most 280 s) and a rollback."""


@dataclass(frozen=True, slots=True)
class NetworkApi:
    """What the network verbs reach: the registry."""

    registry: Registry

    def configurator(self) -> pykka.ActorRef[Any]:
        """Return the network configurator, or raise Unavailable."""
        ref = self.registry.get(NETCONF)
        if ref is None:
            raise Unavailable(actor=NETCONF, reason="not running")
        return ref

    def confirm(self) -> None:
        """Tell the configurator that a client reached the host; dropped if it is down."""
        ref = self.registry.get(NETCONF)
        if ref is not None:
            try:
                ref.tell(ConfirmConnectivity())
            except pykka.ActorDeadError:
                return

    async def ask_twice(self, method: str, *args: Any) -> Any:
        """Call `method` on the configurator and await the future it answers."""
        inner = await settled(call(self.configurator(), method, *args))
        return await settled(inner)


def network_verbs(api: NetworkApi) -> list[Verb]:
    """Return the network verbs served by `api`."""

    async def setup_networks(request: Call) -> Any:
        args = request.args
        log.info("setupNetworks: networks %s, bondings %s, options %s",
                 sorted(args["networks"]), sorted(args["bondings"]), args["options"])  # fmt: skip
        return await api.ask_twice("setup_networks", args["networks"], args["bondings"],
                                   args["options"])  # fmt: skip

    async def set_safe(_request: Call) -> bool:
        await settled(call(api.configurator(), "set_safe_config"))
        return True

    return [
        Verb(
            namespace="Host",
            name="setupNetworks",
            doc="Add, change and remove networks and bonds, all or nothing.",
            params=(
                Param(name="networks", kind=Kind.OBJECT, doc="{name: attributes or {remove}}"),
                Param(name="bondings", kind=Kind.OBJECT, doc="{name: {nics, options}}", default={}),
                Param(
                    name="options",
                    kind=Kind.OBJECT,
                    doc="connectivityCheck, connectivityTimeout, commitOnSuccess",
                    default={},
                ),
            ),
            handler=setup_networks,
            returns="Status",
            errors=(
                errors.BadParams,
                errors.BadAddress,
                errors.BadNic,
                errors.UsedNic,
                errors.BadBonding,
                errors.BadVlan,
                errors.BadBridge,
                errors.FailedIfup,
                errors.UsedBond,
                errors.ConnectivityLost,
                errors.NetworkBusy,
            ),
            timeout=SETUP_TIMEOUT,
        ),
        Verb(
            namespace="Host",
            name="setSafeNetworkConfig",
            doc="Mark the running network configuration safe: it is restored after a boot.",
            handler=set_safe,
            returns="boolean",
            errors=(errors.NetworkBusy,),
        ),
        Verb(
            namespace="Host",
            name="getNetworkCapabilities",
            doc="The host's networks, bridges, NICs, bonds and VLANs.",
            handler=lambda _call: api.ask_twice("capabilities"),
            returns="NetworkCapabilities",
        ),
        Verb(
            namespace="Host",
            name="getNetworkStatistics",
            doc="The network part of Host.getStats: counters of every device.",
            handler=lambda _call: api.ask_twice("statistics"),
            returns="NetworkStatistics",
        ),
    ]
