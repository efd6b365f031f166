"""What every branch builder is given: the config, the registry, the runtime, the gate.

A branch builder (`supervision/branches/<branch>.py`) describes one branch of the
host's tree as a `ChildSpec`, from a `TreeContext`. The context also carries the
few lookups several branches share — the libvirt connection, the event bus, telling
an actor by path — each of which looks the actor up in the registry when called, so
nothing here holds a reference that a restart would make stale.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import ask
from hostvisor.actors.errors import NotFound
from hostvisor.actors.events import Event
from hostvisor.actors.events_proxy import EVENTS, EventBusProxy
from hostvisor.actors.hypervisor.actor import GetConnection
from hostvisor.actors.hypervisor.addresses import HYPERVISOR
from hostvisor.actors.recovery import RECOVERER_ID, Recoverer
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.vm.migrating import PeerConnect, no_peers
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry
from hostvisor.supervision.spec import ChildSpec, SupervisorFlags
from hostvisor.supervision.supervisor import SupervisorHandle, supervisor_spec

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0
"""How long a lookup through another branch's actor may take."""

Subscribers = Callable[[], Sequence[pykka.ActorRef[Any]]]
"""Returns the actors that hear every event (the API's front); given by the API layer."""


def _no_subscribers() -> Sequence[pykka.ActorRef[Any]]:
    return ()


def _ignore_report(_branch: str, _adopted: int) -> None:
    """Where recoverers report when nobody gates on them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeContext:
    """One host's config, registry, runtime, and the hooks the API layer gives the tree.

    Attributes:
        report_recovered: told by each branch's recoverer after every recovery
            (branch name, resources adopted); the embedded host opens the API's gate
            once every resource branch has reported.
        subscribers: the actors that receive every published event.
        peers: how this host reaches another host's agent (migration); given by
            the API layer, which owns the client.
    """

    config: Config
    registry: Registry
    runtime: Runtime
    report_recovered: Callable[[str, int], None] = _ignore_report
    subscribers: Subscribers = _no_subscribers
    peers: PeerConnect = no_peers

    # -- shared lookups (each runs in the caller's thread and may block briefly) ------------

    def connection(self) -> Any:
        """Return the open libvirt connection (an ask to the hypervisor actor)."""
        return ask(self.registry.lookup(HYPERVISOR), GetConnection(), timeout=ASK_TIMEOUT)

    def publish(self, event: Event) -> None:
        """Tell the event bus to publish `event`; dropped if the bus is down."""
        ref = self.registry.get(EVENTS)
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                EventBusProxy(ref).publish(event)

    def tell(self, path: str, message: Any) -> None:
        """Tell the actor at `path` `message`; dropped if nothing runs there."""
        ref = self.registry.get(path)
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(message)

    def children(self, path: str) -> dict[str, pykka.ActorRef[Any]]:
        """Return the live children of the supervisor at `path`, by child id."""
        try:
            paths = self.registry.status(path).children
        except NotFound:
            return {}
        refs = {child.rsplit("/", 1)[-1]: self.registry.get(child) for child in paths}
        return {child_id: ref for child_id, ref in refs.items() if ref is not None}

    def supervisor(self, path: str) -> SupervisorHandle:
        """A handle on the supervisor at `path`. Raises NotFound."""
        return SupervisorHandle(self.registry.lookup(path))

    # -- spec helpers --------------------------------------------------------------------

    def branch(
        self,
        name: str,
        flags: SupervisorFlags,
        children: Sequence[ChildSpec] = (),
    ) -> ChildSpec:
        """The spec of a supervisor named `name` over `children` (on the tree's clock)."""
        return supervisor_spec(name, flags=flags, children=children, registry=self.registry)

    def recoverer(self, branch: str, recover: Callable[[], int], *, what: str) -> ChildSpec:
        """The spec of a branch's recoverer: runs `recover()` on every start, then reports.

        Put it last in a rest_for_one branch, after the dynamic supervisor it fills;
        `what` names the resources in its log line ("recovered 3 VMs in 0.02 s").
        """
        report = self.report_recovered
        return ChildSpec(
            id=RECOVERER_ID,
            start=lambda link: Recoverer.spawn(
                link, branch=branch, recover=recover, report=report, what=what
            ),
        )
