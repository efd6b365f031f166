"""Live snapshots of a running VM (VM.snapshot), VM.freeze and VM.thaw; hibernation.

Hibernation (VM.hibernate, and the restore VM.create asks for) is `Hibernator`, in
snapshot_hibernation.py, a part of this part.

`Snapshotter` is mixed into `VmActor`; its methods run on the VM actor's turn and
never block it: the storage prepare and every libvirt call run on the work facility
(`run_off`, `operation`) and come back as messages, so the VM answers stats and
status while a snapshot runs.

A snapshot is VDSM's asynchronous *virt job* (`virt/jobs/snapshot.py`): `snapshot`
checks the request, records the job under the Engine's `jobUUID` and returns; the
work then prepares the Engine's new volumes, freezes the guest unless told it is
`frozen`, has libvirt switch the drives, thaws, and writes the new volume ids into
the domain's metadata. The Engine polls the job with `Host.getJobs(job_type="virt",
job_ids=[jobUUID])` (ovirt-engine `VirtJobCallback`), which asks the VMs'
`virt_jobs`: `{id, status, description: "snapshot_vm", job_type: "virt", error?}`,
status pending → running → done | failed, the error VDSM's SnapshotFailed (48); a
`|jobs|status|<id>` event goes out when it ends, and the job is forgotten an hour
later (VDSM's autodelete). Snapshot jobs are not `vmJobs` (VDSM keeps block jobs
there only). The ended job's record stays in the metadata for that hour too, so an
agent restarted meanwhile still lists the job's outcome.

With `snapMemory` (the Engine's memory dump and configuration volumes, as for
VM.hibernate) the snapshot also keeps the guest's memory: the configuration volume
gets VDSM's parameters for a later restore (`restoreFromSnapshot`, `_srcDomXML`),
libvirt writes the memory into the dump volume while the guest is paused (no freeze
then, as VDSM), and the dump is padded to whole blocks. Such a snapshot has the
Engine's `timeout` (minutes; VDSM's `AbortSnapshot`, for memory snapshots only): once
it has passed, the job's record says `abort` and libvirt's job is aborted
(`virDomainAbortJob`); libvirt then fails the snapshot (the guest runs on, on its
old volumes), and the job ends failed with 48, as VDSM reports it. A snapshot not
yet begun in libvirt when its time is up is not begun. A disk-only snapshot has no
such timeout: only its `freeze_timeout`, checked before libvirt switches the drives.

The volume chain on disk is the storage's: `Volume.create` with a parent already
made the new volume the LEAF and its parent INTERNAL; a snapshot only moves qemu
onto the leaf. While the job runs its record stays in the domain's metadata, so an
agent killed mid-snapshot is followed by one that finishes it (`_snapshot_recover`,
from qemu's own view of its drives) and reports the job done or failed under the
same id.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pykka

from hostvisor.actors.actor import CallbackFuture, call
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.events import Event
from hostvisor.actors.guest.status import VmStatus
from hostvisor.actors.vm import snapshot_plan, snapshot_work
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.actors.vm.migrating import MigrationInProgress
from hostvisor.actors.vm.snapshot_hibernation import (
    HibernateRequest,
    Hibernator,
    MemoryVolumes,
    write_conf,
)
from hostvisor.actors.vm.snapshot_plan import SnapshotFailed

if TYPE_CHECKING:
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.timers import Timer
    from hostvisor.actors.vm.migrating import OutgoingMigration

log = logging.getLogger(__name__)

JOB_KEEP = 3600.0
"""Seconds an ended virt job stays listed (VDSM's [jobs] autodelete_delay)."""
SNAPSHOT_DESCRIPTION = "snapshot_vm"
"""A snapshot job's description in Host.getJobs (VDSM's)."""


class VirtJobExists(HostvisorError):
    """A job with that id exists already (as storage's JobExists: code 69)."""

    code = 69
    message = "Job already exists"


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRequest:
    """VM.snapshot, checked (the verb's params as the Engine sends them).

    Attributes:
        job_id: the Engine's jobUUID (the job's id in Host.getJobs).
        drives: each disk's {domainID, imageID, volumeID, baseVolumeID}.
        frozen: the Engine froze the guest already: do not freeze it here.
        freeze_timeout: seconds after the job's start past which the snapshot is
            not taken (VDSM: freeze_timeout minutes, 8 by default).
        prepare: prepares a new volume, blocking; safe on any worker thread.
        memory: the memory dump and configuration volumes of a snapshot with memory
            (VDSM's snapMemory), or None for disks only.
    """

    job_id: str
    drives: tuple[Mapping[str, str], ...]
    frozen: bool
    freeze_timeout: float
    prepare: Callable[[DiskVolume], PreparedDisk]
    memory: MemoryVolumes | None = None
    timeout: float = 30 * 60.0
    """Seconds a snapshot with memory may take before it is aborted (VDSM's `timeout`)."""


@dataclass(frozen=True, slots=True)
class AbortSnapshotJob:
    """Tell (timer): a snapshot job with memory has run out of time; abort it."""

    job_id: str


@dataclass(frozen=True, slots=True)
class ForgetVirtJob:
    """Tell (timer): an ended virt job has been listed long enough."""

    job_id: str


@dataclass(slots=True)
class VirtJob:
    """One virt job of this VM, as Host.getJobs lists it (owned by the actor's thread)."""

    id: str
    description: str = SNAPSHOT_DESCRIPTION
    status: str = "pending"
    error: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        """Whether it has not ended."""
        return self.status in ("pending", "running")

    def info(self) -> dict[str, Any]:
        """Host.getJobs' entry (VDSM's Job.info)."""
        info: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "description": self.description,
            "job_type": "virt",
        }
        if self.error is not None:
            info["error"] = dict(self.error)
        return info


class Snapshotter(Hibernator):
    """Snapshots for a VM actor (mixed into VmActor; runs on its turn only)."""

    NOT_YET: ClassVar[frozenset[str]] = frozenset()
    """Methods the API calls that this part does not implement yet: code 75."""

    # Provided by VmActor / GuestActor / Actor / Migrator:
    guest: GuestModel
    vm_id: str
    _connection: Callable[[], Any]
    _publish_event: Callable[[Event], None]
    _migration: OutgoingMigration | None
    run_off: Callable[..., Any]
    tell_later: Callable[..., Timer]
    operation: Callable[..., CallbackFuture]
    _set_xml: Callable[[str], None]

    _virt_jobs: dict[str, VirtJob] | None = None
    _snapshotting: str | None = None

    # -- verbs ------------------------------------------------------------------------------

    def snapshot(self, request: SnapshotRequest) -> CallbackFuture:
        """Start the live snapshot `request` as a virt job; return a future of its record.

        The job is listed at once; the future settles once its record is in the
        domain's metadata (or the job has ended): from then on an agent restart does
        not lose it, so the verb answers only then. What VDSM checks before its job
        runs fails here; the rest fails the job (Host.getJobs: status failed, error
        48) and leaves the VM as it was.

        Raises:
            VirtJobExists: a job with that id is listed.
            MigrationInProgress (51): the VM is migrating.
            SnapshotFailed (48): the VM does not run, or already takes a snapshot.
        """
        jobs = self._jobs()
        if request.job_id in jobs:
            raise VirtJobExists(jobID=request.job_id)
        migration = self._migration
        if migration is not None and migration.active:
            raise MigrationInProgress(vmId=self.vm_id)
        if not self.guest.running:
            raise SnapshotFailed(vmId=self.vm_id, status=self.guest.status.value)
        if self._snapshotting is not None:
            raise SnapshotFailed(vmId=self.vm_id, reason=f"job {self._snapshotting} runs")
        job = jobs[request.job_id] = VirtJob(request.job_id)
        recorded = CallbackFuture()
        try:
            planned = _plan(self.guest.xml, request.drives)
        except SnapshotFailed as error:
            log.warning("VM %s: snapshot %s refused: %s", self.vm_id, job.id, error)
            self._job_ended(job, error)
            recorded.set(None)
            return recorded
        job.status = "running"
        self._snapshotting = job.id
        log.info("VM %s: snapshot job %s starts", self.vm_id, job.id)
        mark = _once(recorded)

        def done(outcome: Any) -> None:
            mark()
            self._snapshot_done(job, outcome)

        self.run_off(self._snapshot_work(job, planned, request, mark), done, name="snapshot")
        if request.memory is not None:
            self.tell_later(request.timeout, AbortSnapshotJob(job.id))
        return recorded

    def _snapshot_work(
        self,
        job: VirtJob,
        planned: snapshot_plan.SnapshotPlan,
        request: SnapshotRequest,
        recorded: Callable[[], None],
    ) -> Callable[[], str]:
        """The blocking work of a snapshot (runs on a worker): the live XML after it."""
        vm_id, connection = self.vm_id, self._connection
        started = self.guest.started
        age = 0.0 if started is None else max(0.0, self.guest.now() - started)
        paused = self.guest.status is VmStatus.PAUSED  # its agent cannot answer a freeze

        def work() -> str:
            start = time.monotonic()
            drives = tuple(_prepared(drive, request.prepare) for drive in planned.drives)
            domain = connection().lookupByUUIDString(vm_id)
            if not drives:  # every drive already runs on its new volume: a retry
                return str(domain.XMLDesc(0))
            memory = _memory(request, domain, age)
            record = {
                "jobUUID": job.id,
                "frozen": request.frozen,
                "startTime": str(time.time()),
                "freezeTimeout": str(request.freeze_timeout),
                "timeout": str(request.timeout),
                "memoryVolPath": memory,
                "abort": False,
                "completed": False,
                "newDrives": [drive.record() for drive in drives],
            }
            return snapshot_work.take(
                domain,
                dataclasses.replace(planned, drives=drives),
                job=record,
                freeze=not (request.frozen or memory or paused),  # memory: libvirt pauses
                freeze_deadline=math.inf if memory else start + request.freeze_timeout,
                recorded=recorded,
                memory=memory,
            )

        return work

    def freeze(self) -> CallbackFuture:
        """Freeze the guest's file systems through its agent (VM.freeze).

        Raises (also through the future): VmIsDown, Conflict (not launched),
        GuestAgentUnresponsive (19), UnsupportedOperation (75), FreezeFailed (76).
        """
        return self._agent_operation("freeze", snapshot_work.freeze)

    def thaw(self) -> CallbackFuture:
        """Thaw the guest's file systems through its agent (VM.thaw).

        Raises (also through the future): VmIsDown, Conflict, GuestAgentUnresponsive
        (19), UnsupportedOperation (75), ThawFailed (77).
        """
        return self._agent_operation("thaw", snapshot_work.thaw)

    def virt_jobs(self, job_ids: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """This VM's virt jobs (only `job_ids`, if any), by id, as Host.getJobs lists them."""
        wanted = frozenset(job_ids)
        return {
            job_id: job.info()
            for job_id, job in self._jobs().items()
            if not wanted or job_id in wanted
        }

    # -- recovery (VmActor.on_start calls it once the domain is adopted) --------------------

    def _snapshot_recover(self) -> None:
        """Finish a snapshot job an earlier agent died in (its record is in the metadata).

        Also looks at a guest adopted paused: one libvirt still saves is "Saving
        State" again (`_hibernation_recover`).
        """
        self._hibernation_recover()
        try:
            record = snapshot_plan.job_record(self.guest.xml)
        except SnapshotFailed:
            return
        if record is None or self.guest.down:
            return
        job_id = str(record.get("jobUUID") or "") or f"snapshot-{self.vm_id}"
        if record.get("ended") in ("done", "failed"):
            self._recover_ended(job_id, record)
            return
        job = self._jobs()[job_id] = VirtJob(job_id, status="running")
        self._snapshotting = job_id
        log.info("VM %s: finishing snapshot job %s after a restart", self.vm_id, job_id)
        left = _time_left(record)
        if left is not None:  # a snapshot with memory keeps its timeout across restarts
            self.tell_later(left, AbortSnapshotJob(job_id))
        vm_id, connection = self.vm_id, self._connection

        def finish() -> tuple[bool, str]:
            domain = connection().lookupByUUIDString(vm_id)
            return snapshot_work.recover(domain, record)

        self.run_off(finish, lambda outcome: self._recovered(job, outcome), name="snapshot")

    def _recover_ended(self, job_id: str, record: Mapping[str, Any]) -> None:
        """List a job that ended before the restart, for what is left of its time."""
        try:
            age = max(0.0, time.time() - float(record.get("endTime", 0.0)))
        except (TypeError, ValueError):
            age = JOB_KEEP
        if age >= JOB_KEEP:
            self._forget_record(job_id)
            return
        job = self._jobs()[job_id] = VirtJob(job_id, status=str(record["ended"]))
        if job.status == "failed":
            job.error = {"code": SnapshotFailed.code, "message": SnapshotFailed.message}
        self.tell_later(JOB_KEEP - age, ForgetVirtJob(job_id))

    def _recovered(self, job: VirtJob, outcome: tuple[bool, str] | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self._snapshot_done(job, outcome)
            return
        taken, live = outcome
        failure = None if taken else SnapshotFailed(reason="not taken before the agent stopped")
        self._snapshot_done(job, live if taken else failure, live=live)

    # -- messages ---------------------------------------------------------------------------

    def _snapshot_receive(self, message: Any) -> bool:
        """Handle `message` if it is one of this part's; say whether it was."""
        if isinstance(message, AbortSnapshotJob):
            self._abort_snapshot(message.job_id)
            return True
        if isinstance(message, ForgetVirtJob):
            job = self._jobs().get(message.job_id)
            if job is not None and not job.active:
                del self._jobs()[message.job_id]
                self._forget_record(message.job_id)
            return True
        return False

    def _abort_snapshot(self, job_id: str) -> None:
        """The job's time is up: mark its record aborted and abort libvirt's job (off-thread).

        Nothing happens if the job has ended meanwhile. The job's own worker then sees
        libvirt's snapshot fail, or, if libvirt had not begun it, does not begin it.
        """
        job = self._jobs().get(job_id)
        if job is None or not job.active or self._snapshotting != job_id or self.guest.down:
            return
        log.warning("VM %s: snapshot job %s: its timeout passed; aborting it", self.vm_id, job_id)
        vm_id, connection = self.vm_id, self._connection

        def abort() -> bool:
            return snapshot_work.abort(connection().lookupByUUIDString(vm_id), job_id)

        def done(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                log.warning("VM %s: snapshot job %s not aborted: %s", vm_id, job_id, outcome)
            else:
                log.info(
                    "VM %s: snapshot job %s: libvirt's job aborted: %s", vm_id, job_id, outcome
                )

        self.run_off(abort, done, name="snapshot:abort")

    def _forget_record(self, job_id: str) -> None:
        """Drop the ended job's record from the domain's metadata, off this thread."""
        if self.guest.down:
            return
        vm_id, connection = self.vm_id, self._connection

        def forget() -> None:
            snapshot_work.forget(connection().lookupByUUIDString(vm_id), job_id)

        def done(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                log.debug("VM %s: record of job %s not dropped: %s", vm_id, job_id, outcome)

        self.run_off(forget, done, name="snapshot:forget")

    # -- helpers ----------------------------------------------------------------------------

    def _jobs(self) -> dict[str, VirtJob]:
        if self._virt_jobs is None:
            self._virt_jobs = {}
        return self._virt_jobs

    def _snapshot_done(self, job: VirtJob, outcome: Any, *, live: str | None = None) -> None:
        """The work ended: `outcome` is the live XML, or the error it failed with."""
        if self._snapshotting == job.id:
            self._snapshotting = None
        xml = outcome if isinstance(outcome, str) else live
        if xml is not None and not self.guest.down and xml != self.guest.xml:
            self._set_xml(xml)
            self.guest.changed()
        if isinstance(outcome, BaseException):
            log.warning("VM %s: snapshot job %s failed: %s", self.vm_id, job.id, outcome)
            self._job_ended(job, outcome)
            if xml is None:  # the failed job's record is in the metadata now: show it
                self._refresh_xml()
        else:
            log.info("VM %s: snapshot job %s done", self.vm_id, job.id)
            self._job_ended(job, None)

    def _refresh_xml(self) -> None:
        """Read the live XML again (off this thread) and keep it if the VM still runs."""
        if self.guest.down:
            return
        vm_id, connection = self.vm_id, self._connection

        def read() -> str:
            return str(connection().lookupByUUIDString(vm_id).XMLDesc(0))

        def got(xml: Any) -> None:
            if isinstance(xml, str) and not self.guest.down and xml != self.guest.xml:
                self._set_xml(xml)
                self.guest.changed()

        self.run_off(read, got, name="snapshot:xml")

    def _job_ended(self, job: VirtJob, error: BaseException | None) -> None:
        if error is None:
            job.status = "done"
        else:
            job.status = "failed"
            failure = error if isinstance(error, SnapshotFailed) else SnapshotFailed()
            # VDSM's job error: SnapshotFailed's code and message, whatever went wrong.
            job.error = {"code": failure.code, "message": failure.message}
        self._publish_event(Event(method=f"|jobs|status|{job.id}", params=job.info()))
        self.tell_later(JOB_KEEP, ForgetVirtJob(job.id))

    def _agent_operation(self, op: str, action: Callable[[Any], int]) -> CallbackFuture:
        self.guest.require_running(op)
        vm_id, connection = self.vm_id, self._connection

        def run() -> int:
            count = action(connection().lookupByUUIDString(vm_id))
            log.info("VM %s: %s: %s guest file systems", vm_id, op, count)
            return count

        return self.operation(op, run, then=lambda _count: None)


def _once(future: CallbackFuture) -> Callable[[], None]:
    """A callable that settles `future` (with None) the first time only; any thread."""
    lock = threading.Lock()
    fired: list[bool] = []

    def fire() -> None:
        with lock:
            if fired:
                return
            fired.append(True)
        future.set(None)

    return fire


def _plan(xml: str, drives: Iterable[Mapping[str, str]]) -> snapshot_plan.SnapshotPlan:
    """The snapshot of `drives` (pure). Raises SnapshotFailed, also for no drive at all."""
    planned = snapshot_plan.plan(xml, list(drives))
    if not planned.drives and not planned.current:
        raise SnapshotFailed(reason="no disk to snapshot")
    return planned


def _time_left(record: Mapping[str, Any]) -> float | None:
    """Seconds a recovered snapshot with memory has left before its abort; None: no limit."""
    if not record.get("memoryVolPath"):
        return None
    try:
        end = float(record["startTime"]) + float(record["timeout"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, end - time.time())


def _memory(request: SnapshotRequest, domain: Any, age: float) -> str | None:
    """Prepare a memory snapshot's volumes, write its configuration; the dump's path.

    The configuration is VDSM's (`vm_conf_for_memory_snapshot`): what a VM.create
    restoring from this snapshot reads. Blocking. Raises SnapshotFailed.
    """
    if request.memory is None:
        return None
    try:
        dump = request.prepare(request.memory.dump)
        conf = request.prepare(request.memory.conf)
    except HostvisorError as error:
        raise SnapshotFailed(reason=f"the memory volumes were not prepared: {error}") from None
    params = {
        "restoreFromSnapshot": True,
        "_srcDomXML": domain.XMLDesc(0),
        "elapsedTimeOffset": age,
    }
    write_conf(conf.path, params)
    return dump.path


def _prepared(
    drive: snapshot_plan.SnapDrive, prepare: Callable[[DiskVolume], PreparedDisk]
) -> snapshot_plan.SnapDrive:
    """The drive with its new volume prepared (blocking). Raises SnapshotFailed."""
    volume = DiskVolume(
        name=drive.name,
        pool_id=drive.pool_id,
        domain_id=drive.domain_id,
        image_id=drive.image_id,
        volume_id=drive.volume_id,
    )
    try:
        prepared = prepare(volume)
    except HostvisorError as error:
        raise SnapshotFailed(reason=f"the new volume was not prepared: {error}") from None
    if prepared.format != "qcow2":
        raise SnapshotFailed(reason="the new volume is not COW", volumeID=drive.volume_id)
    return dataclasses.replace(drive, path=prepared.path)


class SnapshotClient:
    """Typed calls to a VM actor's snapshot part (what api/ uses; see proxy.py)."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def snapshot(self, request: SnapshotRequest) -> pykka.Future[CallbackFuture]:
        """Start a snapshot job; its answer settles once the job's record is kept."""
        return call(self.ref, "snapshot", request)

    def freeze(self) -> pykka.Future[CallbackFuture]:
        """Freeze the guest's file systems (an operation: await both futures)."""
        return call(self.ref, "freeze")

    def thaw(self) -> pykka.Future[CallbackFuture]:
        """Thaw the guest's file systems (an operation: await both futures)."""
        return call(self.ref, "thaw")

    def hibernate(self, request: HibernateRequest) -> pykka.Future[CallbackFuture]:
        """Save the guest's state (an operation: its future settles when saved)."""
        return call(self.ref, "hibernate", request)

    def restore(
        self, volumes: MemoryVolumes, dump: PreparedDisk, conf: PreparedDisk
    ) -> pykka.Future[CallbackFuture]:
        """Restore a guest waiting to arrive (an operation: settles once it runs)."""
        return call(self.ref, "restore", volumes, dump, conf)

    def virt_jobs(self, job_ids: Iterable[str] = ()) -> pykka.Future[dict[str, dict[str, Any]]]:
        """The VM's virt jobs, by id."""
        return call(self.ref, "virt_jobs", list(job_ids))


__all__ = [
    "JOB_KEEP",
    "AbortSnapshotJob",
    "ForgetVirtJob",
    "SnapshotClient",
    "SnapshotFailed",
    "SnapshotRequest",
    "Snapshotter",
    "VirtJob",
    "VirtJobExists",
]
