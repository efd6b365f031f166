"""The host's own supervision tree: which supervisors and actors run, in what order.

    root (one_for_one)
    ├── infra (rest_for_one)      hypervisor: the libvirt connection and its event loop
    ├── hosts (one_for_one)       host: the machine's facts
    ├── vms (one_for_one)         a VmActor per VM id, added at run time
    ├── containers (one_for_one)  a ContainerActor per container-VM id
    ├── storage (one_for_one)     the pool, a StorageDomainActor per domain, the job runner
    ├── networks (one_for_one)    a NetworkActor per network
    └── api (rest_for_one)        the RPC front and listeners; opens last

Start in this order, stop in reverse: the API closes first and the hypervisor
connection last. Each later issue adds its actors here, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from hostvisor.actors.host.actor import HostActor
from hostvisor.actors.hypervisor.actor import HypervisorActor
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry
from hostvisor.supervision.spec import ChildSpec, Strategy, SupervisorFlags
from hostvisor.supervision.supervisor import supervisor_spec

RESOURCE_FLAGS = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=10.0)
"""Per-resource supervisors: one flapping VM must not take all VMs down with it quickly."""


def host_tree(
    config: Config, *, registry: Registry, clock: Clock | None = None
) -> Sequence[ChildSpec]:
    """Return the root supervisor's children for `config`, in start order."""

    def branch(name: str, flags: SupervisorFlags, children: Sequence[ChildSpec] = ()) -> ChildSpec:
        return supervisor_spec(name, flags=flags, children=children, registry=registry, clock=clock)

    hypervisor = ChildSpec(
        id="hypervisor",
        start=lambda link: HypervisorActor.spawn(
            link, uri=config.libvirt_uri, embed_root=config.embed_root
        ),
        start_timeout=config.start_timeout,
    )
    host = ChildSpec(id="host", start=HostActor.spawn)
    return (
        branch("infra", SupervisorFlags(strategy=Strategy.REST_FOR_ONE), [hypervisor]),
        branch("hosts", SupervisorFlags(), [host]),
        branch("vms", RESOURCE_FLAGS),
        branch("containers", RESOURCE_FLAGS),
        branch("storage", RESOURCE_FLAGS),
        branch("networks", RESOURCE_FLAGS),
        branch("api", SupervisorFlags(strategy=Strategy.REST_FOR_ONE)),
    )
