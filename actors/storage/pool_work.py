"""The blocking halves of the pool's changes: what a worker does for the pool actor.

Each function runs on a worker of the work facility (never an actor's thread), talks
to the domains only through their typed messages, and waits for each answer at
most `timeout` seconds (`proxy.wait`). The pool actor runs them one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Protocol

import pykka

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.storage import clusterlock
from hostvisor.actors.storage.addresses import POOL, TASKS
from hostvisor.actors.storage.clusterlock_ops import JoinLockspace, LockAreas
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
    record = PoolRecord(
        sp_uuid=sp,
        host_id=request.host_id,
        master_uuid=master,
        master_version=version,
        domains={
            check_uuid(sd, "domainDict"): str(status).capitalize() for sd, status in domains.items()
        },
        lver=int(meta.get("POOL_SPM_LVER", "-1")),
    )
    active = [sd for sd, status in record.domains.items() if status == DomainStatus.ACTIVE.value]
    tell_domains(client, active, JoinLockspace(request.host_id), timeout)
    return record


def tell_domains(client: StorageClient, domains: list[str], message: Any, timeout: float) -> None:
    """Tell each domain's actor `message` (a lockspace change), adopting it if needed.

    A domain no connected mount holds is skipped (its monitor reports it invalid).
    """
    for sd in domains:
        try:
            proxy = wait(client.domain(sd), timeout=timeout, what=sd)
        except HostvisorError as error:
            log.warning("domain %s: cannot tell it %r: %s", sd, message, error)
            continue
        with contextlib.suppress(pykka.ActorDeadError):  # restarting: the pool tells again
            proxy.ref.tell(message)


def _pool_domains(text: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in text.split(",") if ":" in item)


def pool_info(
    record: PoolRecord,
    spm_id: int,
    client: StorageClient,
    timeout: float,
    *,
    lver: int | None = None,
) -> dict[str, Any]:
    """StoragePool.getInfo's {info, dominfo}, read from the master and each domain.

    `spm_id` and `lver` are getSpmStatus's (sanlock's, on a shared master). As VDSM's
    hsm._getDomsStats (not its schema, which requires them), a domain that is not
    active gets only {status, alerts, isoprefix ""}: no version nor sizes.
    """
    meta = wait(client.read(record.master_uuid, Metadata()), timeout=timeout, what="master")
    dominfo: dict[str, dict[str, Any]] = {}
    pool_prefix = ""
    for sd, status in record.domains.items():
        if status != DomainStatus.ACTIVE.value:
            dominfo[sd] = {"status": status, "alerts": [], "isoprefix": ""}
            continue
        try:
            stats = wait(client.read(sd, Stats()), timeout=timeout, what=sd)
            own = wait(client.read(sd, Metadata()), timeout=timeout, what=sd)
            where = wait(client.read(sd, Where()), timeout=timeout, what=sd)
        except StorageDomainDoesNotExist:
            dominfo[sd] = {"status": DomainStatus.UNKNOWN.value, "alerts": [], "isoprefix": ""}
            continue
        prefix = str(iso_dir(where)) if own.get("CLASS") == DomainClass.ISO.word else ""
        if prefix:
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
        "lver": record.lver if lver is None else lver,
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
    master: str,
    client: StorageClient,
    pool: PoolProxy,
    timeout: float,
    host_id: int,
    _ctx: TaskContext,
) -> None:
    """The spmStart task's work: take the master's SDM lease, hand it to the pool.

    On a shared domain the lease is sanlock's `SDM` resource on `dom_md/leases`
    (VDSM's acquireHostId, then acquireClusterLock): this host joins the master's
    lockspace first if it has not yet (waiting for sanlock, up to VDSM's 180 s), and
    another host holding the lease fails the task with AcquireLockFailure. A LOCALFS
    master (or no sanlock daemon) is locked with a local `flock` instead.

    Then, as VDSM's spmStart: make the master tree (`master/vms`, `master/tasks`) and
    have the task manager read back, and from then on keep, the SPM tasks there.
    """
    path = wait(client.read(master, Where()), timeout=timeout, what=master)
    areas = wait(client.read(master, LockAreas()), timeout=timeout, what=master)
    if areas is None:
        fd = take_spm_lock(path / "dom_md" / "leases")
    else:
        _join_now(areas, host_id)
        fd = areas.acquire_sdm()
    try:
        wait(pool.became_spm(fd), timeout=timeout, what=POOL)
    except BaseException:
        os.close(fd)
        raise
    wait(client.write(master, MakeMasterTree()), timeout=timeout, what=master)
    wait(client.tasks().use_store(tasks_dir(path)), timeout=timeout, what=TASKS)


HOST_ID_WAIT = 180.0
"""VDSM's ACQUIRE_HOST_ID_TIMEOUT: how long spmStart waits for sanlock to join."""


def _join_now(areas: clusterlock.Areas, host_id: int) -> None:
    """Join `areas`' lockspace and wait until sanlock holds the host id (a worker; blocks).

    Raises:
        AcquireHostIdFailure: sanlock refused, or did not join in time.
    """
    deadline = time.monotonic() + HOST_ID_WAIT
    delay = 0.1
    while True:
        state = areas.joined(host_id)
        if state is True:
            return
        if state is False:
            areas.join(host_id)
        if time.monotonic() > deadline:
            raise clusterlock.AcquireHostIdFailure(
                sdUUID=areas.sd_uuid, hostId=host_id, reason="sanlock did not join in time"
            )
        time.sleep(delay)  # polling sanlock's asynchronous join, on a worker
        delay = min(delay * 2, 1.0)
