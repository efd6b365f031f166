"""StorageDomainActor: one file storage domain, its checks and its serialized writes.

The domain's on-disk metadata is the source of truth (`FileDomain`); this actor
holds nothing a restart could lose except the last health check and the claims
of its running tasks. Its protocol, every message typed and frozen
(actors/storage/domain_ops.py):

    caller ──read(DomainRead)──────▶ actor ──run_off──▶ worker: op.apply(domain)
    caller ──write(DomainWrite)────▶ actor ──Serial───▶ worker: op.apply(domain), in order
    caller ──run_task(DomainTask)──▶ actor: claim op.claim (taken: refused at once)
                                     ──run_off──▶ op.check(domain)
                                     ──TaskProxy.open_task──▶ TaskManager: the task id
                                     ──Serial───▶ worker: execute(op.apply) ──reports──▶ TaskManager
                                     ◀── the task id answers the caller

So a write's check and act see no other write in between, two tasks never claim
one volume, and nothing blocks the actor's thread: a domain on a hung mount still
answers its repo stats, with its last check getting old. When the actor stops,
queued writes answer Unavailable and queued tasks finish failed; a write already
running finishes on its worker (its outcome is dropped). A restart starts empty.

A periodic check (VDSM's domain monitor) reads the metadata past the page cache,
validates the domain and times it, on a worker; `repo_stats` serves the last
outcome (code, delay, lastCheck, validity) to `Host.getStats.storageDomains` and
`Host.getStorageRepoStats` without waiting. A check that hangs (a hung or vanished
mount) is never doubled: half an interval after it started the domain turns
invalid, its lastCheck growing, and the first check that ends again heals it.

Host ids (actors/storage/clusterlock_ops.py): told `JoinLockspace(host_id)` by the
pool (at connect, and again every few seconds while connected), the actor has a
worker start sanlock's asynchronous join of the domain's lockspace on
`dom_md/ids` and inquires until sanlock answers, each inquiry on a worker;
`LeaveLockspace` (disconnect, deactivate) starts the asynchronous leave. Each
check inquires again, and joins again a lockspace sanlock lost. At start the
actor adopts the host id sanlock already holds for the domain (an agent restarted
after `kill -9` is still in the lockspace: the lockspace is the daemon's, not the
process's). `acquired` in the repo stats is the last answer. A domain a local lock
protects (LOCALFS, or no sanlock daemon) has no lockspace.
"""

from __future__ import annotations

import errno
import functools
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pykka

from hostvisor.actors.actor import Actor, CallbackFuture
from hostvisor.actors.errors import HostvisorError, Unavailable
from hostvisor.actors.storage import clusterlock_ops as lockspace
from hostvisor.actors.storage.addresses import TASKS
from hostvisor.actors.storage.domain_ops import DomainRead, DomainTask, DomainWrite
from hostvisor.actors.storage.errors import StorageError
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import DomainClass
from hostvisor.actors.storage.serial import Serial, failed, settle
from hostvisor.actors.storage.tasks import TaskContext, abandon, execute

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_INTERVAL = 10.0
"""VDSM's domain monitor checks every 10 s."""
OVERDUE = 0.5
"""A check still running this many intervals after it started marks the domain invalid."""
POLL = 0.1
"""Seconds between two inquiries of a lockspace sanlock is still joining."""
UNKNOWN = "unknown"
"""The lockspace state before a worker has asked sanlock."""


@dataclass(frozen=True, slots=True)
class Check:
    """Tell (from the timer service): check the domain now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    """How a check went (handled on the actor's thread)."""

    at: float  # the clock's monotonic seconds
    delay: float
    error: HostvisorError | None
    version: int
    iso: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Overdue:
    """Tell (timer, half an interval after a check started): is check `seq` still running?"""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOpened:
    """Tell (from the task manager's answer): a task's id, or why it was refused."""

    op: DomainTask
    reply: CallbackFuture
    outcome: TaskContext | BaseException


OpenTask = Callable[[str], CallbackFuture]
"""Asks the task manager to open a task for a verb; the future settles with its context."""


class StorageDomainActor(Actor):
    """Owns one storage domain.

    Args:
        domain: the domain on disk.
        open_task: opens a task in the task manager (`TaskProxy.open_task`).
        check_interval: seconds between health checks.
    """

    def __init__(
        self,
        *,
        domain: FileDomain,
        open_task: OpenTask | None = None,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        """Remember the domain; start checking it in `on_start`."""
        super().__init__()
        self.domain = domain
        self._open_task = open_task
        self._check_interval = check_interval
        self._writer: Serial | None = None
        self._seq = 0
        self._check_started: float | None = None
        self._stalled = False
        self._born = 0.0
        self._last: Checked | None = None
        self._claims: set[str] = set()
        self._queued_tasks: dict[str, TaskContext] = {}
        self._pending: set[CallbackFuture] = set()
        """Answers waiting for a worker (reads, task checks): failed if this actor stops."""
        self._host_id: int | None = None
        """The host id this host wants in the domain's lockspace (None: not a member)."""
        self._lockspace: bool | str | None = UNKNOWN
        """What sanlock said last: True joined, None joining, False not, LOCAL no lockspace
        (a local lock protects the domain), UNKNOWN not asked yet."""
        self._inquiring = False

    def on_start(self) -> None:
        """Make the writer's queue and start the periodic check (the first one now)."""
        self._writer = Serial(self.run_off, f"sd:{self.domain.sd_uuid}")
        self._born = self.clock.monotonic()
        self.tick_every(self._check_interval, Check(), first=0)
        self.run_off(
            functools.partial(lockspace.discover, self.domain), self._discovered, name="lockspace"
        )

    def on_stop(self) -> None:
        """Answer what is queued; a write in progress finishes on its worker."""
        self._shutdown("the domain's actor stopped")

    def on_failure(self, *_exc_info: Any) -> None:
        """As `on_stop`: the restarted actor starts afresh."""
        self._shutdown("the domain's actor crashed")

    def _shutdown(self, reason: str) -> None:
        if self._writer is not None:
            self._writer.fail_all(reason)
        error = Unavailable(actor=self.path, reason=reason)
        for ctx in self._queued_tasks.values():
            abandon(ctx, error)
        self._queued_tasks.clear()
        for reply in self._pending:
            settle(reply, error, reason)
        self._pending.clear()

    def on_receive(self, message: Any) -> Any:
        """Run checks and record their outcome; tasks opened; anything else is a bug."""
        match message:
            case Check():
                self._check()
            case Overdue():
                self._overdue(message)
            case TaskOpened():
                self._task_opened(message)
            case lockspace.JoinLockspace(host_id):
                self._join(host_id)
            case lockspace.LeaveLockspace():
                self._leave()
            case lockspace.PollLockspace(host_id):
                if host_id == self._host_id:
                    self._inquire(join=False)
            case _:
                raise TypeError(f"{type(self).__name__} got an unexpected message: {message!r}")
        return None

    # -- operations (each runs on this actor's thread and returns at once) -------------------

    def read(self, op: DomainRead[T]) -> CallbackFuture:
        """Run `op` on a worker, beside other reads and writes; the future settles with it."""
        reply = self._track()
        self.run_off(
            functools.partial(op.apply, self.domain),
            functools.partial(self._answer, reply, self._named(op.op)),
            name=op.op,
        )
        return reply

    def _track(self) -> CallbackFuture:
        reply = CallbackFuture()
        self._pending.add(reply)
        return reply

    def _answer(self, reply: CallbackFuture, op: str, outcome: Any) -> None:
        if reply in self._pending:
            self._pending.discard(reply)
            settle(reply, outcome, op)

    def write(self, op: DomainWrite[T]) -> CallbackFuture:
        """Queue `op` after every write asked before it; the future settles with its result."""
        assert self._writer is not None  # noqa: S101 - set in on_start
        return self._writer.add(functools.partial(op.apply, self.domain), op=self._named(op.op))

    def run_task(self, op: DomainTask) -> CallbackFuture:
        """Start `op` as a task: the future settles with the task id once it is checked.

        Refused at once (the future fails with `op.busy()`: VolumeAlreadyExists for a
        create, VolumeIsBusy otherwise) when a task of this domain holds the same claim. Then
        `op.check` runs on a worker and its error answers the verb.
        """
        claim = op.claim
        if claim is not None and claim in self._claims:
            return failed(op.busy())
        if claim is not None:
            self._claims.add(claim)
        reply = self._track()
        self.run_off(
            functools.partial(op.check, self.domain),
            functools.partial(self._task_checked, op, reply),
            name=f"check {op.op}",
        )
        return reply

    def _task_checked(self, op: DomainTask, reply: CallbackFuture, outcome: Any) -> None:
        if isinstance(outcome, BaseException) or self._open_task is None:
            self._release(op)
            self._answer(reply, self._named(op.op), outcome or Unavailable(actor=TASKS))
            return
        ref, path = self.actor_ref, self.path

        def opened(future: CallbackFuture) -> None:  # the task manager's thread
            try:
                result: TaskContext | BaseException = future.get(timeout=0)
            except BaseException as error:  # noqa: BLE001 - handed back as a value
                result = error
            try:
                ref.tell(TaskOpened(op=op, reply=reply, outcome=result))
            except pykka.ActorDeadError:  # stopped meanwhile: the task never runs
                if isinstance(result, TaskContext):
                    abandon(result, Unavailable(actor=path, reason="the domain's actor stopped"))

        self._open_task(op.verb).add_done_callback(opened)

    def _task_opened(self, message: TaskOpened) -> None:
        op, ctx = message.op, message.outcome
        if message.reply not in self._pending:  # answered by a stop meanwhile
            if isinstance(ctx, TaskContext):
                abandon(ctx, Unavailable(actor=self.path, reason="no longer asked"))
            return
        if isinstance(ctx, BaseException):
            self._release(op)
            self._answer(message.reply, self._named(op.op), ctx)
            return
        assert self._writer is not None  # noqa: S101 - set in on_start
        self._queued_tasks[ctx.task_id] = ctx
        work = functools.partial(op.apply, self.domain)

        def make() -> Callable[[], None]:  # this actor's thread, at the task's turn
            self._queued_tasks.pop(ctx.task_id, None)
            return functools.partial(execute, ctx, work, ctx.report)

        self._writer.add_made(make, op=self._named(op.op), after=lambda _: self._release(op))
        self._answer(message.reply, self._named(op.op), ctx.task_id)

    def _release(self, op: DomainTask) -> None:
        if op.claim is not None:
            self._claims.discard(op.claim)

    def _named(self, op: str) -> str:
        return f"{op} on domain {self.domain.sd_uuid}"

    # -- health -----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._host_id is not None and self._lockspace is not lockspace.LOCAL:
            self._inquire(join=True)  # joins again a lockspace sanlock lost
        if self._check_started is not None:
            return  # the last check still runs: Overdue marks it, its age shows in lastCheck
        self._seq += 1
        self._check_started = self.clock.monotonic()
        self.run_off(
            functools.partial(_check, self.domain, self.clock.monotonic),
            functools.partial(self._checked, self._seq),
            name="check",
        )
        self.tell_later(self._check_interval * OVERDUE, Overdue(seq=self._seq))

    def _overdue(self, message: Overdue) -> None:
        if message.seq != self._seq or self._check_started is None or self._stalled:
            return
        self._stalled = True
        waited = self.clock.monotonic() - self._check_started
        log.warning("storage domain %s: its check hangs (%.1f s)", self.domain.sd_uuid, waited)

    def _checked(self, seq: int, outcome: Checked | BaseException) -> None:
        if seq != self._seq:
            return
        self._check_started = None
        if self._stalled:
            log.info("storage domain %s: its check ended again", self.domain.sd_uuid)
        self._stalled = False
        if isinstance(outcome, BaseException):
            now = self.clock.monotonic()
            reason = f"{type(outcome).__name__}: {outcome}"
            outcome = Checked(at=now, delay=0.0, error=StorageError(reason=reason), version=-1)
        was = self._last
        if was is None or (was.error is None) != (outcome.error is None):
            log.info(
                "storage domain %s became %s%s",
                self.domain.sd_uuid,
                "VALID" if outcome.error is None else "INVALID",
                f": {outcome.error}" if outcome.error is not None else "",
            )
        self._last = outcome

    def repo_stats(self, *, member: bool = False) -> dict[str, Any]:
        """This domain's entry of `Host.getStats.storageDomains` and `getStorageRepoStats`.

        Served from the last check, never waiting for one (this actor's thread). Types
        are VDSM's (hsm.py `_getRepoStats`): `code` and `version` ints, `lastCheck`
        (seconds since the last check ended, one decimal) and `delay` (seconds the
        last check took) strings, `valid`, `acquired` and `actual` booleans. A check
        that runs longer than half an interval makes the domain invalid (code 200,
        VDSM's StorageException) while `lastCheck` goes on growing; before the first
        check ends the entry is VDSM's placeholder (valid, not actual).

        `acquired` is sanlock's word for a shared domain this host joined (its lockspace
        on `dom_md/ids`, inquired at every check); a domain a local lock protects
        (LOCALFS, or no sanlock daemon) holds its host id while it is a member.

        Args:
            member: whether the domain belongs to the pool this host is connected to;
                only then is its host id held (`acquired`), never for an ISO domain.
        """
        now = self.clock.monotonic()
        last = self._last
        if last is None and not self._stalled:
            return {
                "code": 0,
                "lastCheck": f"{now - self._born:.1f}",
                "delay": "0",
                "valid": True,
                "version": -1,
                "acquired": False,
                "actual": False,
            }
        if self._stalled or last is None:
            code = StorageError.code
        else:
            code = last.error.code if last.error is not None else 0
        valid = code == 0
        if self._host_id is not None and self._lockspace not in (lockspace.LOCAL, UNKNOWN):
            acquired = self._lockspace is True and last is not None and not last.iso  # sanlock's
        else:
            acquired = member and valid and last is not None and not last.iso
        return {
            "code": code,
            "lastCheck": f"{now - (last.at if last else self._born):.1f}",
            "delay": f"{last.delay:.6f}" if last else "0",
            "valid": valid,
            "version": last.version if last else -1,
            "acquired": acquired,
            "actual": True,
        }

    # -- the lockspace (host ids; actors/storage/clusterlock_ops.py) ------------------------

    def _discovered(self, outcome: lockspace.Lockspace | BaseException) -> None:
        """What sanlock held for this domain when the actor started (a restart keeps it)."""
        if isinstance(outcome, BaseException):
            log.warning("storage domain %s: no lockspace state: %s", self.domain.sd_uuid, outcome)
            return
        if self._host_id is None and outcome.host_id is not None:
            self._host_id = outcome.host_id
        if outcome.host_id == self._host_id or outcome.state == lockspace.LOCAL:
            state = outcome.state
            self._lockspace = False if isinstance(state, BaseException) else state

    def _join(self, host_id: int) -> None:
        """Join the lockspace with `host_id` (off this thread; sanlock's add is slow)."""
        if self._host_id == host_id and self._lockspace in (True, lockspace.LOCAL):
            return
        self._host_id = host_id
        self._inquire(join=True)

    def _inquire(self, *, join: bool) -> None:
        host_id = self._host_id
        if host_id is None or self._inquiring:
            return
        self._inquiring = True
        work = functools.partial(lockspace.ensure_joined, self.domain, host_id, join=join)
        self.run_off(work, functools.partial(self._inquired, host_id), name="lockspace")

    def _inquired(self, host_id: int, outcome: Any) -> None:
        self._inquiring = False
        self._lockspace_seen(lockspace.Lockspace(host_id=host_id, state=outcome))

    def _leave(self) -> None:
        host_id, self._host_id = self._host_id, None
        if host_id is None or self._lockspace is lockspace.LOCAL:
            return
        self._lockspace = False
        self.run_off(
            functools.partial(lockspace.leave, self.domain, host_id),
            functools.partial(self._left, host_id),
            name="leave lockspace",
        )

    def _left(self, host_id: int, outcome: Any) -> None:
        """Log how leaving went (sanlock leaves asynchronously; the id is no longer ours)."""
        if isinstance(outcome, BaseException):
            log.warning(
                "storage domain %s: leaving host id %d: %s", self.domain.sd_uuid, host_id, outcome
            )
        elif self._host_id is None:
            log.info("storage domain %s: host id %d released", self.domain.sd_uuid, host_id)

    def _lockspace_seen(self, message: lockspace.Lockspace) -> None:
        if message.host_id != self._host_id:
            return  # asked for another id, or left meanwhile
        state = message.state
        if isinstance(state, BaseException):
            log.warning(
                "storage domain %s: host id %s: %s", self.domain.sd_uuid, message.host_id, state
            )
            state = False
        if state != self._lockspace and state is not None:
            log.info(
                "storage domain %s: host id %s %s",
                self.domain.sd_uuid,
                message.host_id,
                {True: "acquired", False: "not held", lockspace.LOCAL: "local"}.get(state, state),
            )
        self._lockspace = state
        if state is None and message.host_id is not None:
            self.tell_later(POLL, lockspace.PollLockspace(message.host_id))

    def statistics(self) -> dict[str, int]:
        """Counts for introspection: queued writes, queued tasks, claims."""
        depth = self._writer.depth if self._writer is not None else 0
        return {"writes": depth, "tasks": len(self._queued_tasks), "claims": len(self._claims)}


def _check(domain: FileDomain, monotonic: Callable[[], float]) -> Checked:
    """Read the metadata past the page cache, validate the domain, time it all.

    A worker; blocks as long as the mount does (VDSM's path checker reads the
    metadata with direct I/O for the same reason: a cached read never hangs).
    """
    started = monotonic()
    error: HostvisorError | None = None
    version, iso = -1, False
    try:
        read_direct(domain.metadata_path)
        domain.validate()
        meta = domain.metadata()
        version = int(meta.get("VERSION", "-1"))
        iso = meta.get("CLASS") == DomainClass.ISO.word
    except HostvisorError as failure:
        error = failure
    except OSError as failure:
        error = StorageError(reason=str(failure))
    finished = monotonic()
    return Checked(at=finished, delay=finished - started, error=error, version=version, iso=iso)


def read_direct(path: Path, size: int = 4096) -> None:
    """Read the first block of `path` with O_DIRECT (plainly where the fs refuses it).

    Blocks on a hung mount. Raises OSError.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | getattr(os, "O_DIRECT", 0))
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        fd = os.open(path, flags)  # tmpfs: no direct I/O
    try:
        buffer = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT wants
        try:
            os.readv(fd, [buffer])
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            os.pread(fd, size, 0)
        finally:
            buffer.close()
    finally:
        os.close(fd)
