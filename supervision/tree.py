"""The host's own supervision tree: which supervisors and actors run, in what order.

    root (one_for_one)
    ├── infra (rest_for_one)      hypervisor: the libvirt connection; events: the bus
    ├── hosts (one_for_one)       host: facts, capabilities, statistics
    ├── vms (one_for_one)         a VmActor per VM id, added at run time
    ├── containers (one_for_one)  a ContainerActor per container-VM id
    ├── storage (one_for_one)     the pool, a StorageDomainActor per domain, the job runner
    ├── networks (one_for_one)    a NetworkActor per network
    └── api (rest_for_one)        front: the JSON-RPC/STOMP edge; opens last

Start in this order, stop in reverse: the API closes first and the hypervisor
connection last. Each later issue adds its actors here, in one place.

The API edge is built by `api_children`, which the caller passes in: the
supervision layer does not import the API (imports point api -> supervision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pykka

from hostvisor.actors.actor import ask
from hostvisor.actors.events import EventBus
from hostvisor.actors.host.actor import HostActor
from hostvisor.actors.hypervisor.actor import GetConnection, HypervisorActor
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry
from hostvisor.supervision.spec import ChildSpec, Strategy, SupervisorFlags
from hostvisor.supervision.supervisor import supervisor_spec

RESOURCE_FLAGS = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=10.0)
"""Per-resource supervisors: one flapping VM must not take all VMs down with it quickly."""

HYPERVISOR = "infra/hypervisor"
EVENTS = "infra/events"
EVENT_SUBSCRIBERS = ("api/front",)
ASK_TIMEOUT = 10.0


def host_tree(
    config: Config,
    *,
    registry: Registry,
    api_children: Sequence[ChildSpec] = (),
    clock: Clock | None = None,
) -> Sequence[ChildSpec]:
    """Return the root supervisor's children for `config`, in start order."""

    def branch(name: str, flags: SupervisorFlags, children: Sequence[ChildSpec] = ()) -> ChildSpec:
        return supervisor_spec(name, flags=flags, children=children, registry=registry, clock=clock)

    def connection() -> Any:
        return ask(registry.lookup(HYPERVISOR), GetConnection(), timeout=ASK_TIMEOUT)

    def subscribers() -> list[pykka.ActorRef[Any]]:
        return [ref for path in EVENT_SUBSCRIBERS if (ref := registry.get(path)) is not None]

    hypervisor = ChildSpec(
        id="hypervisor",
        start=lambda link: HypervisorActor.spawn(
            link, uri=config.libvirt_uri, embed_root=config.embed_root
        ),
        start_timeout=config.start_timeout,
    )
    events = ChildSpec(
        id="events", start=lambda link: EventBus.spawn(link, subscribers=subscribers)
    )
    host = ChildSpec(
        id="host",
        start=lambda link: HostActor.spawn(
            link,
            state_dir=config.state_dir,
            connection=connection,
            sample_interval=config.host_sample_interval,
        ),
    )
    return (
        branch("infra", SupervisorFlags(strategy=Strategy.REST_FOR_ONE), [hypervisor, events]),
        branch("hosts", SupervisorFlags(), [host]),
        branch("vms", RESOURCE_FLAGS),
        branch("containers", RESOURCE_FLAGS),
        branch("storage", RESOURCE_FLAGS),
        branch("networks", RESOURCE_FLAGS),
        branch("api", SupervisorFlags(strategy=Strategy.REST_FOR_ONE), api_children),
    )
