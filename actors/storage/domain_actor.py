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

A periodic check (VDSM's domain monitor) reads and validates the metadata and times
it: `Host.getStorageRepoStats` reports its code, delay, lastCheck and validity.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pykka

from hostvisor.actors.actor import Actor, CallbackFuture
from hostvisor.actors.errors import HostvisorError, Unavailable
from hostvisor.actors.storage.addresses import TASKS
from hostvisor.actors.storage.domain_ops import DomainRead, DomainTask, DomainWrite
from hostvisor.actors.storage.errors import StorageError
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.serial import Serial, failed, settle
from hostvisor.actors.storage.tasks import TaskContext, abandon, execute

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_INTERVAL = 10.0
"""VDSM's domain monitor checks every 10 s."""


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
        self._checking = False
        self._last: Checked | None = None
        self._claims: set[str] = set()
        self._queued_tasks: dict[str, TaskContext] = {}
        self._pending: set[CallbackFuture] = set()
        """Answers waiting for a worker (reads, task checks): failed if this actor stops."""

    def on_start(self) -> None:
        """Make the writer's queue and start the periodic check (the first one now)."""
        self._writer = Serial(self.run_off, f"sd:{self.domain.sd_uuid}")
        self.tick_every(self._check_interval, Check(), first=0)

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
            case TaskOpened():
                self._task_opened(message)
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
        if self._checking:
            return  # the last check still hangs: its age shows in lastCheck
        self._checking = True
        self.run_off(
            functools.partial(_check, self.domain, self.clock.monotonic),
            self._checked,
            name="check",
        )

    def _checked(self, outcome: Checked | BaseException) -> None:
        self._checking = False
        if isinstance(outcome, BaseException):
            now = self.clock.monotonic()
            reason = f"{type(outcome).__name__}: {outcome}"
            outcome = Checked(at=now, delay=0.0, error=StorageError(reason=reason), version=0)
        self._last = outcome

    def repo_stats(self) -> dict[str, Any]:
        """`Host.getStorageRepoStats`' entry of this domain.

        `acquired` says whether this host holds the domain's host id, which only the
        pool knows: the caller sets it.
        """
        last = self._last
        if last is None:
            return {
                "code": 0,
                "lastCheck": "-1",
                "delay": "0",
                "valid": False,
                "version": -1,
                "acquired": False,
                "actual": False,
            }
        return {
            "code": last.error.code if last.error else 0,
            "lastCheck": f"{self.clock.monotonic() - last.at:.1f}",
            "delay": f"{last.delay:.6f}",
            "valid": last.error is None,
            "version": last.version,
            "acquired": False,
            "actual": True,
        }

    def statistics(self) -> dict[str, int]:
        """Counts for introspection: queued writes, queued tasks, claims."""
        depth = self._writer.depth if self._writer is not None else 0
        return {"writes": depth, "tasks": len(self._queued_tasks), "claims": len(self._claims)}


def _check(domain: FileDomain, monotonic: Callable[[], float]) -> Checked:
    """Validate the domain and time it (a worker; blocks on the mount)."""
    started = monotonic()
    error: HostvisorError | None = None
    version = 0
    try:
        domain.validate()
        version = int(domain.metadata().get("VERSION", "0"))
    except HostvisorError as failure:
        error = failure
    except OSError as failure:
        error = StorageError(reason=str(failure))
    finished = monotonic()
    return Checked(at=finished, delay=finished - started, error=error, version=version)
