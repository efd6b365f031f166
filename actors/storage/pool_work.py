"""The blocking halves of the pool's changes: what a worker does for the pool actor.

Each function runs on a worker of the work facility (never an actor's thread), talks
to the domains only through their typed messages, and waits for each answer at
most `timeout` seconds (`proxy.wait`). The pool actor runs them one at a time.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.storage.addresses import POOL, TASKS
from hostvisor.actors.storage.domain_ops import (
    Attach,
    Detach,
    JoinPool,
    Metadata,
    Stats,
    UndoJoin,
    Where,
    pool_of,
)
from hostvisor.actors.storage.errors import (
    StorageDomainAlreadyAttached,
    StorageDomainDoesNotExist,
    StoragePoolAlreadyExists,
    StoragePoolMasterNotFound,
    StoragePoolWrongMaster,
)
from hostvisor.actors.storage.master import MakeMasterTree, iso_dir, tasks_dir
from hostvisor.actors.storage.model import DomainClass, DomainStatus, check_uuid
from hostvisor.actors.storage.pool_model import ConnectPool, CreatePool, PoolRecord, take_spm_lock
from hostvisor.actors.storage.proxy import PoolProxy, StorageClient, wait
from hostvisor.actors.storage.tasks import TaskContext

log = logging.getLogger(__name__)


def create_pool(request: CreatePool, client: StorageClient, timeout: float) -> bool:
    """Write the pool into every domain (the master's keys into the master); all or none.

    Raises:
        StoragePoolAlreadyExists: a domain is in this pool already.
        StorageDomainAlreadyAttached: a domain is in another pool.
    """
    sp = request.sp_uuid
    for sd in request.domains:  # refuse early, before writing anything
        pool = pool_of(wait(client.read(sd, Metadata()), timeout=timeout, what=sd))
        if pool == sp:
            raise StoragePoolAlreadyExists(spUUID=sp, sdUUID=sd)
        if pool:
            raise StorageDomainAlreadyAttached(sdUUID=sd, spUUID=pool)
    listed = ",".join(f"{sd}:{DomainStatus.ACTIVE.value}" for sd in request.domains)
    joined: list[tuple[str, dict[str, str]]] = []
    try:
        for sd in request.domains:
            changes = master_keys(request, listed) if sd == request.master_uuid else ()
            join = JoinPool(sp=sp, changes=changes)  # checked again inside the writer
            joined.append((sd, wait(client.write(sd, join), timeout=timeout, what=sd)))
    except BaseException:
        _undo(sp, joined, client, timeout)
        raise
    log.info("pool %s created over %s", sp, ", ".join(request.domains))
    return True


class PoolSettings(Protocol):
    """What a master domain's metadata says of its pool (a CreatePool, a Reconstruct)."""

    @property
    def name(self) -> str:
        """The pool's name."""

    @property
    def master_version(self) -> int:
        """The master domain's version."""

    @property
    def lock_renewal_interval(self) -> int:
        """Seconds between SPM lease renewals."""

    @property
    def lease_time(self) -> int:
        """Seconds an SPM lease lasts."""

    @property
    def io_op_timeout(self) -> int:
        """Seconds an I/O may take."""

    @property
    def lease_retries(self) -> int:
        """Lease renewal retries."""


def master_keys(request: PoolSettings, listed: str) -> tuple[tuple[str, str], ...]:
    """The metadata keys that make a domain the master of `request`'s pool."""
    return (
        ("ROLE", "Master"),
        ("POOL_DESCRIPTION", request.name),
        ("MASTER_VERSION", str(request.master_version)),
        ("POOL_DOMAINS", listed),
        ("POOL_SPM_ID", "-1"),
        ("POOL_SPM_LVER", "-1"),
        ("LOCKRENEWALINTERVALSEC", str(request.lock_renewal_interval)),
        ("LEASETIMESEC", str(request.lease_time)),
        ("IOOPTIMEOUTSEC", str(request.io_op_timeout)),
        ("LEASERETRIES", str(request.lease_retries)),
    )


def _undo(
    sp: str, joined: list[tuple[str, dict[str, str]]], client: StorageClient, timeout: float
) -> None:
    for sd, before in reversed(joined):
        try:
            undo = UndoJoin(sp=sp, before=tuple(before.items()))
            wait(client.write(sd, undo), timeout=timeout, what=sd)
        except HostvisorError:
            log.exception("pool %s: domain %s could not be rolled back", sp, sd)


def connect_pool(request: ConnectPool, client: StorageClient, timeout: float) -> PoolRecord:
    """Read and check the master domain; return the record of the connection.

    Raises:
        StoragePoolMasterNotFound: no connected mount holds the master.
        StoragePoolWrongMaster: it is not this pool's master at this version.
    """
    sp, master, version = request.sp_uuid, request.master_uuid, request.master_version
    try:
        meta = wait(client.read(master, Metadata()), timeout=timeout, what=master)
    except StorageDomainDoesNotExist:
        raise StoragePoolMasterNotFound(spUUID=sp, msdUUID=master) from None
    if meta.get("POOL_UUID") != sp or meta.get("ROLE") != "Master":
        raise StoragePoolWrongMaster(spUUID=sp, msdUUID=master)
    if int(meta.get("MASTER_VERSION", "-1")) != version:
        raise StoragePoolWrongMaster(
            spUUID=sp, msdUUID=master, masterVersion=version, found=meta["MASTER_VERSION"]
        )
    domains = dict(request.domains) or _pool_domains(meta.get("POOL_DOMAINS", ""))
    return PoolRecord(
        sp_uuid=sp,
        host_id=request.host_id,
        master_uuid=master,
        master_version=version,
        domains={
            check_uuid(sd, "domainDict"): str(status).capitalize() for sd, status in domains.items()
        },
        lver=int(meta.get("POOL_SPM_LVER", "-1")),
    )


def _pool_domains(text: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in text.split(",") if ":" in item)


def pool_info(
    record: PoolRecord, spm_id: int, client: StorageClient, timeout: float
) -> dict[str, Any]:
    """StoragePool.getInfo's {info, dominfo}, read from the master and each domain."""
    meta = wait(client.read(record.master_uuid, Metadata()), timeout=timeout, what="master")
    dominfo: dict[str, dict[str, Any]] = {}
    pool_prefix = ""
    for sd, status in record.domains.items():
        try:
            stats = wait(client.read(sd, Stats()), timeout=timeout, what=sd)
            own = wait(client.read(sd, Metadata()), timeout=timeout, what=sd)
            where = wait(client.read(sd, Where()), timeout=timeout, what=sd)
        except StorageDomainDoesNotExist:
            dominfo[sd] = {"status": DomainStatus.UNKNOWN.value, "alerts": [], "isoprefix": ""}
            continue
        prefix = str(iso_dir(where)) if own.get("CLASS") == DomainClass.ISO.word else ""
        if prefix and status == DomainStatus.ACTIVE.value:
            pool_prefix = prefix  # the Engine's IsoPrefixVDSCommand reads info.isoprefix
        dominfo[sd] = {
            "status": status,
            "alerts": [],
            "isoprefix": prefix,
            "version": int(own.get("VERSION", "5")),
            "disktotal": stats["disktotal"],
            "diskfree": stats["diskfree"],
        }
    info = {
        "name": meta.get("POOL_DESCRIPTION", ""),
        "type": meta.get("TYPE", ""),
        "master_uuid": record.master_uuid,
        "master_ver": record.master_version,
        "lver": record.lver,
        "spm_id": spm_id,
        "domains": ",".join(f"{sd}:{status}" for sd, status in record.domains.items()),
        "isoprefix": pool_prefix,
        "pool_status": "connected",
        "version": meta.get("VERSION", "5"),
    }
    return {"info": info, "dominfo": dominfo}


def attach(sp: str, sd: str, client: StorageClient, timeout: float) -> None:
    """Write the pool into the domain (refused inside its writer if in another pool)."""
    wait(client.write(sd, Attach(sp=sp)), timeout=timeout, what=sd)


def exists(sd: str, client: StorageClient, timeout: float) -> None:
    """Raise StorageDomainDoesNotExist unless a connected mount holds the domain."""
    wait(client.domain(sd), timeout=timeout, what=sd)


def detach(sd: str, client: StorageClient, timeout: float) -> None:
    """Clear the domain's pool."""
    wait(client.write(sd, Detach()), timeout=timeout, what=sd)


def become_spm(
    master: str, client: StorageClient, pool: PoolProxy, timeout: float, _ctx: TaskContext
) -> None:
    """The spmStart task's work: take the lock on the master's leases, hand it to the pool.

    Then, as VDSM's spmStart: make the master tree (`master/vms`, `master/tasks`) and
    have the task manager read back, and from then on keep, the SPM tasks there.
    """
    path = wait(client.read(master, Where()), timeout=timeout, what=master)
    fd = take_spm_lock(path / "dom_md" / "leases")
    try:
        wait(pool.became_spm(fd), timeout=timeout, what=POOL)
    except BaseException:
        os.close(fd)
        raise
    wait(client.write(master, MakeMasterTree()), timeout=timeout, what=master)
    wait(client.tasks().use_store(tasks_dir(path)), timeout=timeout, what=TASKS)
