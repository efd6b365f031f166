"""Disk replication of a running VM: the live storage migration half of `BlockJobs`.

The Engine's live storage migration (LiveMigrateDiskCommand): a snapshot makes a new
leaf; Image.cloneStructure makes the image's chain on the destination domain; then

    VM.diskReplicateStart(srcDisk, dstDisk)    the destination leaf prepared, libvirt
        mirrors the drive's active layer into it (blockCopy SHALLOW | REUSE_EXT: the
        layers below are copied by Image.syncData meanwhile)
    VM.diskReplicateFinish(srcDisk, dstDisk)   once mirroring is in step: a pivot to
        the destination (dstDisk differs from srcDisk), or an abort that stays on
        the source (dstDisk is srcDisk)

as VDSM's Vm.diskReplicateStart/Finish. The replication is recorded in the drive's
metadata (`<ovirt-vm:diskReplicate>`) before libvirt starts it, so a restarted agent
can still finish it; after a pivot the drive's metadata names the destination.
Everything runs on the VM actor's turn; libvirt and storage calls run on workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import libvirt

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import CallerError, Conflict
from hostvisor.actors.vm import blockjob_merge as merging
from hostvisor.actors.vm.blockjob_merge import Chains, Disk

if TYPE_CHECKING:
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.vm.blockjob_merge import MergeJob

PIVOT_WAIT = 30.0
"""Seconds to wait for libvirt's XML to show the destination after a pivot."""
_COPY_FLAGS = (
    libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW
    | libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
    | getattr(libvirt, "VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB", 4)
)


class ReplicaError(CallerError):
    """The replication could not start or has no job (VDSM's code 55)."""

    code = 55
    message = "Drive replication error"


class ReplicationNotInProgress(CallerError):
    """diskReplicateFinish of a drive that is not replicating (VDSM's code 88)."""

    code = 88
    message = "Replication not in progress."


class ReplicaNotReady(Conflict):
    """The mirror has not caught up yet (VDSM's 'unavail', code 40)."""

    message = "Resource unavailable"


class _NoCopyJob(Exception):
    """libvirt reports no block job on the drive."""


class DiskReplication:
    """Disk replication for a VM actor (part of `BlockJobs`; its turn only)."""

    # Provided by VmActor / GuestActor / Actor / BlockJobs:
    vm_id: str
    guest: GuestModel
    _connection: Callable[[], Any]
    run_off: Callable[..., Any]
    _blockjob_chains: Chains | None
    _bj_replica_changes: dict[str, dict[str, str] | None] | None
    _bj_drive_of: Callable[[Disk], str]
    _bj_jobs: Callable[[], dict[str, MergeJob]]
    _bj_persist: Callable[..., None]
    _bj_update: Callable[..., None]

    _bjr_replicas: dict[str, dict[str, str]] | None = None  # by drive name

    def disk_replicate_start(
        self, src: Mapping[str, Any], dst: Mapping[str, Any], chains: Chains | None = None
    ) -> CallbackFuture:
        """Start mirroring a drive into `dst` (VM.diskReplicateStart); answers a future.

        Raises (here or in the future):
            InvalidArgument: malformed disks. ImageFileNotFound: no drive is `src`.
            VmIsDown: the VM does not run. ReplicaError: the drive already replicates
                or merges, the destination cannot be prepared, or libvirt refused.
        """
        source, target = Disk.from_wire(src), Disk.from_wire(dst)
        if chains is not None:
            self._blockjob_chains = chains
        name = self._bj_drive_of(source)
        self.guest.require_running("diskReplicateStart")
        replicas = self._bjr_all()
        if name in replicas or any(job.drive == name for job in self._bj_jobs().values()):
            raise ReplicaError(vmId=self.vm_id, drive=name, reason="a block job runs on it")
        storage = self._blockjob_chains
        if storage is None:
            raise ReplicaError(vmId=self.vm_id, reason="this host has no storage")
        replicas[name] = target.to_dict()
        self._bjr_change(name, target.to_dict())
        answer = CallbackFuture()
        vm_id, connection = self.vm_id, self._connection

        def copy() -> None:
            path, fmt = storage.prepare(target.domain, target.image, target.volume)
            xml = f"<disk type='file'><source file='{path}'/><driver type='{fmt}'/></disk>"
            connection().lookupByUUIDString(vm_id).blockCopy(name, xml, None, _COPY_FLAGS)

        def persisted(error: BaseException | None) -> None:
            if error is not None:
                self._bjr_drop(name)
                _fail(answer, ReplicaError(vmId=vm_id, reason=f"not persisted: {error}"))
                return
            self.run_off(copy, lambda o: self._bjr_copying(name, o, answer), name="replicate")

        self._bj_persist(then=persisted)
        return answer

    def _bjr_copying(self, name: str, outcome: Any, answer: CallbackFuture) -> None:
        if isinstance(outcome, BaseException):
            self._bjr_drop(name)
            self._bj_persist()
            _fail(answer, ReplicaError(vmId=self.vm_id, drive=name, reason=str(outcome)))
            return
        answer.set(None)

    def disk_replicate_finish(
        self, src: Mapping[str, Any], dst: Mapping[str, Any], chains: Chains | None = None
    ) -> CallbackFuture:
        """End a drive's replication (VM.diskReplicateFinish): pivot to `dst`, or stay.

        Raises (here or in the future):
            InvalidArgument, ImageFileNotFound, ReplicationNotInProgress,
            ReplicaNotReady (40: the mirror lags), ReplicaError (no job: dropped).
        """
        source, target = Disk.from_wire(src), Disk.from_wire(dst)
        if chains is not None:
            self._blockjob_chains = chains
        name = self._bj_drive_of(source)
        if name not in self._bjr_all():
            raise ReplicationNotInProgress(vmId=self.vm_id, driveName=name)
        pivot = source != target
        answer = CallbackFuture()
        vm_id, connection = self.vm_id, self._connection

        def finish() -> None:
            _finish(connection().lookupByUUIDString(vm_id), name, pivot=pivot, sd=target.domain)

        def done(outcome: Any) -> None:
            if isinstance(outcome, ReplicaNotReady):
                _fail(answer, outcome)
                return
            self._bjr_drop(name)
            if isinstance(outcome, BaseException):
                self._bj_persist()
                reason = "no replication job" if isinstance(outcome, _NoCopyJob) else str(outcome)
                _fail(answer, ReplicaError(vmId=vm_id, drive=name, reason=reason))
                return
            if pivot:
                self._bj_update(name, **target.to_dict())
            self._bj_persist(then=lambda _error: answer.set(None))

        self.run_off(finish, done, name="replicate:finish")
        return answer

    def _bjr_all(self) -> dict[str, dict[str, str]]:
        """The replications in progress; on first use, those the metadata records."""
        if self._bjr_replicas is None:
            self._bjr_replicas = merging.replicas_of(self.guest.xml)
        return self._bjr_replicas

    def _bjr_change(self, name: str, replica: dict[str, str] | None) -> None:
        if self._bj_replica_changes is None:
            self._bj_replica_changes = {}
        self._bj_replica_changes[name] = replica

    def _bjr_drop(self, name: str) -> None:
        self._bjr_all().pop(name, None)
        self._bjr_change(name, None)


def _finish(domain: Any, drive: str, *, pivot: bool, sd: str) -> None:
    """End the drive's copy job: pivot onto domain `sd`'s volume, or abort (blocks).

    Raises:
        _NoCopyJob: libvirt has no job on the drive. ReplicaNotReady: it lags.
        libvirt.libvirtError: libvirt refused.
    """
    info = domain.blockJobInfo(drive, 0) or {}
    if "cur" not in info or "end" not in info:
        raise _NoCopyJob
    if info["cur"] != info["end"]:
        raise ReplicaNotReady(drive=drive, cur=info["cur"], end=info["end"])
    domain.blockJobAbort(drive, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0)
    if pivot:
        _await_source(domain, drive, sd)


def _await_source(domain: Any, drive: str, sd: str) -> None:
    """Wait for libvirt's XML to show the drive's active layer on storage domain `sd`."""
    deadline = time.monotonic() + PIVOT_WAIT
    while True:
        chain = merging.live_chain(domain.XMLDesc(0), drive) or []
        if chain and f"/{sd}/" in chain[-1].path:
            return
        if time.monotonic() > deadline:
            raise ReplicaError(drive=drive, reason="the pivot never showed")
        time.sleep(0.05)


def _fail(answer: CallbackFuture, error: BaseException) -> None:
    answer.set_exception(exc_info=(type(error), error, error.__traceback__))
