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
from typing import Annotated, Any

import pykka

from hostvisor.actors.errors import Unavailable
from hostvisor.actors.network import errors
from hostvisor.actors.network.addresses import NETCONF
from hostvisor.actors.network.proxy import NetworkConfiguratorProxy
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.verbs import Verb
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

SETUP_TIMEOUT = 300.0
"""Seconds setupNetworks may take: the connectivity wait (at most 280 s) and a rollback."""


_NETWORK_ERRORS = (
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
)


@dataclass(frozen=True, slots=True)
class NetworkApi:
    """What the network verbs reach: the registry."""

    registry: Registry

    def configurator(self) -> NetworkConfiguratorProxy:
        """Return the network configurator's client, or raise Unavailable."""
        ref = self.registry.get(NETCONF)
        if ref is None:
            raise Unavailable(actor=NETCONF, reason="not running")
        return NetworkConfiguratorProxy(ref)

    def confirm(self) -> None:
        """Tell the configurator that a client reached the host; dropped if it is down."""
        ref = self.registry.get(NETCONF)
        if ref is not None:
            try:
                NetworkConfiguratorProxy(ref).confirm_connectivity()
            except pykka.ActorDeadError:
                return


def network_verbs(api: NetworkApi) -> list[Verb]:
    """Return the network verbs served by `api`."""
    return verbs_of(NetworkHandlers(api))


class NetworkHandlers:
    """The handlers of the network verbs, over one `NetworkApi`. Each runs on the API loop."""

    def __init__(self, api: NetworkApi) -> None:
        """Serve through `api`."""
        self.api = api

    @verb("Host", "setupNetworks", returns="Status", errors=_NETWORK_ERRORS, timeout=SETUP_TIMEOUT)
    async def setup_networks(
        self,
        *,
        networks: Annotated[dict[str, Any], Arg("{name: attributes or {remove}}")],
        bondings: Annotated[dict[str, Any], Arg("{name: {nics, options}}", default={})],
        options: Annotated[
            dict[str, Any],
            Arg("connectivityCheck, connectivityTimeout, commitOnSuccess", default={}),
        ],
    ) -> dict[str, Any]:
        """Add, change and remove networks and bonds, all or nothing.

        Waits for the change (and the Engine's confirmation, if asked) off the loop.
        """
        log.info("setupNetworks: networks %s, bondings %s, options %s",
                 sorted(networks), sorted(bondings), options)  # fmt: skip
        started = await settled(self.api.configurator().setup_networks(networks, bondings, options))
        return await settled(started)

    @verb("Host", "setSafeNetworkConfig", errors=(errors.NetworkBusy,))
    async def set_safe(self) -> bool:
        """Mark the running network configuration safe: it is restored after a boot."""
        await settled(self.api.configurator().set_safe_config())
        return True

    @verb("Host", "getNetworkCapabilities", returns="NetworkCapabilities")
    async def capabilities(self) -> dict[str, Any]:
        """The host's networks, bridges, NICs, bonds and VLANs."""
        return await settled(await settled(self.api.configurator().capabilities()))

    @verb("Host", "getNetworkStatistics", returns="NetworkStatistics")
    async def statistics(self) -> dict[str, Any]:
        """The network part of Host.getStats: counters of every device."""
        return await settled(await settled(self.api.configurator().statistics()))
