"""Storage tasks and jobs: their records, their wire shapes, and how a work is run.

VDSM's SPM verbs (spmStart, Volume.create, Image.delete, ...) answer a task id at
once and run the work in the background; the Engine polls `Task.getStatus` or
`Host.getAllTasksStatuses` and then `Task.clear`s the finished task
(reference/vdsm-wire.md §3.1, §8). SDM verbs do the same under an id the caller
chose and are polled with `Host.getJobs`. `TaskManager` (tasks_actor.py) owns every
record; this module holds what it is made of, with no thread or actor of its own.

A task's life, in VDSM's wire words (`taskState` / `taskResult`):

    submitted, waiting for a worker   running  / ""       "Task is initializing"
    its work runs                     running  / ""       "running job 1 of 1"
    Task.stop asked, work not ended   aborting / ""
    failed or stopped: rolling back   cleaning / ""
    the work returned                 finished / success  "1 jobs completed successfully"
    failed or stopped, rolled back    finished / cleanSuccess   code, message of the error
    failed, and a rollback failed     finished / cleanFailure   code, message of the error

Failure codes are VDSM's: a work that raises a `HostvisorError` ends with that
error's code and message; any other exception is a bug, logged with its traceback,
and ends with code 100; a stopped task ends with 411 ("Task is aborted"). As in
VDSM, SPM tasks roll back when they fail or are stopped, so a failed task whose
rollback (possibly empty) succeeded reports cleanSuccess: the Engine reads both
cleanSuccess and cleanFailure as failures. Works register their undo steps with
`TaskContext.add_rollback`.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.errors import AlreadyExists, Conflict, HostvisorError, NotFound
from hostvisor.actors.storage.errors import TaskAborted

log = logging.getLogger(__name__)

INITIALIZING = "Task is initializing"
RUNNING = "running job 1 of 1"
SUCCEEDED = "1 jobs completed successfully"
GENERAL_ERROR = 100


class AddTaskError(Conflict):
    """The task could not be added: its id is in use, or too many tasks wait."""

    code = 405
    message = "TaskManager error, unable to add task"


class NoSuchJob(NotFound):
    """No SDM job with that id."""

    code = 66
    message = "Job does not exist"


class JobNotDone(Conflict):
    """The job still runs; it cannot be deleted."""

    code = 68
    message = "Job is not done"


class JobExists(AlreadyExists):
    """A job with that id exists already."""

    code = 69
    message = "Job already exists"


class TaskState(enum.StrEnum):
    """`taskState` on the wire."""

    INIT = "init"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTING = "aborting"
    CLEANING = "cleaning"
    UNKNOWN = "unknown"


class TaskResult(enum.StrEnum):
    """`taskResult` on the wire."""

    NONE = ""
    SUCCESS = "success"
    CLEAN_SUCCESS = "cleanSuccess"
    CLEAN_FAILURE = "cleanFailure"


class JobStatus(enum.StrEnum):
    """An SDM job's `status` in Host.getJobs."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    ABORTING = "aborting"
    ABORTED = "aborted"
    FAILED = "failed"


class Phase(enum.Enum):
    """Where a work is in its life, finer than the wire's words."""

    QUEUED = "queued"
    RUNNING = "running"
    ABORTING = "aborting"
    CLEANING = "recovering"
    FINISHED = "finished"

    @property
    def active(self) -> bool:
        """Whether the work still runs or waits to run."""
        return self is not Phase.FINISHED


class Ending(enum.Enum):
    """How a finished work ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


# -- messages from a worker to the manager -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """Tell (worker): the work of `key` begins now."""

    key: WorkKey


@dataclass(frozen=True, slots=True)
class ProgressMade:
    """Tell (worker): the work of `key` is `fraction` (0..1) done."""

    key: WorkKey
    fraction: float


@dataclass(frozen=True, slots=True)
class Cleaning:
    """Tell (worker): the work of `key` failed or was stopped; rolling back."""

    key: WorkKey


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """Tell (worker): the work of `key` ended."""

    key: WorkKey
    ending: Ending
    code: int
    message: str
    value: Any = None
    rolled_back: bool = True
    """False when a rollback step raised (cleanFailure)."""


@dataclass(frozen=True, slots=True)
class WorkKey:
    """Which record a message is about: a task or a job, by id."""

    kind: str  # "task" or "job"
    id: str


Report = Callable[[Any], None]
"""Sends a worker's message to the manager (a tell; never blocks)."""


# -- what a work sees -----------------------------------------------------------------------


class TaskContext:
    """What a running work gets: its id, its abort flag, progress and rollback.

    Used only by the worker thread that runs the work, so it needs no lock.

    Attributes:
        task_id: the task's (or job's) id.
        aborted: set when Task.stop (or a job abort, or the manager's stop) asks the
            work to end; a long work checks it between steps and then raises
            `TaskAborted` (or calls `check_aborted`).
    """

    def __init__(
        self,
        key: WorkKey,
        report: Report,
        *,
        progress_interval: float = 1.0,
        progress_step: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Make the context of the work `key`; `report` tells the manager."""
        self.key = key
        self.task_id = key.id
        self.aborted = threading.Event()
        self._report = report
        self.report = report
        """Tells the manager a `Started`/`ProgressMade`/`Cleaning`/`Finished` (any thread)."""
        self._interval = progress_interval
        self._step = progress_step
        self._clock = clock
        self._last_time: float | None = None
        self._last_fraction = -1.0
        self._rollbacks: list[Callable[[], Any]] = []

    def progress(self, fraction: float) -> None:
        """Report that the work is `fraction` (0..1, clamped) done. Never blocks.

        Rate-limited, and never stale by more than `progress_step`: a value reaches
        the manager when it moved by at least `progress_step` since the last report,
        or when it changed at all and `progress_interval` seconds have passed. So a
        work may call this as often as it likes: at most about 1/step + elapsed /
        interval messages are sent.
        """
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction == self._last_fraction:
            return
        now = self._clock()
        moved = abs(fraction - self._last_fraction) >= self._step
        waited = self._last_time is None or now - self._last_time >= self._interval
        if not (moved or waited or fraction == 1.0):
            return
        self._last_time = now
        self._last_fraction = fraction
        self._report(ProgressMade(self.key, fraction))

    def check_aborted(self) -> None:
        """Raise TaskAborted if the work was asked to stop."""
        if self.aborted.is_set():
            raise TaskAborted(task=self.task_id)

    def add_rollback(self, undo: Callable[[], Any]) -> None:
        """Run `undo()` if the work fails or is stopped; the last added runs first."""
        self._rollbacks.append(undo)

    def clear_rollbacks(self) -> None:
        """Forget the rollback steps: the work is past the point where undoing is right.

        As VDSM's `clearRecoveries`: Image.move calls it once the copy is complete,
        before it removes the source.
        """
        self._rollbacks.clear()

    def roll_back(self) -> bool:
        """Run the rollback steps, newest first; return False if one raised (logged)."""
        clean = True
        while self._rollbacks:
            undo = self._rollbacks.pop()
            try:
                undo()
            except Exception:
                log.exception("task %s: rollback step %r failed", self.task_id, undo)
                clean = False
        return clean


Work = Callable[[TaskContext], Any]
"""A task's work: runs in a worker thread, may block, gets its context."""


def execute(ctx: TaskContext, work: Work, report: Report) -> None:
    """Run `work` in this (worker) thread and report its start, progress and end.

    Never raises an `Exception`: the outcome, whatever it is, is reported as a
    `Finished` message.
    """
    report(Started(ctx.key))
    value: Any = None
    if ctx.aborted.is_set():
        ending, code, message = Ending.ABORTED, TaskAborted.code, TaskAborted().render()
    else:
        ending, code, message, value = _call(ctx, work)
        if ending is Ending.SUCCEEDED and ctx.aborted.is_set():
            # Stopped while it ran but it finished anyway: VDSM throws the result away
            # and rolls back, and so does this.
            ending, code, message, value = (
                Ending.ABORTED,
                TaskAborted.code,
                TaskAborted().render(),
                None,
            )
    rolled_back = True
    if ending is not Ending.SUCCEEDED:
        report(Cleaning(ctx.key))
        rolled_back = ctx.roll_back()
    report(
        Finished(
            key=ctx.key,
            ending=ending,
            code=code,
            message=message,
            value=value,
            rolled_back=rolled_back,
        )
    )


def abandon(ctx: TaskContext, error: HostvisorError) -> None:
    """Report a work that will never run (its runner stopped first) as failed."""
    ctx.report(
        Finished(
            key=ctx.key,
            ending=Ending.FAILED,
            code=error.code,
            message=str(error),
            value=None,
            rolled_back=True,
        )
    )


def _call(ctx: TaskContext, work: Work) -> tuple[Ending, int, str, Any]:
    try:
        value = work(ctx)
    except TaskAborted as error:
        return Ending.ABORTED, error.code, str(error), None
    except HostvisorError as error:
        log.info("task %s failed: %s", ctx.task_id, error)
        ending = Ending.ABORTED if ctx.aborted.is_set() else Ending.FAILED
        return ending, error.code, str(error), None
    except Exception as error:
        log.exception("task %s crashed", ctx.task_id)
        return Ending.FAILED, GENERAL_ERROR, f"{type(error).__name__}: {error}", None
    return Ending.SUCCEEDED, 0, SUCCEEDED, value


# -- records ------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Record:
    """One task or job. Mutable, owned and changed only by the manager's thread."""

    key: WorkKey
    verb: str
    """The verb that made it (tasks) or the job's description (jobs)."""
    ctx: TaskContext
    job_type: str = "storage"
    tag: str = "spm"
    phase: Phase = Phase.QUEUED
    ending: Ending | None = None
    rolled_back: bool = True
    code: int = 0
    message: str = INITIALIZING
    value: Any = None
    progress: float | None = None
    """0..1 as last reported by the work; None until it reports."""
    created: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        """The task's or job's id."""
        return self.key.id

    # -- tasks ----------------------------------------------------------------------------

    def task_state(self) -> TaskState:
        """`taskState` on the wire."""
        return {
            Phase.QUEUED: TaskState.RUNNING,  # VDSM: a queued task already reads "running"
            Phase.RUNNING: TaskState.RUNNING,
            Phase.ABORTING: TaskState.ABORTING,
            Phase.CLEANING: TaskState.CLEANING,
            Phase.FINISHED: TaskState.FINISHED,
        }[self.phase]

    def task_result(self) -> TaskResult:
        """`taskResult` on the wire."""
        if self.phase is not Phase.FINISHED:
            return TaskResult.NONE
        if self.ending is Ending.SUCCEEDED:
            return TaskResult.SUCCESS
        return TaskResult.CLEAN_SUCCESS if self.rolled_back else TaskResult.CLEAN_FAILURE

    def status(self) -> dict[str, Any]:
        """Task.getStatus's answer: {taskID, taskState, taskResult, code, message}."""
        return {
            "taskID": self.id,
            "taskState": str(self.task_state()),
            "taskResult": str(self.task_result()),
            "code": self.code,
            "message": self.message,
        }

    def info(self) -> dict[str, Any]:
        """Task.getInfo's answer: {id, verb}."""
        return {"id": self.id, "verb": self.verb}

    def details(self) -> dict[str, Any]:
        """Host.getAllTasks's entry: VDSM's fields, plus `progress` (0..100) when known."""
        state = self.phase.value
        if self.phase is Phase.FINISHED and self.ending is not Ending.SUCCEEDED:
            state = "recovered" if self.rolled_back else "failed"
        details = {
            "id": self.id,
            "verb": self.verb,
            "state": state,
            "code": self.code,
            "message": self.message,
            "result": "" if self.value is None else str(self.value),
            "tag": self.tag,
        }
        if self.progress is not None:
            details["progress"] = percent(self.progress)
        return details

    # -- jobs -----------------------------------------------------------------------------

    def job_status(self) -> JobStatus:
        """An SDM job's `status`."""
        if self.phase is Phase.QUEUED:
            return JobStatus.PENDING
        if self.phase is Phase.RUNNING:
            return JobStatus.RUNNING
        if self.phase in (Phase.ABORTING, Phase.CLEANING):
            return JobStatus.ABORTING if self.ctx.aborted.is_set() else JobStatus.RUNNING
        return {
            Ending.SUCCEEDED: JobStatus.DONE,
            Ending.ABORTED: JobStatus.ABORTED,
            Ending.FAILED: JobStatus.FAILED,
        }[self.ending or Ending.FAILED]

    def job_info(self) -> dict[str, Any]:
        """Host.getJobs's entry: {id, status, description, job_type, progress?, error?}."""
        info: dict[str, Any] = {
            "id": self.id,
            "status": str(self.job_status()),
            "description": self.verb,
            "job_type": self.job_type,
        }
        if self.progress is not None:
            info["progress"] = percent(self.progress)
        if self.phase is Phase.FINISHED and self.ending is not Ending.SUCCEEDED:
            info["error"] = {"code": self.code, "message": self.message}
        return info


def percent(fraction: float) -> float:
    """`fraction` (0..1) as a percentage with two decimals, as VDSM's jobs report it."""
    return round(fraction * 100.0, 2)
