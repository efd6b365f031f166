"""The `storage` branch: connections, pool, tasks, the domains, and their recoverer.

    storage (rest_for_one)
    ├── connections     ConnectionsActor: mounts, connections.json, domain adoption
    ├── pool            StoragePoolActor: create/connect/SPM; reads pool.json in on_start
    ├── tasks           TaskManager: every SPM task and SDM job
    ├── domains         (one_for_one, dynamic) storage/domains/<sdUUID>
    └── recoverer       reconnects the stored servers, re-adopts every domain

Order: each child depends only on those before it. A domain crash-looping past
the `domains` budget escalates here: `domains` restarts empty and the recoverer
after it re-adopts every domain from the mounts, while the pool keeps its SPM
lock and the task manager its tasks. A restart of the whole branch (past its own
budget) restarts all five: the pool reads its record back, the recoverer
reconnects and re-adopts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import AlreadyExists, HostvisorError, NotFound
from hostvisor.actors.storage import clusterlock
from hostvisor.actors.storage.addresses import (
    CONNECTIONS_ID,
    DOMAINS_ID,
    POOL_ID,
    STORAGE,
    STORAGE_DOMAINS,
    TASKS_ID,
)
from hostvisor.actors.storage.connections import ConnectionStore
from hostvisor.actors.storage.connections_actor import ConnectionsActor, DomainChildren
from hostvisor.actors.storage.domain_actor import StorageDomainActor
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.pool_actor import StoragePoolActor
from hostvisor.actors.storage.pool_model import PoolRecord
from hostvisor.actors.storage.proxy import StorageClient, wait
from hostvisor.actors.storage.recovery import recover_storage
from hostvisor.actors.storage.serial import failed
from hostvisor.actors.storage.tasks_actor import TaskManager
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.spec import (
    RESOURCE_CHILD_BUDGET,
    ChildSpec,
    Strategy,
    SupervisorFlags,
)

__all__ = ["POOL_ID", "STORAGE", "STORAGE_DOMAINS", "StorageBranch", "build"]

log = logging.getLogger(__name__)

DOMAIN_FLAGS = SupervisorFlags(
    strategy=Strategy.ONE_FOR_ONE, intensity=20, period=10.0, per_child=RESOURCE_CHILD_BUDGET
)
"""A domain actor's crash loop gives up that domain alone (retried after a backoff)."""
BRANCH_FLAGS = SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=10, period=10.0)
RECOVERY_TIMEOUT = 600.0
"""How long the recoverer waits for the reconnects (mount(8) may take 180 s each)."""


class StorageBranch:
    """Builds the `storage` branch and the child spec of each domain's actor."""

    def __init__(self, ctx: TreeContext) -> None:
        """Describe the branch of `ctx`; nothing starts here."""
        self.ctx = ctx
        self.client = StorageClient(ctx.registry.get)

    @property
    def pool_store(self) -> Path:
        """Where the pool connection is persisted."""
        return self.ctx.config.state_dir / "storage" / "pool.json"

    @property
    def connection_store(self) -> ConnectionStore:
        """Where the storage connections are persisted."""
        return ConnectionStore(self.ctx.config.state_dir / "storage" / "connections.json")

    def open_task(self, verb: str) -> CallbackFuture:
        """Open a task in the task manager (a domain's tasks); never raises."""
        try:
            return self.client.tasks().open_task(verb)
        except HostvisorError as error:
            return failed(error)

    def domain_child(self, domain: FileDomain) -> ChildSpec:
        """The child spec of one storage domain's actor (permanent until formatted)."""
        interval = self.ctx.config.storage_check_interval
        return ChildSpec(
            id=domain.sd_uuid,
            start=lambda link: StorageDomainActor.spawn(
                link, domain=domain, open_task=self.open_task, check_interval=interval
            ),
        )

    def pool_child(self, _record: PoolRecord | None = None) -> ChildSpec:
        """The child spec of the pool's actor (permanent; it reads pool.json itself).

        The record argument is ignored (kept while api/embedded.py passes this along).
        """
        store, client = self.pool_store, self.client
        return ChildSpec(
            id=POOL_ID,
            start=lambda link: StoragePoolActor.spawn(link, store=store, client=client),
        )

    def domain_children(self) -> DomainChildren:
        """How the connections actor starts and stops domain actors."""

        def running() -> set[str]:
            return set(self.ctx.children(STORAGE_DOMAINS))

        def start(domains: Sequence[FileDomain]) -> int:
            have = running()
            wanted = [d for d in domains if d.sd_uuid not in have]
            if wanted:
                results = self.ctx.supervisor(STORAGE_DOMAINS).start_children(
                    [self.domain_child(d) for d in wanted]
                )
                for domain, result in zip(wanted, results, strict=True):
                    if isinstance(result, HostvisorError) and not isinstance(result, AlreadyExists):
                        log.error("storage domain %s not started: %s", domain.sd_uuid, result)
            return len(running())

        def stop(sd_uuid: str) -> None:
            supervisor = self.ctx.supervisor(STORAGE_DOMAINS)
            with contextlib.suppress(NotFound):
                supervisor.terminate_child(sd_uuid)
                supervisor.delete_child(sd_uuid)

        return DomainChildren(running=running, start=start, stop=stop)

    def recover(self) -> int:
        """Reconnect the stored servers and start every domain's actor (the recoverer's thread)."""
        connections = self.client.connections()

        def reconnect() -> Any:
            return wait(connections.reconnect(), timeout=RECOVERY_TIMEOUT, what="connections")

        def adopt_all() -> int:
            count: int = wait(connections.adopt_all(), timeout=RECOVERY_TIMEOUT, what="adopt")
            return count

        return recover_storage(reconnect=reconnect, adopt_all=adopt_all)

    def build(self) -> ChildSpec:
        """The branch: connections, pool, tasks, the domain supervisor, the recoverer."""
        config = self.ctx.config
        clusterlock.configure(
            clusterlock.SanlockPolicy(
                required=config.requires_sanlock, io_timeout=config.sanlock_io_timeout
            )
        )
        store, mount_root, domains = (
            self.connection_store,
            config.mount_root,
            self.domain_children(),
        )
        connections = ChildSpec(
            id=CONNECTIONS_ID,
            start=lambda link: ConnectionsActor.spawn(
                link, store=store, mount_root=mount_root, domains=domains
            ),
        )
        tasks = ChildSpec(id=TASKS_ID, start=TaskManager.spawn)
        children = [
            connections,
            self.pool_child(),
            tasks,
            self.ctx.branch(DOMAINS_ID, DOMAIN_FLAGS),
            self.ctx.recoverer(STORAGE, self.recover, what="storage domains"),
        ]
        return self.ctx.branch(STORAGE, BRANCH_FLAGS, children)


def build(ctx: TreeContext) -> ChildSpec:
    """The `storage` branch of `ctx`'s host."""
    return StorageBranch(ctx).build()
