"""Block jobs of a running VM: live merge (VM.merge) and the `vmJobs` it reports.

Disk replication (live storage migration) is its other half, `DiskReplication`
(actors/vm/blockjob_replica.py), which shares the metadata writes below.

`BlockJobs` is mixed into `VmActor`; everything here runs on the VM actor's turn and
never blocks it: each libvirt or storage step runs on the work facility (`run_off`)
and comes back as a message. A merge, as VDSM's DriveMerger runs it
(virt/livemerge.py; the steps are in `blockjob_merge`):

    merge()   the drive found, the job tracked (INIT) ── check (worker): volumes,
              live chain ── persist (COMMIT) ── blockCommit (worker) ── answer
    tick      every `POLL` s while jobs exist: blockJobInfo (worker); an active
              commit ready to pivot, or any job libvirt no longer reports → CLEANUP
              (persisted) ── cleanup (worker): base CAP, leaf ILLEGAL, pivot, sync
              the metadata with qemu's chain ── persisted without the job and with
              the drive's new leaf volume ── untracked

`vmJobs` reports each tracked job (VDSM's Job.info) until its cleanup is done and
the domain's metadata and XML say the new chain, so the Engine, which polls it and
then reads the XML, sees the job end only once storage and the VM are consistent. The
jobs live in the domain's `<ovirt-vm:jobs>` metadata (VDSM's record), written
before libvirt starts the commit and at each state change: a VM actor restarted
after a crash, or by a new agent, reads them back and carries on (COMMIT: watch
libvirt's job; CLEANUP: pivot if libvirt still has the job, then sync).

Metadata writes are serialized here (one at a time, in order), so a later write
never loses an earlier one's jobs.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import blockjob_merge as merging
from hostvisor.actors.vm.blockjob_merge import (
    CLEANUP,
    COMMIT,
    Chains,
    Disk,
    ImageFileNotFound,
    MergeFailed,
    MergeJob,
)
from hostvisor.actors.vm.blockjob_replica import DiskReplication
from hostvisor.actors.vm.disks import disk_volumes

if TYPE_CHECKING:
    from hostvisor.actors.clock import Clock
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.timers import Timer

log = logging.getLogger(__name__)

POLL = 0.05
"""Seconds between two looks at libvirt's block jobs while any runs: one libvirt call (a
QEMU query) off the turn; a merge's end is then seen within 50 ms (VDSM polls every
15 s, so even a short merge takes that long there)."""
RETRY = 2.0
"""Seconds before a failed cleanup (a pivot libvirt refused, storage away) is tried again."""


@dataclass(frozen=True, slots=True)
class BlockJobTick:
    """Tell (the timer service): look at the VM's block jobs now."""


class BlockJobs(DiskReplication):
    """Block jobs for a VM actor (mixed into VmActor; runs on its turn only)."""

    NOT_YET: ClassVar[frozenset[str]] = frozenset()
    """Methods the API calls that this part does not implement yet: code 75."""

    # Provided by VmActor / GuestActor / Actor:
    vm_id: str
    guest: GuestModel
    _connection: Callable[[], Any]
    run_off: Callable[..., Any]
    tick_every: Callable[..., Timer]
    _set_xml: Callable[[str], None]
    if TYPE_CHECKING:

        @property
        def clock(self) -> Clock:
            """The actor's clock (Actor's)."""
            ...

    _blockjob_chains: Chains | None = None
    """How merges reach storage (the host's, or the last merge verb's)."""
    _bj_by_id: dict[str, MergeJob] | None = None  # by job id; None: not read from the XML yet
    _bj_timer: Timer | None = None
    _bj_polling: bool = False
    _bj_writing: bool = False
    _bj_again: bool = False
    _bj_waiters: list[Callable[[BaseException | None], None]] | None = None
    _bj_updates: dict[str, dict[str, str]] | None = None  # drive → changed ids, not written yet
    _bj_replica_changes: dict[str, dict[str, str] | None] | None = None  # not written yet

    # -- the verb -------------------------------------------------------------------------

    def merge(
        self,
        drive: Mapping[str, Any],
        base: str,
        top: str,
        bandwidth: int | str = 0,
        job_id: str | None = None,
        chains: Chains | None = None,
    ) -> CallbackFuture:
        """Start merging `top` into `base` on a drive (VM.merge); answers a future.

        The future settles once libvirt's block commit has started (VDSM's answer);
        the job then shows in `vmJobs` until its cleanup is done.

        Raises (here or in the future):
            InvalidArgument: malformed params. ImageFileNotFound: no such drive.
            VmIsDown: the VM does not run. MergeFailed: a job already runs on the
                drive, a bad volume, or libvirt refused.
        """
        disk, rate, job_id = _merge_params(drive, base, top, bandwidth, job_id)
        if chains is not None:
            self._blockjob_chains = chains
        name = self._bj_drive_of(disk)
        self.guest.require_running("merge")
        jobs = self._bj_jobs()
        for other in jobs.values():
            if other.drive == name or other.id == job_id:
                raise MergeFailed(
                    job=job_id, reason=f"Job {other.id} already exists for image {disk.image}"
                )
        storage = self._blockjob_chains
        if storage is None:
            raise MergeFailed(job=job_id, reason="this host has no storage to merge on")
        job = MergeJob(id=job_id, drive=name, disk=disk, base=base, top=top, bandwidth=rate)
        jobs[job_id] = job
        self.guest.changed()
        answer = CallbackFuture()
        vm_id, connection = self.vm_id, self._connection

        def check() -> list[merging.Layer]:
            return merging.check_merge(connection().lookupByUUIDString(vm_id), job, storage)

        self.run_off(check, lambda outcome: self._bj_checked(job, outcome, answer), name="merge")
        return answer

    def _bj_drive_of(self, disk: Disk) -> str:
        """The target name (`vda`) of the drive that is `disk`. Raises ImageFileNotFound."""
        for volume in disk_volumes(self.guest.xml):
            if (volume.domain_id, volume.image_id, volume.volume_id) == (
                disk.domain,
                disk.image,
                disk.volume,
            ):
                return volume.name
        raise ImageFileNotFound(vmId=self.vm_id, drive=disk.to_dict(), reason="Cannot find drive")

    def _bj_checked(self, job: MergeJob, outcome: Any, answer: CallbackFuture) -> None:
        if isinstance(outcome, BaseException):
            self._bj_drop(job)
            _fail(answer, outcome)
            return
        chain: list[merging.Layer] = outcome
        job.state = COMMIT  # persisted before libvirt starts: a restart knows of it
        vm_id, connection = self.vm_id, self._connection

        def persisted(error: BaseException | None) -> None:
            if error is not None:
                self._bj_drop(job)
                _fail(answer, MergeFailed(job=job.id, reason=f"not persisted: {error}"))
                return

            def commit() -> None:
                merging.start_commit(connection().lookupByUUIDString(vm_id), job, chain)

            self.run_off(commit, lambda o: self._bj_committed(job, o, answer), name="merge:commit")

        self._bj_persist(then=persisted)

    def _bj_committed(self, job: MergeJob, outcome: Any, answer: CallbackFuture) -> None:
        if isinstance(outcome, BaseException):
            self._bj_drop(job)
            _fail(answer, outcome)
            return
        log.info(
            "VM %s: merge %s started on %s (base %s, top %s%s)",
            self.vm_id,
            job.id,
            job.drive,
            job.base,
            job.top,
            ", active" if job.active else "",
        )
        self._bj_watch()
        answer.set(None)

    def _bj_drop(self, job: MergeJob) -> None:
        """Forget a job that never started (or has ended); persist that."""
        jobs = self._bj_jobs()
        if jobs.get(job.id) is job:
            del jobs[job.id]
            self.guest.changed()
            if job.state != merging.INIT:
                self._bj_persist()

    # -- watching libvirt -----------------------------------------------------------------

    def _bj_watch(self) -> None:
        if self._bj_timer is None:
            self._bj_timer = self.tick_every(POLL, BlockJobTick())

    def _blockjob_receive(self, message: Any) -> bool:
        """Handle `message` if it is one of this part's; say whether it was."""
        if isinstance(message, BlockJobTick):
            self._bj_tick()
            return True
        return False

    def _bj_tick(self) -> None:
        jobs = self._bj_jobs()
        if not jobs or self.guest.down:
            if self._bj_timer is not None:
                self._bj_timer.cancel()
                self._bj_timer = None
            return
        now = self.clock.monotonic()
        for job in jobs.values():
            if job.state == CLEANUP and not (job.cleaning or job.finished) and now >= job.retry_at:
                self._bj_cleanup(job)
        watched = [job.snapshot() for job in jobs.values() if job.state == COMMIT]
        if self._bj_polling or not watched:
            return
        self._bj_polling = True
        vm_id, connection = self.vm_id, self._connection

        def look() -> dict[str, tuple[dict[str, int], bool]]:
            domain = connection().lookupByUUIDString(vm_id)
            return {job.id: merging.poll(domain, job) for job in watched}

        self.run_off(look, self._bj_looked, name="merge:poll")

    def _bj_looked(self, outcome: Any) -> None:
        self._bj_polling = False
        if isinstance(outcome, BaseException):
            log.debug("VM %s: block jobs not read: %s", self.vm_id, outcome)
            return
        for job_id, (info, ready) in outcome.items():
            job = self._bj_jobs().get(job_id)
            if job is None or job.state != COMMIT:
                continue
            if info:
                if info != job.live:
                    job.live = dict(info)
                    self.guest.changed()
                if not ready:
                    continue
                log.info("VM %s: merge %s is ready for pivot", self.vm_id, job.id)
                job.pivot = True
            else:
                log.info("VM %s: merge %s: libvirt's job has ended", self.vm_id, job.id)
            job.state = CLEANUP
            self._bj_persist(then=functools.partial(self._bj_cleanup_after, job))

    def _bj_cleanup_after(self, job: MergeJob, _error: BaseException | None) -> None:
        self._bj_cleanup(job)

    def _bj_cleanup(self, job: MergeJob) -> None:
        storage = self._blockjob_chains
        if job.cleaning or self._bj_jobs().get(job.id) is not job:
            return
        if storage is None:
            log.warning("VM %s: merge %s waits for storage to clean up", self.vm_id, job.id)
            return
        job.cleaning = True
        snapshot = job.snapshot()
        vm_id, connection = self.vm_id, self._connection

        def clean() -> str:
            return merging.cleanup(connection().lookupByUUIDString(vm_id), snapshot, storage)

        self.run_off(clean, lambda outcome: self._bj_cleaned(job, outcome), name="merge:cleanup")

    def _bj_cleaned(self, job: MergeJob, outcome: Any) -> None:
        job.cleaning = False
        if isinstance(outcome, BaseException):
            log.warning("VM %s: merge %s cleanup failed, retrying: %s", self.vm_id, job.id, outcome)
            job.retry_at = self.clock.monotonic() + RETRY  # VDSM retries a failed cleanup
            return
        leaf: str = outcome
        log.info("VM %s: merge %s done; the drive's leaf is %s", self.vm_id, job.id, leaf)
        if leaf != job.disk.volume:
            self._bj_update(job.drive, volumeID=leaf)
        # Reported until the metadata and the XML say the new chain (VDSM untracks a
        # job only after its domain descriptor is updated): the Engine reads them next.
        job.finished = True
        self._bj_persist(then=functools.partial(self._bj_untrack, job))

    def _bj_untrack(self, job: MergeJob, _error: BaseException | None) -> None:
        jobs = self._bj_jobs()
        if jobs.get(job.id) is job:
            del jobs[job.id]
            self.guest.changed()

    # -- persistence ----------------------------------------------------------------------

    def _bj_jobs(self) -> dict[str, MergeJob]:
        """The tracked jobs; on first use, those the domain's metadata records."""
        if self._bj_by_id is None:
            self._bj_by_id = merging.jobs_of(self.guest.xml)
            if self._bj_by_id:
                log.info("VM %s: resuming merges %s", self.vm_id, sorted(self._bj_by_id))
                self._bj_watch()
        return self._bj_by_id

    def _bj_persist(self, then: Callable[[BaseException | None], None] | None = None) -> None:
        """Persist the jobs (and drives' changes) after any write in flight; `then` after."""
        if self._bj_waiters is None:
            self._bj_waiters = []
        if then is not None:
            self._bj_waiters.append(then)
        if self._bj_writing:
            self._bj_again = True
            return
        self._bj_writing, self._bj_again = True, False
        waiters, self._bj_waiters = self._bj_waiters, []
        jobs = {
            job_id: job.snapshot() for job_id, job in self._bj_jobs().items() if not job.finished
        }
        updates, self._bj_updates = self._bj_updates or {}, None
        replicas, self._bj_replica_changes = self._bj_replica_changes or {}, None
        vm_id, connection = self.vm_id, self._connection

        def write() -> str:
            domain = connection().lookupByUUIDString(vm_id)
            return merging.write_metadata(domain, jobs, updates, replicas)

        self.run_off(
            write,
            functools.partial(self._bj_persisted, waiters, updates, replicas),
            name="blockjobs:persist",
        )

    def _bj_persisted(
        self,
        waiters: list[Callable[[BaseException | None], None]],
        updates: dict[str, dict[str, str]],
        replicas: dict[str, dict[str, str] | None],
        outcome: Any,
    ) -> None:
        self._bj_writing = False
        error = outcome if isinstance(outcome, BaseException) else None
        if error is not None:
            log.warning("VM %s: block jobs not persisted: %s", self.vm_id, error)
            # written with the next one, unless changed again meanwhile
            self._bj_updates = {**updates, **(self._bj_updates or {})}
            self._bj_replica_changes = {**replicas, **(self._bj_replica_changes or {})}
        elif not self.guest.down:
            self._set_xml(outcome)
        for waiter in waiters:
            waiter(error)
        if self._bj_again or self._bj_waiters:
            self._bj_persist()

    def _bj_update(self, drive: str, **ids: str) -> None:
        """Record a drive's new ids (written with the next persist)."""
        if self._bj_updates is None:
            self._bj_updates = {}
        self._bj_updates.setdefault(drive, {}).update(ids)

    # -- the stats field --------------------------------------------------------------------

    def _vm_jobs(self) -> dict[str, Any]:
        """The `vmJobs` stats field: the block jobs running, by job id."""
        return {job_id: job.info() for job_id, job in self._bj_jobs().items()}


def _fail(answer: CallbackFuture, error: BaseException) -> None:
    answer.set_exception(exc_info=(type(error), error, error.__traceback__))


def _merge_params(
    drive: Mapping[str, Any], base: Any, top: Any, bandwidth: Any, job_id: Any
) -> tuple[Disk, int, str]:
    """VM.merge's params checked: (the drive, bandwidth MiB/s, the job id). InvalidArgument."""
    disk = Disk.from_wire(drive)
    try:
        rate = int(bandwidth)
    except (TypeError, ValueError):
        raise InvalidArgument(param="bandwidth", value=repr(bandwidth)) from None
    if rate < 0:
        raise InvalidArgument(param="bandwidth", value=rate, reason="must be >= 0")
    for name, value in (("baseVolUUID", base), ("topVolUUID", top)):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(param=name, reason="a UUID string is required")
    job_id = job_id or str(uuid.uuid4())
    if not isinstance(job_id, str):
        raise InvalidArgument(param="jobUUID", value=repr(job_id))
    return disk, rate, job_id
