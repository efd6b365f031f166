"""TaskManager: the actor that owns every storage task and SDM job of the host.

Every method below runs in the manager's own thread and returns at once; call them
through `TaskProxy` (actors/storage/proxy.py) and read the future with a timeout. A
work runs on the tree's work facility (`run_off`), at most `workers` at once (VDSM's
thread pool: 10 by default; the rest wait, reading "queued"), and reports back with
frozen messages (`Started`, `ProgressMade`, `Cleaning`, `Finished`), so the manager
answers status polls while works block on storage.

A task may also be *opened* (`open_task`) by an actor that runs the work itself: a
storage domain runs its volume tasks on its own writer, in order with its other
changes, and reports through the task's context exactly as a worker does.

SPM tasks are also kept on the master domain, as VDSM keeps them (task_store.py):
when this host becomes SPM, the pool hands the manager the master's `master/tasks`
(`use_store`); the manager reads the tasks found there back (a task whose work died
with an earlier agent is reported finished and aborted) and from then on writes each
SPM task at every change of phase, on a worker, in order, and removes it at
`Task.clear`. So after `kill -9` and a new spmStart the Engine polls its old task ids
and reads their true state. Works still running when the manager stops are asked to
abort; their reports to the dead actor are dropped.
"""

from __future__ import annotations

import collections
import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from hostvisor.actors.actor import Actor, CallbackFuture
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.errors import TaskAborted, TaskNotFinished, UnknownTask
from hostvisor.actors.storage.serial import Serial, done, settle
from hostvisor.actors.storage.task_store import StoredTask, TaskStore
from hostvisor.actors.storage.tasks import (
    RUNNING as RUNNING_MESSAGE,
)
from hostvisor.actors.storage.tasks import (
    AddTaskError,
    Cleaning,
    Ending,
    Finished,
    JobExists,
    JobNotDone,
    NoSuchJob,
    Phase,
    ProgressMade,
    Record,
    Started,
    TaskContext,
    Work,
    WorkKey,
    execute,
)
from hostvisor.actors.timers import Timers

log = logging.getLogger(__name__)

TASK = "task"
JOB = "job"
SPM_TAG = "spm"


@dataclass(frozen=True, slots=True)
class ForgetJob:
    """Tell (timer): a finished job has been kept long enough; drop it."""

    job_id: str


class TaskManager(Actor):
    """Owns the records of every task and job; runs their works on worker threads.

    Args:
        workers: how many works run at once; the others wait, reading "running".
        max_tasks: how many unfinished tasks and jobs may exist; more are refused
            with AddTaskError (405), as VDSM's full thread pool queue does.
        progress_interval: a work whose progress moved by less than 1 % reports it
            at most once per this many seconds (see `TaskContext.progress`).
        job_autodelete: seconds a finished SDM job is kept for polling (VDSM: 3600).
        timers: the timer service used to forget finished jobs (default: the tree's).
    """

    def __init__(
        self,
        *,
        workers: int = 10,
        max_tasks: int = 500,
        progress_interval: float = 1.0,
        job_autodelete: float = 3600.0,
        timers: Timers | None = None,
    ) -> None:
        """Describe the manager; works start with the first `submit`."""
        super().__init__()
        if workers < 1 or max_tasks < 1:
            raise ValueError("workers and max_tasks must be at least 1")
        self._workers = workers
        self._max_tasks = max_tasks
        self._progress_interval = progress_interval
        self._job_autodelete = job_autodelete
        self._timers = timers
        self._tasks: dict[str, Record] = {}
        self._jobs: dict[str, Record] = {}
        self._queued: collections.deque[tuple[TaskContext, Work]] = collections.deque()
        self._running = 0
        self._store: TaskStore | None = None
        self._writes: Serial | None = None

    # -- life -----------------------------------------------------------------------------

    def on_stop(self) -> None:
        """Ask every running work to abort and let the workers go (does not wait)."""
        self._shut_down()

    def on_failure(self, *_exc_info: Any) -> None:
        """Same as a stop: the records die with this incarnation."""
        self._shut_down()

    def _shut_down(self) -> None:
        for record in [*self._tasks.values(), *self._jobs.values()]:
            if record.phase.active:
                record.ctx.aborted.set()
        self._queued.clear()

    # -- tasks ----------------------------------------------------------------------------

    def submit(self, verb: str, work: Work, *, task_id: str | None = None, tag: str = "spm") -> str:
        """Start a task running `work`; return its id at once.

        Args:
            verb: the verb that asked for it (Task.getInfo shows it).
            work: called with a `TaskContext` in a worker thread; its return value
                becomes the task's result, a `HostvisorError` it raises its code.
            task_id: the id to use (the caller's); None makes a new UUID.
            tag: VDSM's task tag ("spm" for SPM tasks).

        Raises:
            InvalidArgument: `task_id` is empty or holds a ".".
            AddTaskError: `task_id` is in use, or too many tasks are unfinished.
        """
        task_id = _checked_id(task_id)
        if task_id in self._tasks:
            raise AddTaskError(taskID=task_id, reason="task id already in use")
        key = WorkKey(TASK, task_id)
        self._tasks[task_id] = record = self._start(key, verb, work, tag=tag)
        self._save(record)
        return task_id

    def open_task(self, verb: str, *, tag: str = "spm") -> TaskContext:
        """Record a task whose work the caller runs; return its context at once.

        The caller runs the work with `execute(ctx, work, ctx.report)` (any thread);
        its reports reach this manager as a worker's do.

        Raises:
            AddTaskError: too many tasks are unfinished.
        """
        task_id = _checked_id(None)
        key = WorkKey(TASK, task_id)
        record = self._record_of(key, verb, tag=tag)
        self._tasks[task_id] = record
        self._save(record)
        log.info("task %s (%s) opened", task_id, verb)
        return record.ctx

    def status(self, task_id: str) -> dict[str, Any]:
        """Task.getStatus: {taskID, taskState, taskResult, code, message}. Raises UnknownTask."""
        return self._task(task_id).status()

    def info(self, task_id: str) -> dict[str, Any]:
        """Task.getInfo: {id, verb}. Raises UnknownTask."""
        return self._task(task_id).info()

    def all_statuses(self, tag: str | None = None) -> dict[str, dict[str, Any]]:
        """Host.getAllTasksStatuses: {taskID: status} (only tasks tagged `tag`, if given)."""
        return {i: r.status() for i, r in self._tasks.items() if not tag or r.tag == tag}

    def all_info(self, tag: str | None = None) -> dict[str, dict[str, Any]]:
        """Host.getAllTasksInfo: {taskID: {id, verb}}."""
        return {i: r.info() for i, r in self._tasks.items() if not tag or r.tag == tag}

    def all_details(self) -> dict[str, dict[str, Any]]:
        """Host.getAllTasks: {taskID: {id, verb, state, code, message, result, tag, progress?}}."""
        return {i: r.details() for i, r in self._tasks.items()}

    def clear(self, task_id: str) -> None:
        """Task.clear: forget a finished task.

        Raises:
            UnknownTask: no such task (cleared already, or never made).
            TaskNotFinished: it still runs, aborts or rolls back.
        """
        record = self._task(task_id)
        if record.phase.active:
            raise TaskNotFinished(taskID=task_id, state=str(record.task_state()))
        del self._tasks[task_id]
        self._unsave(record)

    def stop_task(self, task_id: str) -> None:
        """Task.stop: ask the task's work to end; it then rolls back and finishes.

        Returns at once; the work sees `ctx.aborted` and should end soon. Stopping a
        finished task does nothing (as VDSM). Raises UnknownTask.
        """
        record = self._task(task_id)
        if record.phase.active:
            record.ctx.aborted.set()
            if record.phase in (Phase.QUEUED, Phase.RUNNING):
                record.phase = Phase.ABORTING
                self._save(record)
            log.info("task %s (%s): stop requested", task_id, record.verb)

    def revert(self, task_id: str) -> CallbackFuture:
        """Task.revert: run a finished task's rollback; it then reads cleanSuccess.

        As VDSM's Task.rollback: refused (TaskNotFinished) while the task still runs;
        on a finished task its remaining rollback steps run on a worker (a task that
        failed or was stopped has run them already: nothing more is done). The
        future settles once the task is rolled back. Raises UnknownTask.
        """
        record = self._task(task_id)
        if record.phase.active:
            raise TaskNotFinished(taskID=task_id, state=str(record.task_state()))
        reply = CallbackFuture()
        record.phase = Phase.CLEANING

        def reverted(outcome: Any) -> None:
            record.phase = Phase.FINISHED
            record.ending = Ending.ABORTED if record.ending is Ending.SUCCEEDED else record.ending
            record.rolled_back = outcome is True
            self._save(record)
            settle(reply, None, f"revert task {task_id}")

        self.run_off(record.ctx.roll_back, reverted, name=f"revert {task_id}")
        return reply

    # -- persistence (the master's master/tasks) ------------------------------------------

    def use_store(self, directory: Path | None) -> CallbackFuture:
        """Keep SPM tasks in `directory` from now on, after reading back those it holds.

        Told by the pool when this host becomes SPM (None: keep none). A task read back
        that this manager does not hold is recovered (see task_store.py) and written
        again; the future settles with how many were recovered. Never blocks: the
        files are read and written on workers.
        """
        if directory is None:
            self._store = None
            return done(value=0)
        store = self._store = TaskStore(directory)
        if self._writes is None:
            self._writes = Serial(self.run_off, f"{self.path}:store")
        reply = CallbackFuture()
        self.run_off(store.load, functools.partial(self._loaded, store, reply), name="load tasks")
        return reply

    def _loaded(self, store: TaskStore, reply: CallbackFuture, outcome: Any) -> None:
        if isinstance(outcome, BaseException) or store is not self._store:
            settle(reply, outcome if isinstance(outcome, BaseException) else 0, "load tasks")
            return
        recovered = 0
        for stored in outcome:
            if stored.id in self._tasks:
                continue
            record = self._recovered(stored)
            self._tasks[stored.id] = record
            self._save(record)
            recovered += 1
        for record in self._tasks.values():  # opened before the store was known
            if record.phase.active:
                self._save(record)
        if recovered:
            log.info("%d SPM tasks read back from %s", recovered, store.directory)
        settle(reply, recovered, "load tasks")

    def _recovered(self, stored: StoredTask) -> Record:
        key = WorkKey(TASK, stored.id)
        record = self._record_of(key, stored.verb, tag=stored.tag, force=True)
        record.ctx.aborted.set()
        record.value = stored.result or None
        phase = Phase(stored.phase)
        if phase is Phase.FINISHED:
            record.phase = Phase.FINISHED
            record.ending = Ending(stored.ending) if stored.ending else Ending.FAILED
            record.code, record.message = stored.code, stored.message
            record.rolled_back = stored.rolled_back
            return record
        # Its work died with an earlier agent: aborted; rolled back only if never begun.
        record.phase = Phase.FINISHED
        record.ending = Ending.ABORTED
        record.code = TaskAborted.code
        record.message = f"{TaskAborted.message}: the agent stopped while it {phase.value}"
        record.rolled_back = phase is Phase.QUEUED
        log.info("task %s (%s) was %s when the agent stopped", stored.id, stored.verb, phase.value)
        return record

    def _save(self, record: Record) -> None:
        """Write an SPM task's state (queued on a worker, in order); no store: nothing."""
        if self._store is None or self._writes is None or record.key.kind != TASK:
            return
        if record.tag != SPM_TAG:
            return
        stored = StoredTask(
            id=record.id,
            verb=record.verb,
            tag=record.tag,
            phase=record.phase.value,
            ending=record.ending.value if record.ending is not None else None,
            code=record.code,
            message=record.message,
            rolled_back=record.rolled_back,
            result="" if record.value is None else str(record.value),
        )
        self._writes.add(functools.partial(self._store.save, stored), op=f"save task {record.id}")

    def _unsave(self, record: Record) -> None:
        if self._store is not None and self._writes is not None and record.tag == SPM_TAG:
            self._writes.add(
                functools.partial(self._store.remove, record.id), op=f"remove task {record.id}"
            )

    def _task(self, task_id: str) -> Record:
        try:
            return self._tasks[task_id]
        except (KeyError, TypeError):
            raise UnknownTask(taskID=task_id) from None

    # -- SDM jobs -------------------------------------------------------------------------

    def submit_job(
        self, job_id: str, work: Work, *, job_type: str = "storage", description: str = ""
    ) -> str:
        """Start an SDM job under the caller's `job_id`; return the id at once.

        Raises:
            InvalidArgument: `job_id` is empty or holds a ".".
            JobExists: a job with that id exists.
            AddTaskError: too many tasks and jobs are unfinished.
        """
        job_id = _checked_id(job_id)
        if job_id in self._jobs:
            raise JobExists(jobID=job_id)
        key = WorkKey(JOB, job_id)
        self._jobs[job_id] = self._start(key, description, work, job_type=job_type)
        return job_id

    def jobs(
        self, job_type: str | None = None, job_ids: Iterable[str] = ()
    ) -> dict[str, dict[str, Any]]:
        """Host.getJobs: {id: {id, status, description, job_type, progress?, error?}}."""
        wanted = frozenset(job_ids)
        return {
            job_id: record.job_info()
            for job_id, record in self._jobs.items()
            if (not job_type or record.job_type == job_type) and (not wanted or job_id in wanted)
        }

    def abort_job(self, job_id: str) -> None:
        """Ask a job to abort (no effect once it has ended). Raises NoSuchJob."""
        record = self._job(job_id)
        if record.phase.active:
            record.ctx.aborted.set()

    def delete_job(self, job_id: str) -> None:
        """Forget an ended job. Raises NoSuchJob, or JobNotDone while it runs."""
        record = self._job(job_id)
        if record.phase.active:
            raise JobNotDone(jobID=job_id, status=str(record.job_status()))
        del self._jobs[job_id]

    def _job(self, job_id: str) -> Record:
        try:
            return self._jobs[job_id]
        except (KeyError, TypeError):
            raise NoSuchJob(jobID=job_id) from None

    # -- running works --------------------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Counts for introspection: tasks and jobs by phase, and the worker bound."""
        counts = {"workers": self._workers, "tasks": len(self._tasks), "jobs": len(self._jobs)}
        for record in [*self._tasks.values(), *self._jobs.values()]:
            name = f"{record.key.kind}s_{record.phase.value}"
            counts[name] = counts.get(name, 0) + 1
        return counts

    def _start(self, key: WorkKey, verb: str, work: Work, **fields: Any) -> Record:
        if not callable(work):
            raise InvalidArgument(reason="a task's work must be callable", work=repr(work))
        record = self._record_of(key, verb, **fields)
        self._queued.append((record.ctx, work))
        self._launch()
        log.info("%s %s (%s) submitted", key.kind, key.id, verb)
        return record

    def _record_of(self, key: WorkKey, verb: str, *, force: bool = False, **fields: Any) -> Record:
        unfinished = sum(1 for r in [*self._tasks.values(), *self._jobs.values()] if r.phase.active)
        if unfinished >= self._max_tasks and not force:
            raise AddTaskError(id=key.id, reason=f"{unfinished} tasks are unfinished")
        ctx = TaskContext(
            key, self._reporter(), progress_interval=self._progress_interval, clock=self._now
        )
        return Record(key=key, verb=verb, ctx=ctx, created=self._now(), **fields)

    def _now(self) -> float:
        return self.clock.monotonic()

    def _launch(self) -> None:
        """Run queued works while fewer than `workers` run (this actor's thread)."""
        while self._queued and self._running < self._workers:
            ctx, work = self._queued.popleft()
            self._running += 1
            self.run_off(
                functools.partial(execute, ctx, work, ctx.report),
                self._work_ended,
                name=f"{ctx.key.kind}:{ctx.key.id}",
            )

    def _work_ended(self, _outcome: Any) -> None:
        """A work's worker is free again (`execute` reported the outcome itself)."""
        self._running -= 1
        self._launch()

    def _reporter(self) -> Any:
        ref = self.actor_ref

        def report(message: Any) -> None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                log.debug("task manager gone; dropped %r", message)

        return report

    def on_receive(self, message: Any) -> Any:
        """Handle a worker's report or a timer's tell (this actor's thread)."""
        if isinstance(message, ForgetJob):
            record = self._jobs.get(message.job_id)
            if record is not None and not record.phase.active:
                del self._jobs[message.job_id]
            return None
        if isinstance(message, Started | ProgressMade | Cleaning | Finished):
            record = self._record(message.key)
            if record is not None:
                self._apply(record, message)
            return None
        raise TypeError(f"{type(self).__name__} got an unexpected message: {message!r}")

    def _record(self, key: WorkKey) -> Record | None:
        records = self._tasks if key.kind == TASK else self._jobs
        return records.get(key.id)

    def _apply(self, record: Record, message: Started | ProgressMade | Cleaning | Finished) -> None:
        if isinstance(message, ProgressMade):
            if record.phase.active:
                record.progress = message.fraction
            return
        self._phase_changed(record, message)
        self._save(record)

    def _phase_changed(self, record: Record, message: Started | Cleaning | Finished) -> None:
        if isinstance(message, Started):
            if record.phase is Phase.QUEUED:
                record.phase = Phase.RUNNING
            record.message = RUNNING_MESSAGE
        elif isinstance(message, Cleaning):
            record.phase = Phase.CLEANING
        else:
            record.phase = Phase.FINISHED
            record.ending = message.ending
            record.code = message.code
            record.message = message.message
            record.value = message.value
            record.rolled_back = message.rolled_back
            if record.progress is not None and message.code == 0:
                record.progress = 1.0
            log.info(
                "%s %s (%s) finished: %s, code %s",
                record.key.kind,
                record.id,
                record.verb,
                message.ending.value,
                message.code,
            )
            if record.key.kind == JOB:
                self._forget_later(record.id)

    def _forget_later(self, job_id: str) -> None:
        if self._timers is not None:
            self._timers.tell_later(self._job_autodelete, self.actor_ref, ForgetJob(job_id))
        else:
            self.tell_later(self._job_autodelete, ForgetJob(job_id))


def _checked_id(value: str | None) -> str:
    if value is None:
        return str(uuid.uuid4())
    if not isinstance(value, str) or not value or "." in value:
        raise InvalidArgument(param="taskID", value=value, reason="empty or holds a '.'")
    return value
