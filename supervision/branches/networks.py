"""The `networks` branch: a NetworkActor per network, the link monitor, the configurator.

    networks (rest_for_one)
    ├── nets (one_for_one, dynamic)   networks/nets/<name>
    ├── monitor                       the kernel's link events, told to the network actors
    ├── netconf                       the configuration and setupNetworks; its on_start
    │                                 re-creates every network actor (the recovery)
    └── recoverer                     reports the branch recovered once netconf is up

The configurator is the network's recoverer proper (it must be: it owns the
configuration it re-reads); the `recoverer` after it only reports, so the gate
treats every resource branch alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pykka

from hostvisor.actors.errors import HostvisorError, Timeout, Unavailable
from hostvisor.actors.hooks import Hooks
from hostvisor.actors.host.actor import HostNetwork
from hostvisor.actors.network.actor import NetworkActor
from hostvisor.actors.network.addresses import NETCONF, NETS, NETS_ID, NETWORKS, network_path
from hostvisor.actors.network.configurator import NetworkChildren, NetworkConfigurator
from hostvisor.actors.network.model import NetworkAttrs
from hostvisor.actors.network.monitor import LinkMonitor, LinkState
from hostvisor.actors.network.persistence import NetStore
from hostvisor.actors.network.proxy import NetworkConfiguratorProxy
from hostvisor.supervision.branches.context import ASK_TIMEOUT, TreeContext
from hostvisor.supervision.spec import (
    RESOURCE_CHILD_BUDGET,
    ChildSpec,
    Restart,
    Strategy,
    SupervisorFlags,
)
from hostvisor.supervision.supervisor import SupervisorHandle

NETS_FLAGS = SupervisorFlags(
    strategy=Strategy.ONE_FOR_ONE, intensity=20, period=10.0, per_child=RESOURCE_CHILD_BUDGET
)
"""A network actor's crash loop gives up that network alone (retried after a backoff)."""
NETWORK_FLAGS = SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=10, period=10.0)
"""nets, monitor, netconf: the configurator remakes the network actors if `nets` restarts."""


class NetworksBranch:
    """Builds the `networks` branch and the hooks its actors and the host actor use."""

    def __init__(self, ctx: TreeContext) -> None:
        """Describe the branch of `ctx`; nothing starts here."""
        self.ctx = ctx

    def netconf(self) -> NetworkConfiguratorProxy:
        """The network configurator's typed client. Raises NotFound while it is down."""
        return NetworkConfiguratorProxy(self.ctx.registry.lookup(NETCONF))

    def ask_netconf(self, read: Callable[[NetworkConfiguratorProxy], pykka.Future[Any]]) -> Any:
        """Ask the configurator through `read`; wait for its answer (blocks).

        An answer that is itself a future is waited for too: at most twice ASK_TIMEOUT.
        """
        try:
            answer = read(self.netconf()).get(timeout=ASK_TIMEOUT)
            return answer.get(timeout=ASK_TIMEOUT) if isinstance(answer, pykka.Future) else answer
        except pykka.Timeout:
            raise Timeout(actor=NETCONF, timeout=ASK_TIMEOUT) from None
        except pykka.ActorDeadError:
            raise Unavailable(actor=NETCONF, reason="actor is not running") from None

    def host_network(self) -> HostNetwork:
        """How the host actor reads the managed namespace's networks (through netconf)."""

        def stats() -> dict[str, Any]:
            try:
                result: dict[str, Any] = self.ask_netconf(NetworkConfiguratorProxy.statistics)
            except HostvisorError:
                return {"network": {}, "rxDropped": "0", "txDropped": "0"}
            return result

        def dirty() -> bool:
            try:
                return bool(self.ask_netconf(NetworkConfiguratorProxy.dirty))
            except HostvisorError:
                return False

        return HostNetwork(
            caps=lambda: self.ask_netconf(NetworkConfiguratorProxy.capabilities),
            stats=stats,
            dirty=dirty,
        )

    def refs(self) -> list[pykka.ActorRef[Any]]:
        """Return the live NetworkActors (the link monitor tells them every link event)."""
        return list(self.ctx.children(NETS).values())

    def children(self) -> NetworkChildren:
        """How the configurator starts, tells and stops NetworkActors under `networks/nets`."""
        registry = self.ctx.registry
        publish = self.ctx.publish

        def handle() -> SupervisorHandle:
            return SupervisorHandle(registry.lookup(NETS))

        def start(name: str, attrs: NetworkAttrs, links: Mapping[str, LinkState]) -> None:
            handle().start_child(
                ChildSpec(
                    id=name,
                    start=lambda link: NetworkActor.spawn(
                        link, name=name, attrs=attrs, links=links, publish=publish
                    ),
                    restart=Restart.TRANSIENT,
                )
            )

        def stop(name: str) -> None:
            handle().terminate_child(name)
            handle().delete_child(name)

        return NetworkChildren(
            running=lambda: {child.id for child in handle().which_children()},
            start=start,
            stop=stop,
            ref=lambda name: registry.get(network_path(name)),
        )

    def build(self) -> ChildSpec:
        """The branch: network actors, the link monitor, the configurator, the reporter."""
        config = self.ctx.config
        netns = config.net_namespace or None
        nets = self.ctx.branch(NETS_ID, NETS_FLAGS)
        monitor = ChildSpec(
            id="monitor",
            start=lambda link: LinkMonitor.spawn(link, netns=netns, targets=self.refs),
        )
        store = NetStore.under(config.state_dir)
        netconf = ChildSpec(
            id="netconf",
            start=lambda link: NetworkConfigurator.spawn(
                link,
                netns=netns,
                store=store,
                children=self.children(),
                hooks=Hooks(directory=config.hooks_dir, timeout=config.hook_timeout),
            ),
            start_timeout=config.start_timeout,
        )
        # netconf's on_start re-created the network actors before this starts.
        recoverer = self.ctx.recoverer(
            NETWORKS, lambda: len(self.ctx.children(NETS)), what="networks"
        )
        return self.ctx.branch(NETWORKS, NETWORK_FLAGS, [nets, monitor, netconf, recoverer])
