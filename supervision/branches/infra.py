"""The `infra` branch: what every other branch leans on.

    infra (rest_for_one)
    ├── hypervisor   the libvirt connection and its event pump
    ├── events       the event bus (events go up to the API's subscribers)
    └── docker       the docker engine and its event watcher

rest_for_one: a new libvirt connection restarts the bus and docker after it.
"""

from __future__ import annotations

from collections.abc import Callable

from hostvisor.actors.container.engine import ContainerEvent
from hostvisor.actors.container.watcher import DockerActor
from hostvisor.actors.events import EventBus
from hostvisor.actors.hypervisor.actor import HypervisorActor
from hostvisor.actors.hypervisor.addresses import HYPERVISOR_ID, INFRA
from hostvisor.actors.hypervisor.events import DomainEvent
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.spec import ChildSpec, Strategy, SupervisorFlags

INFRA_FLAGS = SupervisorFlags(strategy=Strategy.REST_FOR_ONE)


def build(
    ctx: TreeContext,
    *,
    deliver: Callable[[DomainEvent], None],
    deliver_container: Callable[[ContainerEvent], None],
    docker_connected: Callable[[], None],
    docker_lost: Callable[[], None],
) -> ChildSpec:
    """The branch; libvirt and docker events are handed to `deliver*` on their threads."""
    config = ctx.config
    hypervisor = ChildSpec(
        id=HYPERVISOR_ID,
        start=lambda link: HypervisorActor.spawn(
            link, uri=config.libvirt_uri, embed_root=config.embed_root, deliver=deliver
        ),
        start_timeout=config.start_timeout,
    )
    events = ChildSpec(
        id="events",
        start=lambda link: EventBus.spawn(link, subscribers=lambda: list(ctx.subscribers())),
    )
    docker = ChildSpec(
        id="docker",
        start=lambda link: DockerActor.spawn(
            link,
            socket=config.docker_socket,
            deliver=deliver_container,
            connected=docker_connected,
            lost=docker_lost,
        ),
    )
    return ctx.branch(INFRA, INFRA_FLAGS, [hypervisor, events, docker])
