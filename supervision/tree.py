"""The host's own supervision tree: which branches run, in what order.

    root (one_for_one)
    ├── infra (rest_for_one)       hypervisor, events, docker          branches/infra.py
    ├── hosts (one_for_one)        host, vmstats, vmboard, containerstats  branches/hosts.py
    ├── vms (rest_for_one)         guests (dynamic), recoverer         branches/vms.py
    ├── containers (rest_for_one)  guests (dynamic), recoverer         branches/containers.py
    ├── storage (rest_for_one)     connections, pool, tasks, domains, recoverer  branches/storage.py
    ├── networks (rest_for_one)    nets (dynamic), monitor, netconf, recoverer
    ├── admin (one_for_one)        memory (MOM's policy, KSM), devices, fencer  branches/admin.py
    └── api (rest_for_one)         given by the API layer; opens last

Start in this order, stop in reverse: the API closes first and the hypervisor
connection last. Each branch is described by its own builder; this module only
composes them. Every dynamic branch ends with a recoverer that re-adopts its
resources from their source of truth whenever the branch starts, and reports it
(`TreeContext.report_recovered`): the API's gate opens once each of
`RESOURCE_BRANCHES` has reported.

The API edge is built by the caller and passed in as `api_children`: the
supervision layer does not import the API (imports point api -> supervision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hostvisor.actors.container.addresses import CONTAINERS
from hostvisor.actors.network.addresses import NETWORKS
from hostvisor.actors.storage.addresses import STORAGE
from hostvisor.actors.vm.addresses import VMS
from hostvisor.supervision.branches import admin, hosts, infra
from hostvisor.supervision.branches.containers import ContainersBranch
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.branches.networks import NetworksBranch
from hostvisor.supervision.branches.storage import StorageBranch
from hostvisor.supervision.branches.vms import VmsBranch
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry
from hostvisor.supervision.spec import ChildSpec, Strategy, SupervisorFlags

RESOURCE_BRANCHES = frozenset({VMS, CONTAINERS, STORAGE, NETWORKS})
"""The branches whose recoverers must report before the API answers anything but 99."""
API_FLAGS = SupervisorFlags(strategy=Strategy.REST_FOR_ONE)


class HostTree:
    """One host's branches, described from a `TreeContext`; nothing starts here.

    The branches are public: the API layer builds its verbs from them (a new VM's
    child spec comes from `vms.child`, a domain's from `storage.domain_child`).
    """

    def __init__(self, ctx: TreeContext) -> None:
        """Describe every branch of `ctx`'s host."""
        self.ctx = ctx
        self.vms = VmsBranch(ctx)
        self.containers = ContainersBranch(ctx, board=self.vms.tell_board)
        self.storage = StorageBranch(ctx)
        self.networks = NetworksBranch(ctx)

    @property
    def config(self) -> Config:
        """The host's config."""
        return self.ctx.config

    @property
    def registry(self) -> Registry:
        """Where every actor of the tree is found by path."""
        return self.ctx.registry

    def connection(self) -> Any:
        """The open libvirt connection (an ask to the hypervisor actor; blocks briefly)."""
        return self.ctx.connection()

    def children(self, api_children: Sequence[ChildSpec] = ()) -> Sequence[ChildSpec]:
        """Return the root supervisor's children, in start order."""
        ctx = self.ctx
        return (
            infra.build(
                ctx,
                deliver=self.vms.deliver,
                deliver_container=self.containers.deliver,
                docker_connected=self.containers.connected,
                docker_lost=self.containers.lost,
            ),
            hosts.build(ctx, vms=self.vms, containers=self.containers, networks=self.networks),
            self.vms.build(),
            self.containers.build(),
            self.storage.build(),
            self.networks.build(),
            admin.build(ctx, set_balloon=admin.tell_balloon(ctx)),
            ctx.branch("api", API_FLAGS, api_children),
        )
