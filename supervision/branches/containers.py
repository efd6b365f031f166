"""The `containers` branch: a ContainerActor per container VM, and their recoverer.

    containers (rest_for_one)
    ├── guests (one_for_one, dynamic)   containers/guests/<vmId>
    └── recoverer                       every container labelled with a VM id

Docker's event stream reconnecting (the docker actor in `infra`) also re-adopts:
containers made while docker was unreachable, or before it first answered.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pykka

from hostvisor.actors.actor import ask
from hostvisor.actors.container.actor import (
    ContainerActor,
    ContainerServices,
    EngineLost,
    EngineReconnected,
)
from hostvisor.actors.container.addresses import (
    CONTAINER_GUESTS,
    CONTAINERS,
    DOCKER,
    GUESTS_ID,
    container_path,
)
from hostvisor.actors.container.engine import ContainerEvent, DockerEngine, Labelled
from hostvisor.actors.container.errors import DockerUnavailable
from hostvisor.actors.container.recovery import adopt_containers
from hostvisor.actors.container.spec import RUNTIME, container_spec
from hostvisor.actors.container.watcher import GetEngine
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.guest.model import TellBoard
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.domxml import DomainSpec
from hostvisor.supervision.branches.context import ASK_TIMEOUT, TreeContext
from hostvisor.supervision.branches.vms import BRANCH_FLAGS, GUEST_FLAGS
from hostvisor.supervision.spec import ChildSpec, Restart

log = logging.getLogger(__name__)


class ContainersBranch:
    """Builds the `containers` branch, each container VM's child spec, and docker's hooks."""

    def __init__(self, ctx: TreeContext, *, board: TellBoard) -> None:
        """Describe the branch of `ctx`; container VMs post to the VM board through `board`."""
        self.ctx = ctx
        self.services = ContainerServices(engine=self.engine, publish=ctx.publish, board=board)

    def engine(self) -> DockerEngine:
        """Return the docker engine (an ask to the docker actor). Raises DockerUnavailable."""
        ref = self.ctx.registry.get(DOCKER)
        if ref is None:
            raise DockerUnavailable(runtime=RUNTIME, reason="the docker actor is not running")
        engine: DockerEngine = ask(ref, GetEngine(), timeout=ASK_TIMEOUT)
        return engine

    def available(self) -> bool:
        """Whether the docker engine answers now (getCapabilities' `containers`; blocks <= 2 s)."""
        try:
            return self.engine().ping()
        except HostvisorError:
            return False

    def deliver(self, event: ContainerEvent) -> None:
        """Tell a docker event to the VM that owns the container (the watcher's thread)."""
        self.ctx.tell(container_path(event.vm_id), event)

    def refs(self) -> dict[str, pykka.ActorRef[Any]]:
        """Return the live ContainerActors by VM id."""
        return self.ctx.children(CONTAINER_GUESTS)

    def connected(self) -> None:
        """Docker's event stream (re)opened: re-read docker, adopt what has no actor."""
        for ref in self.refs().values():
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(EngineReconnected())
        if self.ctx.registry.get(CONTAINER_GUESTS) is not None:  # not before the tree is up
            self.adopt()

    def lost(self) -> None:
        """Docker's event stream broke: every container VM learns it."""
        for ref in self.refs().values():
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(EngineLost())

    def child(
        self, spec: DomainSpec, *, recover: bool = False, hint: str | None = None
    ) -> ChildSpec:
        """Return the child spec of one container VM's actor (under `containers/guests`).

        Transient, as a VmActor; `hint` is docker's state of an adopted container.
        Raises VmCreateError for bad container settings.
        """
        config = self.ctx.config
        services = self.services
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

    def adopt(self) -> int:
        """Start a ContainerActor for each labelled container without one (blocks).

        Raises DockerUnavailable.
        """
        guests = self.ctx.supervisor(CONTAINER_GUESTS)

        def start(found: Labelled) -> None:
            spec = domxml.parse(found.xml)
            guests.start_child(self.child(spec, recover=True, hint=found.status))

        return adopt_containers(
            engine=self.engine(),
            has_actor=lambda vm_id: self.ctx.registry.get(container_path(vm_id)) is not None,
            start=start,
        )

    def recover(self) -> int:
        """The recoverer's job: adopt now, or later once docker answers."""
        try:
            return self.adopt()
        except DockerUnavailable as error:
            log.warning("containers not recovered now (adopted once docker answers): %s", error)
            return 0

    def build(self) -> ChildSpec:
        """The branch: the ContainerActor supervisor, then its recoverer."""
        guests = self.ctx.branch(GUESTS_ID, GUEST_FLAGS)
        return self.ctx.branch(
            CONTAINERS,
            BRANCH_FLAGS,
            [guests, self.ctx.recoverer(CONTAINERS, self.recover, what="containers")],
        )
