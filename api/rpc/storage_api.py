"""What the storage verbs reach: domain and pool actors, the task manager, the mounts.

Verb handlers orchestrate; actors own. A storage domain's actor is found by path
(`storage/domains/<sdUUID>`); a domain not yet known is looked for under the
connected mount points (on a worker thread: a hung mount must not stall the API
loop) and its actor started. The pool connection is `storage/pool`; the tasks run
in `storage/tasks`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.errors import AlreadyExists
from hostvisor.actors.storage.connections import connected_roots
from hostvisor.actors.storage.errors import StorageDomainNotInPool, StoragePoolUnknown
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import VolumeFormat, check_uuid
from hostvisor.actors.storage.pool_actor import PoolRecord
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.api.rpc.bridge import settled
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry, child_path
from hostvisor.supervision.spec import ChildSpec
from hostvisor.supervision.supervisor import DeleteChild, StartChild, TerminateChild
from hostvisor.supervision.tree import POOL, POOL_ID, STORAGE, STORAGE_DOMAINS

TASKS = "storage/tasks"
WORK_TIMEOUT = 24 * 3600.0
"""How long a task's worker waits for its domain's writer: long work is long."""


@dataclass(frozen=True, slots=True)
class StorageApi:
    """The registry, the config and the makers of storage child specs."""

    registry: Registry
    config: Config
    domain_child: Callable[[FileDomain], ChildSpec]
    pool_child: Callable[[PoolRecord], ChildSpec]

    # -- domains --------------------------------------------------------------------------

    def roots(self) -> list[Path]:
        """The connected mount points, where domains are looked for (blocking)."""
        return connected_roots(self.config.mount_root)

    async def domain(self, sd_uuid: str) -> pykka.ActorRef[Any]:
        """Return the domain's actor, starting it if the domain is found on a mount.

        Raises:
            StorageDomainDoesNotExist: no connected mount holds the domain.
        """
        check_uuid(sd_uuid, "storagedomainID")
        ref = self.registry.get(child_path(STORAGE_DOMAINS, sd_uuid))
        if ref is not None:
            return ref
        domain = await asyncio.to_thread(lambda: FileDomain.find(self.roots(), sd_uuid))
        return await self.adopt(domain)

    async def adopt(self, domain: FileDomain) -> pykka.ActorRef[Any]:
        """Start the actor of a domain found or created on disk; return it."""
        supervisor = self.registry.lookup(STORAGE_DOMAINS)
        with contextlib.suppress(AlreadyExists):  # another call found it first
            await settled(supervisor.ask(StartChild(self.domain_child(domain)), block=False))
        return self.registry.lookup(child_path(STORAGE_DOMAINS, domain.sd_uuid))

    async def forget_domain(self, sd_uuid: str) -> None:
        """Stop and forget a domain's actor (the domain was formatted or unmounted)."""
        supervisor = self.registry.lookup(STORAGE_DOMAINS)
        if self.registry.get(child_path(STORAGE_DOMAINS, sd_uuid)) is None:
            return
        await settled(supervisor.ask(TerminateChild(sd_uuid), block=False))
        await settled(supervisor.ask(DeleteChild(sd_uuid), block=False))

    async def domain_path(self, sd_uuid: str) -> Path:
        """The domain's directory."""
        path: Path = await settled(call(await self.domain(sd_uuid), "where"))
        return path

    def domain_ids(self) -> list[str]:
        """The domains with a running actor."""
        children = self.registry.status(STORAGE_DOMAINS).children
        return [path.rsplit("/", 1)[-1] for path in children]

    async def read(self, sd_uuid: str, op: str, work: Callable[[FileDomain], Any]) -> Any:
        """Run `work(domain)` as a read of the domain; return its result."""
        ref = await self.domain(sd_uuid)
        return await settled(await settled(call(ref, "read", op, work)))

    async def write(self, sd_uuid: str, op: str, work: Callable[[FileDomain], Any]) -> Any:
        """Run `work(domain)` as a change of the domain, in order; return its result."""
        ref = await self.domain(sd_uuid)
        return await settled(await settled(call(ref, "write", op, work)))

    # -- the pool ---------------------------------------------------------------------------

    def pool_ref(self, sp_uuid: str) -> pykka.ActorRef[Any]:
        """Return the pool actor if this host is connected to `sp_uuid`.

        Raises:
            StoragePoolUnknown: not connected to that pool.
        """
        ref = self.registry.get(POOL)
        if ref is None:
            raise StoragePoolUnknown(spUUID=sp_uuid)
        return ref

    async def pool(self, sp_uuid: str) -> tuple[pykka.ActorRef[Any], PoolRecord]:
        """Return the connected pool's actor and record; StoragePoolUnknown otherwise."""
        check_uuid(sp_uuid, "storagepoolID")
        ref = self.pool_ref(sp_uuid)
        record: PoolRecord = await settled(call(ref, "record"))
        if record.sp_uuid != sp_uuid:
            raise StoragePoolUnknown(spUUID=sp_uuid)
        return ref, record

    async def spm(self, sp_uuid: str) -> tuple[pykka.ActorRef[Any], PoolRecord]:
        """As `pool`, and raise NotSpm unless this host is the pool's SPM."""
        ref, record = await self.pool(sp_uuid)
        await settled(call(ref, "require_spm"))
        return ref, record

    async def connect_pool(self, record: PoolRecord) -> None:
        """Start the pool connection's actor."""
        storage = self.registry.lookup(STORAGE)
        await settled(storage.ask(StartChild(self.pool_child(record)), block=False))

    async def disconnect_pool(self, ref: pykka.ActorRef[Any]) -> None:
        """Forget the pool connection and stop its actor."""
        await settled(call(ref, "forget"))
        storage = self.registry.lookup(STORAGE)
        await settled(storage.ask(TerminateChild(POOL_ID), block=False))
        await settled(storage.ask(DeleteChild(POOL_ID), block=False))

    def connected_record(self) -> PoolRecord | None:
        """The connected pool's record, or None (blocking ask; for listings)."""
        ref = self.registry.get(POOL)
        if ref is None:
            return None
        try:
            record: PoolRecord = call(ref, "record").get(timeout=10)
        except pykka.ActorDeadError:
            return None
        return record

    async def prepare_disk(self, disk: DiskVolume) -> PreparedDisk:
        """Prepare a VM disk named by storage ids: its path and format on this host."""
        _ref, record = await self.pool(disk.pool_id)
        if disk.domain_id not in record.domains:
            raise StorageDomainNotInPool(sdUUID=disk.domain_id, spUUID=disk.pool_id)

        def prepare(domain: FileDomain) -> PreparedDisk:
            path = domain.prepare_image(disk.image_id, disk.volume_id)
            info = domain.volume_info(disk.image_id, disk.volume_id)
            return PreparedDisk(path=str(path), format=VolumeFormat[info["format"]].qemu_format)

        prepared: PreparedDisk = await self.read(disk.domain_id, "prepare", prepare)
        return prepared

    # -- tasks ----------------------------------------------------------------------------

    async def submit(self, verb: str, work: Callable[[Any], Any]) -> str:
        """Run `work(context)` as a task; return the task id at once."""
        tasks = self.registry.lookup(TASKS)
        task_id: str = await settled(call(tasks, "submit", verb, work))
        return task_id

    def domain_work(
        self,
        domain_ref: pykka.ActorRef[Any],
        op: str,
        work: Callable[[FileDomain], Any],
        *,
        kind: str = "write",
    ) -> Any:
        """From a task's worker: run `work` on the domain and wait for it.

        `kind` is "write" (the domain's writer, in order) or "read" (a thread of its own).
        """
        inner = call(domain_ref, kind, op, work).get(timeout=30)
        return inner.get(timeout=WORK_TIMEOUT)
