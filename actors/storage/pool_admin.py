"""The blocking halves of the pool's rarer changes: destroy, switch or rebuild the master.

As pool_work.py: each function runs on a worker (never an actor's thread), talks to
the domains only through their typed messages and waits for each answer at most
`timeout` seconds. The pool actor queues destroy and reconstructMaster on its serial
queue; switchMaster runs as an SPM task (the Engine polls it).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.storage.domain_ops import Metadata, Where, pool_of
from hostvisor.actors.storage.errors import (
    StorageDomainAlreadyAttached,
    StorageDomainNotInPool,
    StoragePoolWrongMaster,
)
from hostvisor.actors.storage.master import (
    LeavePool,
    MakeMasterTree,
    SetPoolKeys,
    vms_dir,
)
from hostvisor.actors.storage.model import DomainStatus
from hostvisor.actors.storage.pool_model import PoolRecord
from hostvisor.actors.storage.pool_work import master_keys
from hostvisor.actors.storage.proxy import PoolProxy, StorageClient, wait
from hostvisor.actors.storage.tasks import TaskContext

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconstruct:
    """StoragePool.reconstructMaster's parameters, checked."""

    sp_uuid: str
    name: str
    master_uuid: str
    master_version: int
    domains: tuple[tuple[str, str], ...]
    """(sdUUID, status) from `domainDict`."""
    lock_renewal_interval: int = 5
    lease_time: int = 60
    io_op_timeout: int = 10
    lease_retries: int = 3


def destroy_pool(record: PoolRecord, client: StorageClient, timeout: float) -> None:
    """Take every domain out of the pool, the master last (its keys go with it)."""
    others = [sd for sd in record.domains if sd != record.master_uuid]
    for sd in [*others, record.master_uuid]:
        try:
            wait(client.write(sd, LeavePool()), timeout=timeout, what=sd)
        except HostvisorError:
            if sd == record.master_uuid:
                raise
            log.exception("pool %s: domain %s could not leave it", record.sp_uuid, sd)
    log.info("pool %s destroyed", record.sp_uuid)


def switch_master(  # noqa: PLR0913, PLR0917 - the task's whole recipe (ctx last)
    record: PoolRecord,
    new: str,
    version: int,
    client: StorageClient,
    pool: PoolProxy,
    timeout: float,
    ctx: TaskContext,
) -> None:
    """The switchMaster task: `new` becomes the master at `version`, the old one Regular.

    The pool's keys move from the old master's metadata to the new one's, its
    master tree (the VMs' OVFs) is copied over, and the pool actor records the new
    master. A failure before the old master is demoted restores the new domain.
    """
    old = record.master_uuid
    meta = wait(client.read(old, Metadata()), timeout=timeout, what=old)
    keys = {k: v for k, v in meta.items() if k.startswith("POOL_") and k != "POOL_UUID"}
    keys.update(ROLE="Master", MASTER_VERSION=str(version))
    before = wait(
        client.write(new, SetPoolKeys(changes=tuple(keys.items()))), timeout=timeout, what=new
    )
    ctx.add_rollback(
        lambda: wait(
            client.write(new, SetPoolKeys(changes=(("ROLE", before.get("ROLE", "Regular")),))),
            timeout=timeout,
            what=new,
        )
    )
    ctx.progress(0.3)
    wait(client.write(new, MakeMasterTree()), timeout=timeout, what=new)
    _copy_vms(old, new, client, timeout)
    ctx.progress(0.7)
    wait(client.write(old, SetPoolKeys(changes=(("ROLE", "Regular"),))), timeout=timeout, what=old)
    wait(pool.master_switched(record.sp_uuid, new, version), timeout=timeout, what="pool")
    log.info("pool %s: master %s -> %s (version %d)", record.sp_uuid, old, new, version)


def _copy_vms(old: str, new: str, client: StorageClient, timeout: float) -> None:
    source = vms_dir(wait(client.read(old, Where()), timeout=timeout, what=old))
    target = vms_dir(wait(client.read(new, Where()), timeout=timeout, what=new))
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)


def check_switch(record: PoolRecord, old: str, new: str) -> None:
    """Refuse a switch the pool cannot make (the actor's thread; no I/O).

    Raises:
        StoragePoolWrongMaster: `old` is not the pool's master.
        StorageDomainNotInPool: `new` is not an active domain of the pool.
        InvalidArgument: `new` is the master already.
    """
    if old != record.master_uuid:
        raise StoragePoolWrongMaster(spUUID=record.sp_uuid, msdUUID=old)
    if new == old:
        raise InvalidArgument(newMasterUUID=new, reason="already the master")
    if record.domains.get(new) != DomainStatus.ACTIVE.value:
        raise StorageDomainNotInPool(sdUUID=new, spUUID=record.sp_uuid, reason="not active")


def reconstruct_master(request: Reconstruct, client: StorageClient, timeout: float) -> None:
    """Make `request.master_uuid` the pool's master again from the Engine's `domainDict`.

    Every listed domain joins the pool (a domain of another pool is refused before
    anything is written); the new master gets the pool's keys and its master tree;
    every other listed domain that thought itself master is made Regular.

    Raises:
        StorageDomainAlreadyAttached: a listed domain belongs to another pool.
    """
    sp = request.sp_uuid
    listed = dict(request.domains)
    listed.setdefault(request.master_uuid, DomainStatus.ACTIVE.value)
    for sd in listed:
        current = pool_of(wait(client.read(sd, Metadata()), timeout=timeout, what=sd))
        if current and sp not in current.split(","):
            raise StorageDomainAlreadyAttached(sdUUID=sd, spUUID=current)
    pool_domains = ",".join(f"{sd}:{status}" for sd, status in listed.items())
    for sd in listed:
        if sd == request.master_uuid:
            continue
        changes = (("POOL_UUID", sp), ("ROLE", "Regular"))
        wait(client.write(sd, SetPoolKeys(changes=changes)), timeout=timeout, what=sd)
    master = (("POOL_UUID", sp), *master_keys(request, pool_domains))
    target = request.master_uuid
    wait(client.write(target, SetPoolKeys(changes=master)), timeout=timeout, what=target)
    wait(client.write(target, MakeMasterTree()), timeout=timeout, what=target)
    log.info("pool %s: master reconstructed on %s", sp, request.master_uuid)
