"""The blocking half of live snapshots: the libvirt calls, on a worker thread only.

Every function here blocks (libvirt, qemu's monitor, the guest agent) and is run
by the VM actor on the work facility (`run_off`), never on an actor's thread.

A snapshot (`take`) runs as VDSM's `Snapshot.snapshot()` does: the job's record
goes into the domain's metadata first; the guest's file systems are frozen through
its agent unless the Engine froze them already (`frozen`) — a failed freeze is
logged and the snapshot goes on, and a thaw is always tried after a freeze was
tried, as VDSM and libvirt do; libvirt switches the drives onto the new volumes
(`snapshotCreateXML` with DISK_ONLY | REUSE_EXT | NO_METADATA); then the drives'
volume ids are written and the record marked ended in one metadata update. Once
libvirt has switched, nothing may fail the job any more: a metadata write that
fails then is only logged (the next recovery writes it).

An ended record (`"ended": "done"` or `"failed"`, with its `endTime`) stays in the
metadata while the job is listed (`forget` drops it), so an agent restarted right
after the job reports its outcome, not nothing (VDSM forgets it, and the Engine then
takes the snapshot for failed). `recover` finishes a job an agent died in, from
what qemu runs on now.
"""

from __future__ import annotations

import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any

import libvirt

from hostvisor.actors.guest.errors import UnsupportedOperation
from hostvisor.actors.vm.domxml import OVIRT_VM
from hostvisor.actors.vm.metadata_lock import editing
from hostvisor.actors.vm.snapshot_plan import (
    FreezeFailed,
    GuestAgentUnresponsive,
    SnapDrive,
    SnapshotFailed,
    SnapshotPlan,
    ThawFailed,
    agent_connected,
    disk_sources,
    job_record,
    metadata_with,
    snapshot_xml,
)

log = logging.getLogger(__name__)

SNAPSHOT_FLAGS = (
    libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
)
"""External, onto the Engine's volumes, and nothing kept by libvirt (VDSM's flags)."""
MEMORY_FLAGS = (
    libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
)
"""The same with the guest's memory (VDSM's: not DISK_ONLY)."""
BLOCK = 4096
RECOVERY_WAIT = 60.0
"""Seconds a recovery waits for a job libvirt still runs on the domain."""


def pad(path: str) -> None:
    """Pad a memory volume to whole blocks (VDSM: qemu-img rounds a file's size down)."""
    with open(path, "r+b") as memory:  # noqa: PTH123 - r+: never truncate a volume
        size = memory.seek(0, 2)
        if size % BLOCK:
            memory.write(b"\0" * (BLOCK - size % BLOCK))


def take(  # noqa: PLR0913 - one snapshot's inputs, keyword-only
    domain: Any,
    snapshot: SnapshotPlan,
    *,
    job: Mapping[str, Any],
    freeze: bool,
    freeze_deadline: float,
    clock: Callable[[], float] = time.monotonic,
    recorded: Callable[[], None] = lambda: None,
    memory: str | None = None,
) -> str:
    """Take the live snapshot `snapshot` of `domain`; return its live XML afterwards.

    Args:
        domain: the running domain.
        snapshot: the drives to switch, each with its prepared path.
        job: the job's record, kept in the metadata while libvirt works.
        freeze: freeze the guest's file systems first (if its agent is connected).
        freeze_deadline: `clock()` time after which the snapshot is not taken (VDSM's
            freeze_timeout: the guest would stay frozen too long).
        clock: the clock of `freeze_deadline`.
        recorded: called once the job's record is in the metadata (or could not be
            written: then this raises).
        memory: the prepared memory volume: a snapshot with the guest's memory
            (libvirt pauses the guest while it writes it; no freeze is needed).

    Raises:
        SnapshotFailed: libvirt refused, or the deadline passed; the drives are as
            before and the record is gone.
        libvirt.libvirtError: the domain is gone before anything was done.
    """
    try:
        with editing(domain):
            live: str = domain.XMLDesc(0)
            _write_metadata(domain, metadata_with(live, job=dict(job)))
    finally:
        recorded()
    froze = False
    try:
        if freeze and agent_connected(live):
            froze = True  # thaw even if the freeze fails: the guest may have frozen
            try:
                count = domain.fsFreeze()
                log.info("snapshot %s: %s guest file systems frozen", job.get("jobUUID"), count)
            except libvirt.libvirtError as error:
                log.warning("snapshot %s: freeze failed: %s", job.get("jobUUID"), error)
        _check_deadline(clock, freeze_deadline)
        _check_ours(domain, job)
        xml = snapshot_xml(snapshot.drives, snapshot.others, memory)
        log.info("snapshot %s: %s", job.get("jobUUID"), xml)
        domain.snapshotCreateXML(xml, SNAPSHOT_FLAGS if memory is None else MEMORY_FLAGS)
    except (libvirt.libvirtError, SnapshotFailed) as error:
        _thaw_quietly(domain, froze=froze)
        aborted = _aborted(domain, job, error)
        _end_job(domain, {**ended(job, taken=False), "abort": aborted})
        if aborted:
            raise SnapshotFailed(reason="aborted: its timeout passed", error=str(error)) from None
        if isinstance(error, SnapshotFailed):
            raise
        raise SnapshotFailed(reason=str(error)) from None
    _thaw_quietly(domain, froze=froze)
    if memory is not None:
        pad(memory)
    volumes = {drive.name: drive.volume_id for drive in snapshot.drives}
    return switched(domain, volumes, ended(job, taken=True))


def _check_ours(domain: Any, job: Mapping[str, Any]) -> None:
    """Raise SnapshotFailed if a recovery has ended this job meanwhile, or it is aborted.

    A VM actor restarted after a crash (same agent) finishes the job it finds in the
    metadata while the worker of its last incarnation may still run this one: the
    worker then stops before libvirt's switch, and the outcome is the recovery's.
    """
    record = job_record(domain.XMLDesc(0))
    if record is None or record.get("jobUUID") != job.get("jobUUID") or record.get("ended"):
        raise SnapshotFailed(reason="the job was ended by a recovery")
    if record.get("abort"):
        raise SnapshotFailed(reason="aborted before it began: its timeout passed")


def _aborted(domain: Any, job: Mapping[str, Any], error: Exception) -> bool:
    """Whether the snapshot failed because its job was aborted (by `abort`)."""
    if isinstance(error, libvirt.libvirtError):
        return bool(error.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED)
    try:
        record = job_record(domain.XMLDesc(0))
    except libvirt.libvirtError:
        return False
    return bool(record and record.get("jobUUID") == job.get("jobUUID") and record.get("abort"))


def abort(domain: Any, job_id: str) -> bool:
    """Abort the snapshot job `job_id` (its timeout passed); whether libvirt had a job.

    As VDSM's `AbortSnapshot`: libvirt's job, if one runs, is aborted (libvirt then
    fails the snapshot, and `take` records the abort with the failure: the metadata
    cannot change while libvirt's snapshot job holds the domain). If none runs yet,
    the record says `abort`, so that `take` does not begin it; a job that has ended
    is left alone. Blocks on libvirt.
    """
    if _abort_libvirt_job(domain, job_id):
        return True
    try:
        with editing(domain):
            record = job_record(domain.XMLDesc(0))
            if record is None or record.get("jobUUID") != job_id or record.get("ended"):
                return False
            _write_metadata(domain, metadata_with(domain.XMLDesc(0), job={**record, "abort": True}))
    except libvirt.libvirtError as error:  # libvirt's job began meanwhile: it holds the domain
        log.info("snapshot %s: abort not recorded: %s", job_id, error)
    return _abort_libvirt_job(domain, job_id)


def _abort_libvirt_job(domain: Any, job_id: str) -> bool:
    try:
        if domain.jobInfo()[0] in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED):
            return False
        domain.abortJob()
    except libvirt.libvirtError as error:
        log.warning("snapshot %s: libvirt's job not aborted: %s", job_id, error)
        return False
    log.warning("snapshot %s: libvirt's job aborted", job_id)
    return True


def _wait_no_job(domain: Any, clock: Callable[[], float], timeout: float) -> None:
    """Wait (polling, at most `timeout` s) until libvirt runs no job on the domain.

    As VDSM's LiveSnapshotRecovery: a snapshot libvirt is still taking ends first.
    """
    deadline = clock() + timeout
    while clock() < deadline:
        try:
            if domain.jobInfo()[0] in (
                libvirt.VIR_DOMAIN_JOB_NONE,
                libvirt.VIR_DOMAIN_JOB_COMPLETED,
            ):
                return
        except libvirt.libvirtError:
            return
        time.sleep(0.5)


def _check_deadline(clock: Callable[[], float], deadline: float) -> None:
    if clock() > deadline:
        raise SnapshotFailed(reason="the freeze timeout passed before the snapshot")


def ended(job: Mapping[str, Any], *, taken: bool) -> dict[str, Any]:
    """The job's record once it has ended (kept while the job is listed)."""
    return {**job, "ended": "done" if taken else "failed", "endTime": str(time.time())}


def switched(domain: Any, volumes: Mapping[str, str], job: Mapping[str, Any]) -> str:
    """Record that the drives now run on `volumes` and the ended `job`; the live XML.

    Never raises for a metadata write (logged): the switch already happened.
    """
    live: str = domain.XMLDesc(0)
    try:
        with editing(domain):
            fresh = domain.XMLDesc(0)
            _write_metadata(domain, metadata_with(fresh, volumes=volumes, job=dict(job)))
        live = domain.XMLDesc(0)
    except libvirt.libvirtError as error:
        log.error("the snapshot's volume ids were not written: %s", error)  # noqa: TRY400
    return live


def recover(domain: Any, record: Mapping[str, Any]) -> tuple[bool, str]:
    """Finish the snapshot job `record` an earlier agent died in: (taken, live XML).

    Taken when every drive runs on its new volume now; then the metadata says so.
    The drives that did switch are recorded in any case, so the metadata names the
    volume qemu writes to. qemu's own view (`query-block`) decides when the live
    XML still names the old path (libvirt died before it wrote its status). A record
    that has ended already is only read back.
    """
    if record.get("ended") in ("done", "failed"):
        return record["ended"] == "done", str(domain.XMLDesc(0))
    _wait_no_job(domain, time.monotonic, RECOVERY_WAIT)
    try:
        drives = [SnapDrive.of_record(entry) for entry in record.get("newDrives", [])]
    except (KeyError, TypeError, AttributeError):
        drives = []
    live: str = domain.XMLDesc(0)
    sources = disk_sources(live)
    running = _qemu_top_files(domain, live)
    moved = {
        drive.name: drive.volume_id
        for drive in drives
        if drive.path and drive.path in (sources.get(drive.name), running.get(drive.name))
    }
    taken = bool(drives) and len(moved) == len(drives) and not record.get("abort")
    try:
        with editing(domain):
            fresh = domain.XMLDesc(0)
            _write_metadata(
                domain, metadata_with(fresh, volumes=moved, job=ended(record, taken=taken))
            )
        live = domain.XMLDesc(0)
    except libvirt.libvirtError as error:
        log.error("the recovered snapshot's metadata was not written: %s", error)  # noqa: TRY400
    return taken, live


def freeze(domain: Any) -> int:
    """Freeze the guest's file systems through its agent (VM.freeze); how many.

    Raises:
        GuestAgentUnresponsive (19), UnsupportedOperation (75), FreezeFailed (76).
    """
    try:
        count: int = domain.fsFreeze()
    except libvirt.libvirtError as error:
        raise _agent_error(error, FreezeFailed) from None
    return count


def thaw(domain: Any) -> int:
    """Thaw the guest's file systems through its agent (VM.thaw); how many.

    Raises:
        GuestAgentUnresponsive (19), UnsupportedOperation (75), ThawFailed (77).
    """
    try:
        count: int = domain.fsThaw()
    except libvirt.libvirtError as error:
        raise _agent_error(error, ThawFailed) from None
    return count


def _agent_error(error: libvirt.libvirtError, other: type[FreezeFailed | ThawFailed]) -> Exception:
    """VDSM's choice (vm.freeze/thaw): unresponsive 19, no support 75, else 76/77."""
    code = error.get_error_code()
    reason = error.get_error_message() or str(error)
    if code == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
        return GuestAgentUnresponsive(reason=reason)
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return UnsupportedOperation(reason=reason)
    return other(reason=reason)


def _thaw_quietly(domain: Any, *, froze: bool) -> None:
    if not froze:
        return
    try:
        domain.fsThaw()
    except libvirt.libvirtError as error:
        log.warning("thaw after the snapshot failed: %s", error)


def forget(domain: Any, job_id: str) -> None:
    """Drop the ended job `job_id`'s record from the metadata (another job's stays)."""
    with editing(domain):
        live = domain.XMLDesc(0)
        record = job_record(live)
        if record is not None and record.get("jobUUID") == job_id and record.get("ended"):
            _write_metadata(domain, metadata_with(live, clear_job=True))


def _end_job(domain: Any, job: Mapping[str, Any]) -> None:
    try:
        with editing(domain):
            _write_metadata(domain, metadata_with(domain.XMLDesc(0), job=dict(job)))
    except libvirt.libvirtError as error:
        log.warning("the failed snapshot's record was not written: %s", error)


def _write_metadata(domain: Any, metadata: str | None) -> None:
    if metadata is None:
        return
    domain.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        metadata,
        "ovirt-vm",
        OVIRT_VM,
        libvirt.VIR_DOMAIN_AFFECT_LIVE,
    )


def _qemu_top_files(domain: Any, live: str) -> dict[str, str]:
    """Each drive's top image file as qemu runs it (`query-block`); {} if unreadable.

    Read-only monitor use; drives are matched to qemu's devices by their alias.
    """
    try:
        import libvirt_qemu  # type: ignore[import-untyped]  # noqa: PLC0415 - recovery only

        answer = libvirt_qemu.qemuMonitorCommand(domain, '{"execute": "query-block"}', 0)
        devices = json.loads(answer).get("return", [])
    except (ImportError, libvirt.libvirtError, ValueError) as error:
        log.warning("qemu's block devices were not read: %s", error)
        return {}
    aliases = _aliases(live)
    tops: dict[str, str] = {}
    for device in devices:
        inserted = device.get("inserted") or {}
        where = f"{device.get('qdev', '')}/{device.get('device', '')}"
        for name, alias in aliases.items():
            if alias and f"/{alias}/" in f"/{where}/" and inserted.get("file"):
                tops[name] = str(inserted["file"])
    return tops


def _aliases(live: str) -> dict[str, str]:
    root = ET.fromstring(live)  # noqa: S314 - libvirt's own XML
    aliases = {}
    for disk in root.iterfind("devices/disk"):
        target, alias = disk.find("target"), disk.find("alias")
        if target is not None and alias is not None and target.get("dev"):
            aliases[target.get("dev", "")] = alias.get("name", "")
    return aliases
