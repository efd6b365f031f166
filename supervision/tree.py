"""The host's own supervision tree: which supervisors and actors run, in what order.

    root (one_for_one)
    ├── infra (rest_for_one)      hypervisor: the libvirt connection; events: the bus
    ├── hosts (one_for_one)       host: facts, capabilities, statistics;
    │                             vmstats: the bulk VM stats sampler;
    │                             vmboard: every VM's last entry, for listings
    ├── vms (one_for_one)         a VmActor per VM id, added at run time
    ├── containers (one_for_one)  a ContainerActor per container-VM id
    ├── storage (one_for_one)     the pool, a StorageDomainActor per domain, the job runner
    ├── networks (one_for_one)    a NetworkActor per network
    └── api (rest_for_one)        front: the JSON-RPC/STOMP edge; opens last

Start in this order, stop in reverse: the API closes first and the hypervisor
connection last. Each later issue adds its actors here, in one place.

The API edge is built by the caller and passed in as `api_children`: the
supervision layer does not import the API (imports point api -> supervision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pykka

from hostvisor.actors.actor import ask
from hostvisor.actors.errors import NotFound
from hostvisor.actors.events import Event, EventBus, Publish
from hostvisor.actors.host.actor import HostActor
from hostvisor.actors.hypervisor.actor import GetConnection, HypervisorActor
from hostvisor.actors.hypervisor.events import DomainLifecycle
from hostvisor.actors.vm.actor import VmActor, VmServices
from hostvisor.actors.vm.board import Forget, Post, VmBoard
from hostvisor.actors.vm.domxml import DomainSpec
from hostvisor.actors.vm.sampler import VmStatsSampler
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry, child_path
from hostvisor.supervision.spec import ChildSpec, Restart, Strategy, SupervisorFlags
from hostvisor.supervision.supervisor import supervisor_spec

RESOURCE_FLAGS = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=10.0)
"""Per-resource supervisors: one flapping VM must not take all VMs down with it quickly."""

HYPERVISOR = "infra/hypervisor"
EVENTS = "infra/events"
VM_BOARD = "hosts/vmboard"
VMS = "vms"
EVENT_SUBSCRIBERS = ("api/front",)
ASK_TIMEOUT = 10.0


class HostTree:
    """Builds one host's tree from its config, and the per-VM children added later.

    Holds no state of its own beyond what it was given: everything it returns
    looks actors up in the registry when called.
    """

    def __init__(self, config: Config, *, registry: Registry, clock: Clock | None = None) -> None:
        """Describe the tree of `config`; nothing starts here."""
        self.config = config
        self.registry = registry
        self.clock = clock
        self.vm_services = VmServices(
            connection=self.connection, publish=self.publish, board=self.tell_board
        )

    # -- lookups handed to actors (each runs in the caller's thread) -----------------------

    def connection(self) -> Any:
        """Return the open libvirt connection (an ask to the hypervisor actor)."""
        return ask(self.registry.lookup(HYPERVISOR), GetConnection(), timeout=ASK_TIMEOUT)

    def publish(self, event: Event) -> None:
        """Tell the event bus to publish `event`; dropped if the bus is down."""
        self._tell(EVENTS, Publish(event))

    def tell_board(self, message: Post | Forget) -> None:
        """Tell the VM board a VM's entry (or to forget it); dropped if the board is down."""
        self._tell(VM_BOARD, message)

    def _tell(self, path: str, message: Any) -> None:
        ref = self.registry.get(path)
        if ref is not None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                return

    def deliver(self, event: DomainLifecycle) -> None:
        """Tell a lifecycle event to the VM that owns the domain (libvirt's thread)."""
        self._tell(child_path(VMS, event.vm_id), event)

    def vm_refs(self) -> dict[str, pykka.ActorRef[Any]]:
        """Return the live VmActors by VM id."""
        try:
            children = self.registry.status(VMS).children
        except NotFound:
            return {}
        refs = {path.rsplit("/", 1)[-1]: self.registry.get(path) for path in children}
        return {vm_id: ref for vm_id, ref in refs.items() if ref is not None}

    def subscribers(self) -> list[pykka.ActorRef[Any]]:
        """Return the actors that receive every event."""
        return [ref for path in EVENT_SUBSCRIBERS if (ref := self.registry.get(path)) is not None]

    # -- specs ------------------------------------------------------------------------------

    def vm_child(self, spec: DomainSpec, *, recover: bool = False) -> ChildSpec:
        """Return the child spec of one VM's actor.

        Transient: a VmActor that exits normally (destroyed) is not restarted; one
        that crashes is, and re-reads libvirt with `recover=True`.
        """
        config = self.config
        services = self.vm_services

        def start(link: Any) -> pykka.ActorRef[Any]:
            restarted = link.incarnation > 1
            return VmActor.spawn(
                link,
                spec=spec,
                services=services,
                recover=recover or restarted,
                powering_up=config.vm_powering_up_seconds,
                operation_timeout=config.vm_operation_timeout,
            )

        return ChildSpec(id=spec.vm_id, start=start, restart=Restart.TRANSIENT)

    def children(self, api_children: Sequence[ChildSpec] = ()) -> Sequence[ChildSpec]:
        """Return the root supervisor's children, in start order."""
        config = self.config

        def branch(name: str, flags: SupervisorFlags, kids: Sequence[ChildSpec] = ()) -> ChildSpec:
            return supervisor_spec(
                name, flags=flags, children=kids, registry=self.registry, clock=self.clock
            )

        hypervisor = ChildSpec(
            id="hypervisor",
            start=lambda link: HypervisorActor.spawn(
                link, uri=config.libvirt_uri, embed_root=config.embed_root, deliver=self.deliver
            ),
            start_timeout=config.start_timeout,
        )
        events = ChildSpec(
            id="events", start=lambda link: EventBus.spawn(link, subscribers=self.subscribers)
        )
        host = ChildSpec(
            id="host",
            start=lambda link: HostActor.spawn(
                link,
                state_dir=config.state_dir,
                connection=self.connection,
                sample_interval=config.host_sample_interval,
                vm_counts=lambda: {"vmCount": len(self.vm_refs())},
            ),
        )
        vmstats = ChildSpec(
            id="vmstats",
            start=lambda link: VmStatsSampler.spawn(
                link,
                connection=self.connection,
                vms=self.vm_refs,
                interval=config.vm_sample_interval,
            ),
        )
        vmboard = ChildSpec(id="vmboard", start=VmBoard.spawn)
        return (
            branch("infra", SupervisorFlags(strategy=Strategy.REST_FOR_ONE), [hypervisor, events]),
            branch("hosts", SupervisorFlags(), [host, vmstats, vmboard]),
            branch(VMS, RESOURCE_FLAGS),
            branch("containers", RESOURCE_FLAGS),
            branch("storage", RESOURCE_FLAGS),
            branch("networks", RESOURCE_FLAGS),
            branch("api", SupervisorFlags(strategy=Strategy.REST_FOR_ONE), api_children),
        )
