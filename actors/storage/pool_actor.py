"""StoragePoolActor: this host's pool (create, connect, disconnect), membership and SPM.

    caller ──create(CreatePool)────▶ pool ──Serial──▶ worker: JoinPool on each domain's
                                                      writer (checked there); on a refusal,
                                                      UndoJoin on those joined, in reverse
    caller ──connect(ConnectPool)──▶ pool ──Serial──▶ worker: read and check the master ──▶
                                     pool: persist the record (pool.json)
    caller ──disconnect(sp)────────▶ pool: release SPM, forget the record
    caller ──member_read/write/task(sp, sd, op)──▶ pool: check connected, SPM, member
                                     ──▶ the domain's actor (the answer is the domain's)
    caller ──spm_start(sp)─────────▶ pool ──▶ TaskManager: a task that takes the lock
                                     and hands it back (became_spm)

Pool-level changes (create, connect, disconnect, attach, activate, deactivate,
detach) run one at a time on one queue, so two creates never interleave and the
record a change starts from is the one the previous change left. The record is
persisted on this actor's thread (a small local file, atomically), so an agent
restarted after `kill -9` is connected to the same pool: `on_start` reads it back.

SPM: only the host holding the pool's lock may change metadata. A shared master
(NFS, POSIXFS, GLUSTERFS, with a sanlock daemon running) is locked as VDSM does:
sanlock's `SDM` resource on `dom_md/leases`, acquired by the spmStart task's worker
through a sanlock registration (actors/storage/clusterlock.py) that it hands to
this actor. A second host's spmStart fails while it is held; sanlock releases it
when this process dies (`kill -9`), so the other host's next spmStart succeeds.
`getSpmStatus` reports sanlock's lease version and owner host id, from any host,
as VDSM's memory backend does. Every LEASE_CHECK seconds this actor inquires its
registration: a lease sanlock no longer holds (its lockspace failed or was
removed) ends the SPM role here.

A LOCALFS master uses a local lock (as VDSM's localfs domains do): an exclusive
`flock` on `dom_md/leases`, handed over the same way. The kernel drops it when the
process dies; the lease version (lver) goes on growing in the pool's record. A
crash of this actor releases either lock: the restarted actor is not SPM.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pykka

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.storage import clusterlock, clusterlock_ops, pool_admin, pool_work
from hostvisor.actors.storage.clusterlock_ops import InspectSdm, JoinLockspace, LeaveLockspace
from hostvisor.actors.storage.domain_ops import DomainRead, DomainTask, DomainWrite
from hostvisor.actors.storage.errors import (
    CannotConnectMultiplePools,
    IsSpm,
    NotSpm,
    StorageDomainNotActive,
    StorageDomainNotInPool,
    StoragePoolUnknown,
)
from hostvisor.actors.storage.master import CheckVersion, RemoveVm, UpdateVms, VmsInfo
from hostvisor.actors.storage.model import BLANK_UUID, DomainStatus, check_uuid
from hostvisor.actors.storage.pool_model import (
    ConnectPool,
    CreatePool,
    PoolRecord,
    take_spm_lock,
)
from hostvisor.actors.storage.proxy import PoolProxy, StorageClient, chain, wait
from hostvisor.actors.storage.serial import SerialActor, done, settle

__all__ = ["PoolRecord", "StoragePoolActor", "take_spm_lock"]

log = logging.getLogger(__name__)

WAIT = 60.0
"""How long a pool change's worker waits for one domain's answer."""
LEASE_CHECK = 2.0
"""Seconds between two inquiries of the SDM lease this host holds through sanlock."""


@dataclass(frozen=True, slots=True)
class CheckSpmLease:
    """Tell (timer): is the SDM lease still held? Do the active domains hold our host id?"""


class StoragePoolActor(SerialActor):
    """Owns this host's pool connection and, while SPM, the pool's lock.

    Args:
        store: where the connection's record is persisted (pool.json).
        client: how the domains, the connections and the task manager are reached.
        wait: seconds a pool change waits for one domain's answer.
    """

    def __init__(self, *, store: Path, client: StorageClient, wait: float = WAIT) -> None:
        """Remember the collaborators; read the record in `on_start`."""
        super().__init__()
        self._store = store
        self._client = client
        self._wait = wait
        self._record: PoolRecord | None = None
        self._lock_fd: int | None = None

    def on_start(self) -> None:
        """Read the persisted connection: a restarted agent is connected to the same pool."""
        self._record = PoolRecord.load(self._store)
        self._start_serial()
        if self._record is not None:
            log.info("connected to pool %s (persisted)", self._record.sp_uuid)
        self.tick_every(LEASE_CHECK, CheckSpmLease())

    def on_receive(self, message: Any) -> Any:
        """Check the SDM lease held through sanlock; anything else is a bug."""
        match message:
            case CheckSpmLease():
                record = self._record
                if record is not None:  # joins again what a restart or sanlock lost
                    active = [
                        sd
                        for sd, status in record.domains.items()
                        if status == DomainStatus.ACTIVE.value
                    ]
                    self._tell_domains(active, JoinLockspace(record.host_id))
                fd = self._lock_fd
                if fd is not None and _is_sanlock(fd):
                    work = functools.partial(clusterlock.held, fd)
                    self.run_off(work, functools.partial(self._lease_checked, fd), name="lease")
            case _:
                return super().on_receive(message)
        return None

    stopped = "the pool's actor stopped"

    def on_stop(self) -> None:
        """Release the SPM lock, if held; answer what is queued."""
        self._release(wait_release=False)
        super().on_stop()

    # -- the pool -------------------------------------------------------------------------

    def connected(self) -> PoolRecord | None:
        """The connected pool's record, or None (from memory)."""
        return self._record

    def record(self, sp_uuid: str) -> PoolRecord:
        """The record of `sp_uuid`. Raises StoragePoolUnknown unless connected to it."""
        return self._require(sp_uuid)

    def create(self, request: CreatePool) -> CallbackFuture:
        """StoragePool.create: write the pool into its domains, all or none.

        Fails with StoragePoolAlreadyExists or StorageDomainAlreadyAttached (each
        checked inside the domain's writer), leaving every domain as it was.
        """
        work = functools.partial(pool_work.create_pool, request, self._client, self._wait)
        return self._serial.add(work, op=f"create pool {request.sp_uuid}")

    def connect(self, request: ConnectPool) -> CallbackFuture:
        """StoragePool.connect: this host becomes a member (idempotent for the same pool).

        Fails with CannotConnectMultiplePools, StoragePoolMasterNotFound or
        StoragePoolWrongMaster.
        """
        if self._already(request):
            return done(value=True)

        def make() -> Any:  # this actor's thread, at the connect's turn
            if self._already(request):
                return lambda: None
            return functools.partial(pool_work.connect_pool, request, self._client, self._wait)

        def after(outcome: Any) -> None:
            if isinstance(outcome, PoolRecord) and self._record is None:
                self._set(outcome)

        return self._serial.add_made(make, op=f"connect pool {request.sp_uuid}", after=after)

    def _already(self, request: ConnectPool) -> bool:
        if self._record is None:
            return False
        if self._record.sp_uuid == request.sp_uuid:
            return True
        raise CannotConnectMultiplePools(connected=self._record.sp_uuid, spUUID=request.sp_uuid)

    def disconnect(self, sp_uuid: str) -> CallbackFuture:
        """StoragePool.disconnect: give up SPM and forget the record. Raises StoragePoolUnknown."""
        self._require(sp_uuid)

        def make() -> Any:
            record = self._require(sp_uuid)
            self._release()
            self._tell_domains(list(record.domains), LeaveLockspace())
            self._forget_pool()
            return lambda: None

        return self._serial.add_made(make, op=f"disconnect pool {sp_uuid}")

    def info(self, sp_uuid: str) -> CallbackFuture:
        """StoragePool.getInfo: {info, dominfo} (read from the domains on a worker)."""
        record = self._require(sp_uuid)
        status = self.spm_status(sp_uuid)
        reply = CallbackFuture()

        def work() -> dict[str, Any]:
            spm = wait(status, timeout=self._wait, what="SPM status")
            return pool_work.pool_info(
                record, spm["spmId"], self._client, self._wait, lver=spm["spmLver"]
            )

        self.run_off(work, functools.partial(settle, reply, op="pool info"), name="pool info")
        return reply

    def destroy(self, sp_uuid: str) -> CallbackFuture:
        """StoragePool.destroy (SPM): every domain leaves the pool, then disconnect.

        Fails with StoragePoolUnknown or NotSpm at once; a domain that cannot leave
        fails it with StoragePoolDestroyingError.
        """
        self._require_spm(sp_uuid)

        def make() -> Any:
            record = self._require_spm(sp_uuid)
            return functools.partial(pool_admin.destroy_pool, record, self._client, self._wait)

        def after(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                return
            self._release()
            self._forget_pool()

        return self._serial.add_made(make, op=f"destroy pool {sp_uuid}", after=after)

    def reconstruct_master(self, request: pool_admin.Reconstruct) -> CallbackFuture:
        """StoragePool.reconstructMaster: rebuild the master from the Engine's domainDict.

        Refused while this host is the SPM (IsSpm, as VDSM). If this host is connected
        to the pool, its record follows (master, version, domains).
        """
        if self.is_spm:
            raise IsSpm(spUUID=request.sp_uuid)
        work = functools.partial(pool_admin.reconstruct_master, request, self._client, self._wait)

        def after(outcome: Any) -> None:
            record = self._record
            if isinstance(outcome, BaseException) or record is None:
                return
            if record.sp_uuid == request.sp_uuid:
                domains = {sd: str(status).capitalize() for sd, status in request.domains}
                self._set(
                    replace(
                        record,
                        master_uuid=request.master_uuid,
                        master_version=request.master_version,
                        domains=domains or dict(record.domains),
                    )
                )

        return self._serial.add(work, op=f"reconstruct master of {request.sp_uuid}", after=after)

    def switch_master(self, sp_uuid: str, old: str, new: str, version: int) -> CallbackFuture:
        """StoragePool.switchMaster (SPM): a task that moves the master role to `new`."""
        record = self._require_spm(sp_uuid)
        pool_admin.check_switch(record, old, new)
        work = functools.partial(
            pool_admin.switch_master,
            record,
            new,
            version,
            self._client,
            PoolProxy(self.actor_ref),
            self._wait,
        )
        return self._client.tasks().submit("switchMaster", work)

    def master_switched(self, sp_uuid: str, new: str, version: int) -> None:
        """Record the pool's new master (told by the switchMaster task)."""
        record = self._require(sp_uuid)
        self._set(replace(record, master_uuid=new, master_version=version))

    def upgrade(self, sp_uuid: str, target: int) -> CallbackFuture:
        """StoragePool.upgrade (SPM): answers "started"; every domain is v5 already.

        Fails with UnsupportedDomainVersion for a version past 5.
        """
        record = self._require_spm(sp_uuid)
        reply = CallbackFuture()

        def work() -> str:
            for sd in record.domains:
                wait(
                    self._client.read(sd, CheckVersion(target=target)), timeout=self._wait, what=sd
                )
            return "started"

        self.run_off(work, functools.partial(settle, reply, op="upgrade pool"), name="upgrade")
        return reply

    # -- VM OVFs (export domains and the master) --------------------------------------------

    def vms_info(self, sp_uuid: str, sd_uuid: str, vm_ids: tuple[str, ...]) -> CallbackFuture:
        """StoragePool.getBackedUpVmsInfo (SPM): {vmId: OVF} kept on `sd_uuid` (or the master)."""
        sd = self._vms_domain(sp_uuid, sd_uuid)
        return self._client.read(sd, VmsInfo(vm_ids=vm_ids))

    def update_vms(
        self, sp_uuid: str, sd_uuid: str, vms: tuple[tuple[str, str], ...]
    ) -> CallbackFuture:
        """StoragePool.updateVMs (SPM): write the OVFs on an active domain (or the master)."""
        sd = self._vms_domain(sp_uuid, sd_uuid, active=True)
        return self._client.write(sd, UpdateVms(vms=vms))

    def remove_vm(self, sp_uuid: str, sd_uuid: str, vm: str) -> CallbackFuture:
        """StoragePool.removeVM (SPM): drop a VM's OVF from an active domain (or the master)."""
        sd = self._vms_domain(sp_uuid, sd_uuid, active=True)
        return self._client.write(sd, RemoveVm(vm=vm))

    def _vms_domain(self, sp_uuid: str, sd_uuid: str, *, active: bool = False) -> str:
        record = self._require_spm(sp_uuid)
        sd = record.master_uuid if sd_uuid in ("", BLANK_UUID) else sd_uuid
        self._member(sp_uuid, sd, spm=True)
        if active and record.domains.get(sd) != DomainStatus.ACTIVE.value:
            raise StorageDomainNotActive(sdUUID=sd)
        return sd

    # -- membership (SPM) -------------------------------------------------------------------

    def attach(self, sp_uuid: str, sd_uuid: str) -> CallbackFuture:
        """StorageDomain.attach: the domain joins the pool (Attached)."""
        self._require_spm(sp_uuid)
        check_uuid(sd_uuid, "storagedomainID")

        def make() -> Any:
            self._require_spm(sp_uuid)
            return functools.partial(pool_work.attach, sp_uuid, sd_uuid, self._client, self._wait)

        def after(outcome: Any) -> None:
            if not isinstance(outcome, BaseException):
                record = self._record
                if record is not None and sd_uuid not in record.domains:
                    self._set_domain(sd_uuid, DomainStatus.ATTACHED)

        return self._serial.add_made(make, op=f"attach {sd_uuid}", after=after)

    def set_status(self, sp_uuid: str, sd_uuid: str, status: DomainStatus) -> CallbackFuture:
        """StorageDomain.activate/deactivate: set a member domain's status."""
        self._member(sp_uuid, sd_uuid, spm=True)

        def make() -> Any:
            self._member(sp_uuid, sd_uuid, spm=True)
            return functools.partial(pool_work.exists, sd_uuid, self._client, self._wait)

        def after(outcome: Any) -> None:
            if not isinstance(outcome, BaseException) and self._record is not None:
                self._set_domain(sd_uuid, status)
                active = status == DomainStatus.ACTIVE
                change = JoinLockspace(self._record.host_id) if active else LeaveLockspace()
                self._tell_domains([sd_uuid], change)

        return self._serial.add_made(make, op=f"set {sd_uuid} {status.value}", after=after)

    def detach(self, sp_uuid: str, sd_uuid: str) -> CallbackFuture:
        """StorageDomain.detach: a member domain (not the master) leaves the pool."""

        def make() -> Any:
            record = self._require_spm(sp_uuid)
            if sd_uuid == record.master_uuid:
                raise InvalidArgument(sdUUID=sd_uuid, reason="the master domain cannot be detached")
            self._member(sp_uuid, sd_uuid, spm=True)
            return functools.partial(pool_work.detach, sd_uuid, self._client, self._wait)

        def after(outcome: Any) -> None:
            record = self._record
            if not isinstance(outcome, BaseException) and record and sd_uuid in record.domains:
                self._set_domain(sd_uuid, None)

        make()  # answer a bad request at once
        return self._serial.add_made(make, op=f"detach {sd_uuid}", after=after)

    def member_read(
        self, sp_uuid: str, sd_uuid: str, op: DomainRead[Any], *, spm: bool = False
    ) -> CallbackFuture:
        """Run `op` on a member domain; the future is the domain's answer."""
        self._member(sp_uuid, sd_uuid, spm=spm)
        return self._client.read(sd_uuid, op)

    def member_write(self, sp_uuid: str, sd_uuid: str, op: DomainWrite[Any]) -> CallbackFuture:
        """Run `op` on a member domain's writer (SPM only)."""
        self._member(sp_uuid, sd_uuid, spm=True)
        return self._client.write(sd_uuid, op)

    def member_task(self, sp_uuid: str, sd_uuid: str, op: DomainTask) -> CallbackFuture:
        """Start `op` as a task of a member domain (SPM only); settles with the task id."""
        self._member(sp_uuid, sd_uuid, spm=True)
        return self._client.run_task(sd_uuid, op)

    # -- SPM --------------------------------------------------------------------------------

    @property
    def is_spm(self) -> bool:
        """Whether this host holds the pool's lock."""
        return self._lock_fd is not None

    def spm_status(self, sp_uuid: str) -> CallbackFuture:
        """StoragePool.getSpmStatus: {spmStatus, spmLver, spmId}.

        `spmStatus` is this host's role ("SPM" or "Free"). On a sanlock master,
        `spmLver` and `spmId` are the SDM lease's version and owner as sanlock reports
        them (whoever holds it; -1 and -1 when free), read off this thread; on a
        local lock they are the pool record's lver and this host's id while SPM.
        """
        record = self._require(sp_uuid)
        role = "SPM" if self.is_spm else "Free"
        local = {
            "spmStatus": role,
            "spmLver": record.lver,
            "spmId": record.host_id if self.is_spm else -1,
        }

        def answer(inspected: tuple[int, int] | None) -> CallbackFuture:  # a worker
            if inspected is None:
                return done(value=local)
            lver, owner = inspected
            return done(value={"spmStatus": role, "spmLver": lver, "spmId": owner})

        return chain(self._client.read(record.master_uuid, InspectSdm()), answer)

    def spm_start(self, sp_uuid: str) -> CallbackFuture:
        """StoragePool.spmStart: a task that takes the pool's lock; settles with its id.

        Already SPM: a task that succeeds at once (VDSM's startSpm returns silently).
        """
        record = self._require(sp_uuid)
        if self.is_spm:
            return self._client.tasks().submit("spmStart", _already_spm)
        work = functools.partial(
            pool_work.become_spm,
            record.master_uuid,
            self._client,
            PoolProxy(self.actor_ref),
            self._wait,
            record.host_id,
        )
        return self._client.tasks().submit("spmStart", work)

    def became_spm(self, lock_fd: int) -> CallbackFuture:
        """Take the lock a spmStart task acquired; answer the new SPM status."""
        record = self._record
        if record is None or self._lock_fd is not None:
            os.close(lock_fd)  # disconnected meanwhile, or SPM already: keep one lock
            if record is None:
                raise StoragePoolUnknown(reason="disconnected while the SPM lock was taken")
            return self.spm_status(record.sp_uuid)
        self._lock_fd = lock_fd
        self._set(replace(record, lver=record.lver + 1))
        log.info("host %d is SPM of pool %s", record.host_id, record.sp_uuid)
        return self.spm_status(record.sp_uuid)

    def spm_stop(self, sp_uuid: str) -> CallbackFuture:
        """StoragePool.spmStop: give up the SPM role; settles once the lease is released."""
        self._require(sp_uuid)
        return self._release()

    def _lease_checked(self, fd: int, outcome: object) -> None:
        if fd == self._lock_fd and outcome is False:
            log.error("sanlock no longer holds this host's SDM lease: no longer SPM")
            self._release()

    # -- helpers (this actor's thread) ------------------------------------------------------

    def _require(self, sp_uuid: str) -> PoolRecord:
        check_uuid(sp_uuid, "storagepoolID")
        if self._record is None or self._record.sp_uuid != sp_uuid:
            raise StoragePoolUnknown(spUUID=sp_uuid)
        return self._record

    def _require_spm(self, sp_uuid: str) -> PoolRecord:
        record = self._require(sp_uuid)
        if not self.is_spm:
            raise NotSpm(spUUID=sp_uuid)
        return record

    def _member(self, sp_uuid: str, sd_uuid: str, *, spm: bool) -> PoolRecord:
        check_uuid(sd_uuid, "storagedomainID")
        record = self._require_spm(sp_uuid) if spm else self._require(sp_uuid)
        if sd_uuid not in record.domains:
            raise StorageDomainNotInPool(sdUUID=sd_uuid, spUUID=sp_uuid)
        return record

    def _set_domain(self, sd_uuid: str, status: DomainStatus | None) -> None:
        assert self._record is not None  # noqa: S101 - callers check
        domains = dict(self._record.domains)
        if status is None:
            domains.pop(sd_uuid, None)
        else:
            domains[sd_uuid] = status.value
        self._set(replace(self._record, domains=domains))

    def _tell_domains(self, domains: list[str], message: Any) -> None:
        """Tell the running actors of `domains` a lockspace change (never blocks)."""
        for sd in domains:
            proxy = self._client.running_domain(sd)
            if proxy is not None:
                with contextlib.suppress(pykka.ActorDeadError):  # stopping: told again later
                    proxy.ref.tell(message)

    def _set(self, record: PoolRecord) -> None:
        record.save(self._store)
        self._record = record

    def _forget_pool(self) -> None:
        """No pool any more: forget the record and stop keeping SPM tasks on its master."""
        with contextlib.suppress(FileNotFoundError):
            self._store.unlink()
        self._record = None
        with contextlib.suppress(HostvisorError):
            self._client.tasks().use_store(None)

    def _release(self, *, wait_release: bool = True) -> CallbackFuture:
        """Give the SPM lock up: this host is no longer SPM from now on.

        A sanlock lease is released on a worker (sanlock writes the lease) and the
        future settles then; a local lock is dropped at once.
        """
        reply = done(value=None)
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            if wait_release and _is_sanlock(fd) and self._record is not None:
                reply = CallbackFuture()
                master = self._record.master_uuid
                work = functools.partial(_release_sdm, self._client, master, fd, self._wait)
                self.run_off(work, functools.partial(settle, reply, op="spmStop"), name="spmStop")
            else:
                os.close(fd)
            if self._record is not None:
                log.info(
                    "host %d is no longer SPM of pool %s",
                    self._record.host_id,
                    self._record.sp_uuid,
                )
        return reply


def _is_sanlock(fd: int) -> bool:
    """Whether `fd` is a sanlock registration (a socket) rather than a flock'd file."""
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def _release_sdm(client: StorageClient, master: str, fd: int, timeout: float) -> None:
    """Release the SDM lease held through registration `fd`, then close it (a worker)."""
    try:
        areas = wait(client.read(master, clusterlock_ops.LockAreas()), timeout=timeout, what=master)
        if areas is not None:
            areas.release_sdm(fd)
    except HostvisorError:
        log.exception("the SDM lease is released by closing its registration")
    finally:
        os.close(fd)


def _already_spm(_ctx: Any) -> None:
    """The spmStart task of a host that is SPM already: nothing to do."""
