"""The host's own supervision tree: which supervisors and actors run, in what order.

    root (one_for_one)
    ├── infra (rest_for_one)      hypervisor: the libvirt connection; events: the bus;
    │                             docker: the docker engine and its event watcher
    ├── hosts (one_for_one)       host: facts, capabilities, statistics;
    │                             vmstats: the bulk VM stats sampler;
    │                             vmboard: every VM's last entry, for listings;
    │                             containerstats: the container stats sampler
    ├── vms (one_for_one)         a VmActor per VM id, added at run time
    ├── containers (one_for_one)  a ContainerActor per container-VM id
    ├── storage (one_for_one)     domains: a StorageDomainActor per domain, added at run
    │                             time; pool: this host's pool connection, when connected;
    │                             tasks: every SPM task and SDM job (TaskManager)
    ├── networks (rest_for_one)   nets: a NetworkActor per network, added at run time;
    │                             monitor: the kernel's link events; netconf: the
    │                             configuration and setupNetworks (NetworkConfigurator)
    └── api (rest_for_one)        front: the JSON-RPC/STOMP edge; opens last

Start in this order, stop in reverse: the API closes first and the hypervisor
connection last. Each later issue adds its actors here, in one place.

The API edge is built by the caller and passed in as `api_children`: the
supervision layer does not import the API (imports point api -> supervision).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pykka
from pykka.messages import ProxyCall

from hostvisor.actors.actor import ask
from hostvisor.actors.container.actor import (
    ContainerActor,
    ContainerServices,
    EngineLost,
    EngineReconnected,
)
from hostvisor.actors.container.engine import ContainerEvent, DockerEngine
from hostvisor.actors.container.errors import DockerUnavailable
from hostvisor.actors.container.sampler import ContainerStatsSampler
from hostvisor.actors.container.spec import RUNTIME, container_spec
from hostvisor.actors.container.watcher import DockerActor, GetEngine
from hostvisor.actors.errors import AlreadyExists, HostvisorError, NotFound, Timeout
from hostvisor.actors.events import Event, EventBus, Publish
from hostvisor.actors.host.actor import HostActor, HostNetwork
from hostvisor.actors.hypervisor.actor import GetConnection, HypervisorActor
from hostvisor.actors.hypervisor.events import DomainLifecycle
from hostvisor.actors.network.actor import NetworkActor
from hostvisor.actors.network.configurator import NetworkChildren, NetworkConfigurator
from hostvisor.actors.network.model import NetworkAttrs
from hostvisor.actors.network.monitor import LinkMonitor, LinkState
from hostvisor.actors.network.persistence import NetStore
from hostvisor.actors.storage.domain_actor import StorageDomainActor
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.pool_actor import PoolRecord, StoragePoolActor
from hostvisor.actors.storage.tasks_actor import TaskManager
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.actor import VmActor, VmServices
from hostvisor.actors.vm.board import Forget, Post, VmBoard
from hostvisor.actors.vm.domxml import DomainSpec
from hostvisor.actors.vm.sampler import VmStatsSampler
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry, child_path
from hostvisor.supervision.spec import ChildSpec, Restart, Strategy, SupervisorFlags
from hostvisor.supervision.supervisor import SupervisorHandle, supervisor_spec

log = logging.getLogger(__name__)

RESOURCE_FLAGS = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=10.0)
"""Per-resource supervisors: one flapping VM must not take all VMs down with it quickly."""

HYPERVISOR = "infra/hypervisor"
EVENTS = "infra/events"
VM_BOARD = "hosts/vmboard"
STORAGE = "storage"
STORAGE_DOMAINS = "storage/domains"
POOL_ID = "pool"
POOL = "storage/pool"
VMS = "vms"
DOCKER = "infra/docker"
CONTAINERS = "containers"
EVENT_SUBSCRIBERS = ("api/front",)
ASK_TIMEOUT = 10.0
NETS = "networks/nets"
NETCONF = "networks/netconf"
NETWORK_FLAGS = SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=10, period=10.0)
"""nets, monitor, netconf: the configurator remakes the network actors if `nets` restarts."""


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
        self.container_services = ContainerServices(
            engine=self.docker_engine, publish=self.publish, board=self.tell_board
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

    def docker_engine(self) -> DockerEngine:
        """Return the docker engine (an ask to the docker actor). Raises DockerUnavailable."""
        ref = self.registry.get(DOCKER)
        if ref is None:
            raise DockerUnavailable(runtime=RUNTIME, reason="the docker actor is not running")
        engine: DockerEngine = ask(ref, GetEngine(), timeout=ASK_TIMEOUT)
        return engine

    def docker_available(self) -> bool:
        """Whether the docker engine answers now (getCapabilities' `containers`; blocks <= 2 s)."""
        try:
            return self.docker_engine().ping()
        except HostvisorError:
            return False

    def deliver_container(self, event: ContainerEvent) -> None:
        """Tell a docker event to the VM that owns the container (the watcher's thread)."""
        self._tell(child_path(CONTAINERS, event.vm_id), event)

    def container_refs(self) -> dict[str, pykka.ActorRef[Any]]:
        """Return the live ContainerActors by VM id."""
        try:
            children = self.registry.status(CONTAINERS).children
        except NotFound:
            return {}
        refs = {path.rsplit("/", 1)[-1]: self.registry.get(path) for path in children}
        return {vm_id: ref for vm_id, ref in refs.items() if ref is not None}

    def _docker_connected(self) -> None:
        """Docker's event stream (re)opened: re-read docker, adopt what has no actor."""
        for ref in self.container_refs().values():
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(EngineReconnected())
        if self.registry.get(CONTAINERS) is not None:  # not before the tree is up
            self.adopt_containers()

    def _docker_lost(self) -> None:
        for ref in self.container_refs().values():
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(EngineLost())

    def adopt_containers(self) -> int:
        """Start a ContainerActor for each labelled container that has none; never touch one.

        Blocks; returns how many were adopted. Raises DockerUnavailable.
        """
        supervisor = SupervisorHandle(self.registry.lookup(CONTAINERS))
        adopted = 0
        for found in self.docker_engine().labelled():
            if self.registry.get(child_path(CONTAINERS, found.vm_id)) is not None:
                continue
            try:
                spec = domxml.parse(found.xml)
                child = self.container_child(spec, recover=True, hint=found.status)
                supervisor.start_child(child)
            except AlreadyExists:
                continue
            except HostvisorError as error:
                log.error("container %s not adopted: %s", found.container_id, error)  # noqa: TRY400
                continue
            adopted += 1
        return adopted

    def subscribers(self) -> list[pykka.ActorRef[Any]]:
        """Return the actors that receive every event."""
        return [ref for path in EVENT_SUBSCRIBERS if (ref := self.registry.get(path)) is not None]

    # -- networks (see hostvisor.actors.network.configurator) ---------------------------------

    def ask_netconf(self, method: str) -> Any:
        """Ask the network configurator `method`; wait for the future it answers (blocks)."""
        message = ProxyCall(attr_path=(method,), args=(), kwargs={})
        future = ask(self.registry.lookup(NETCONF), message, timeout=ASK_TIMEOUT)
        try:
            return future.get(timeout=ASK_TIMEOUT) if isinstance(future, pykka.Future) else future
        except pykka.Timeout:
            raise Timeout(actor=NETCONF, timeout=ASK_TIMEOUT) from None

    def host_network(self) -> HostNetwork:
        """How the host actor reads the managed namespace's networks (through netconf)."""

        def stats() -> dict[str, Any]:
            try:
                result: dict[str, Any] = self.ask_netconf("statistics")
            except HostvisorError as error:
                log.debug("network statistics unavailable: %s", error)
                return {"network": {}, "rxDropped": "0", "txDropped": "0"}
            return result

        def dirty() -> bool:
            try:
                return bool(self.ask_netconf("dirty"))
            except HostvisorError:
                return False

        return HostNetwork(caps=lambda: self.ask_netconf("capabilities"), stats=stats, dirty=dirty)

    def network_refs(self) -> list[pykka.ActorRef[Any]]:
        """Return the live NetworkActors (the link monitor tells them every link event)."""
        try:
            children = self.registry.status(NETS).children
        except NotFound:
            return []
        return [ref for path in children if (ref := self.registry.get(path)) is not None]

    def network_children(self) -> NetworkChildren:
        """How the configurator starts, tells and stops NetworkActors under `networks/nets`."""

        def handle() -> SupervisorHandle:
            return SupervisorHandle(self.registry.lookup(NETS))

        def start(name: str, attrs: NetworkAttrs, links: Mapping[str, LinkState]) -> None:
            handle().start_child(
                ChildSpec(
                    id=name,
                    start=lambda link: NetworkActor.spawn(
                        link, name=name, attrs=attrs, links=links, publish=self.publish
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
            ref=lambda name: self.registry.get(child_path(NETS, name)),
        )

    def network_branch(self) -> ChildSpec:
        """The `networks` supervisor: NetworkActors, the link monitor, the configurator."""
        netns = self.config.net_namespace or None
        nets = supervisor_spec(
            "nets", flags=RESOURCE_FLAGS, registry=self.registry, clock=self.clock
        )
        monitor = ChildSpec(
            id="monitor",
            start=lambda link: LinkMonitor.spawn(link, netns=netns, targets=self.network_refs),
        )
        store = NetStore.under(self.config.state_dir)
        netconf = ChildSpec(
            id="netconf",
            start=lambda link: NetworkConfigurator.spawn(
                link, netns=netns, store=store, children=self.network_children()
            ),
            start_timeout=self.config.start_timeout,
        )
        return supervisor_spec(
            "networks",
            flags=NETWORK_FLAGS,
            children=[nets, monitor, netconf],
            registry=self.registry,
            clock=self.clock,
        )

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

    def container_child(
        self, spec: DomainSpec, *, recover: bool = False, hint: str | None = None
    ) -> ChildSpec:
        """Return the child spec of one container VM's actor (under `containers`).

        Transient, as a VmActor; `hint` is docker's state of an adopted container.
        Raises VmCreateError for bad container settings.
        """
        config = self.config
        services = self.container_services
        container = container_spec(spec, network=config.container_network)

        def start(link: Any) -> pykka.ActorRef[Any]:
            return ContainerActor.spawn(
                link,
                spec=container,
                services=services,
                recover=recover or link.incarnation > 1,
                hint=hint if link.incarnation == 1 else None,
                powering_up=config.vm_powering_up_seconds,
                operation_timeout=config.vm_operation_timeout,
            )

        return ChildSpec(id=spec.vm_id, start=start, restart=Restart.TRANSIENT)

    def domain_child(self, domain: FileDomain) -> ChildSpec:
        """Return the child spec of one storage domain's actor (under `storage/domains`).

        Permanent: a domain stays known until it is formatted (then the child is
        terminated and deleted).
        """
        interval = self.config.storage_check_interval
        return ChildSpec(
            id=domain.sd_uuid,
            start=lambda link: StorageDomainActor.spawn(
                link, domain=domain, check_interval=interval
            ),
        )

    def pool_child(self, record: PoolRecord) -> ChildSpec:
        """Return the child spec of the pool connection's actor (`storage/pool`).

        Transient: `disconnect` stops it for good; a crash restarts it connected.
        """
        store = self.pool_store
        return ChildSpec(
            id=POOL_ID,
            start=lambda link: StoragePoolActor.spawn(link, record=record, store=store),
            restart=Restart.TRANSIENT,
        )

    @property
    def pool_store(self) -> Path:
        """Where the pool connection is persisted."""
        return self.config.state_dir / "storage" / "pool.json"

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
                containers=self.docker_available,
                sample_interval=config.host_sample_interval,
                vm_counts=lambda: {"vmCount": len(self.vm_refs()) + len(self.container_refs())},
                network=self.host_network(),
            ),
        )
        docker = ChildSpec(
            id="docker",
            start=lambda link: DockerActor.spawn(
                link,
                socket=config.docker_socket,
                deliver=self.deliver_container,
                connected=self._docker_connected,
                lost=self._docker_lost,
            ),
        )
        containerstats = ChildSpec(
            id="containerstats",
            start=lambda link: ContainerStatsSampler.spawn(
                link,
                engine=self.docker_engine,
                containers=self.container_refs,
                interval=config.vm_sample_interval,
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
        tasks = ChildSpec(id="tasks", start=TaskManager.spawn)
        storage = [tasks, branch("domains", RESOURCE_FLAGS)]
        return (
            branch(
                "infra",
                SupervisorFlags(strategy=Strategy.REST_FOR_ONE),
                [hypervisor, events, docker],
            ),
            branch("hosts", SupervisorFlags(), [host, vmstats, vmboard, containerstats]),
            branch(VMS, RESOURCE_FLAGS),
            branch(CONTAINERS, RESOURCE_FLAGS),
            branch(STORAGE, RESOURCE_FLAGS, storage),
            self.network_branch(),
            branch("api", SupervisorFlags(strategy=Strategy.REST_FOR_ONE), api_children),
        )
