"""TaskManager on its own: tasks and SDM jobs, their states, codes and progress.

Works are plain functions that block on events the test controls, so nothing here
sleeps to synchronise: the test waits for a state the manager reports.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from harness.waiting import wait_for
from hostvisor.actors.actor import Link, call
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.errors import (
    TaskAborted,
    TaskNotFinished,
    UnknownTask,
    VolumeDoesNotExist,
)
from hostvisor.actors.storage.tasks import (
    AddTaskError,
    JobExists,
    JobNotDone,
    NoSuchJob,
    TaskContext,
)
from hostvisor.actors.storage.tasks_actor import TaskManager
from hostvisor.actors.timers import Timers

WAIT = 10.0


@pytest.fixture
def manager() -> Iterator[pykka.ActorRef[Any]]:
    link = Link(path="storage/tasks")
    ref = TaskManager.spawn(link, workers=4, max_tasks=300)
    link.started.get(timeout=5)
    yield ref
    ref.stop(timeout=5)


def ask(ref: pykka.ActorRef[Any], method: str, *args: Any, **kwargs: Any) -> Any:
    return call(ref, method, *args, **kwargs).get(timeout=WAIT)


def finished(ref: pykka.ActorRef[Any], task_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (s := ask(ref, "status", task_id))["taskState"] == "finished" and s,
        WAIT,
        f"task {task_id} to finish",
    )


class Gate:
    """A work that waits until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, _ctx: TaskContext) -> str:
        self.entered.set()
        if not self.opened.wait(WAIT):
            raise AssertionError("gate never opened")
        return "through"


# -- tasks --------------------------------------------------------------------------------


def test_a_task_runs_in_a_worker_and_finishes_with_success(manager: pykka.ActorRef[Any]):
    gate = Gate()
    task_id = ask(manager, "submit", "createVolume", gate)
    assert gate.entered.wait(WAIT)
    running = ask(manager, "status", task_id)
    assert running == {
        "taskID": task_id,
        "taskState": "running",
        "taskResult": "",
        "code": 0,
        "message": "running job 1 of 1",
    }
    assert ask(manager, "info", task_id) == {"id": task_id, "verb": "createVolume"}
    gate.opened.set()
    assert finished(manager, task_id) == {
        "taskID": task_id,
        "taskState": "finished",
        "taskResult": "success",
        "code": 0,
        "message": "1 jobs completed successfully",
    }
    details = ask(manager, "all_details")[task_id]
    assert details["result"] == "through"
    assert details["state"] == "finished"


def test_the_caller_may_choose_the_id_once(manager: pykka.ActorRef[Any]):
    gate = Gate()
    assert ask(manager, "submit", "spmStart", gate, task_id="my-task") == "my-task"
    with pytest.raises(AddTaskError) as raised:
        ask(manager, "submit", "spmStart", gate, task_id="my-task")
    assert raised.value.code == 405
    for bad in ("", "a.b"):
        with pytest.raises(InvalidArgument):
            ask(manager, "submit", "spmStart", gate, task_id=bad)
    gate.opened.set()
    finished(manager, "my-task")


def test_a_storage_error_ends_the_task_with_its_code(manager: pykka.ActorRef[Any]):
    rolled_back: list[str] = []

    def work(ctx: TaskContext) -> None:
        ctx.add_rollback(lambda: rolled_back.append("first"))
        ctx.add_rollback(lambda: rolled_back.append("second"))
        raise VolumeDoesNotExist(volUUID="v1")

    task_id = ask(manager, "submit", "deleteVolume", work)
    status = finished(manager, task_id)
    assert status["taskResult"] == "cleanSuccess"  # failed, and rolled back cleanly
    assert status["code"] == 201
    assert status["message"] == str(VolumeDoesNotExist(volUUID="v1"))
    assert rolled_back == ["second", "first"]  # newest first


def test_a_failed_rollback_is_a_clean_failure(manager: pykka.ActorRef[Any]):
    def undo() -> None:
        raise OSError("cannot remove the half-made volume")

    def work(ctx: TaskContext) -> None:
        ctx.add_rollback(undo)
        raise VolumeDoesNotExist(volUUID="v1")

    status = finished(manager, ask(manager, "submit", "createVolume", work))
    assert (status["taskResult"], status["code"]) == ("cleanFailure", 201)


def test_a_crashing_work_is_code_100_and_logged_and_the_manager_carries_on(
    manager: pykka.ActorRef[Any], caplog: pytest.LogCaptureFixture
):
    def work(_ctx: TaskContext) -> None:
        raise KeyError("bug")

    status = finished(manager, ask(manager, "submit", "createVolume", work))
    assert status["code"] == 100
    assert status["taskState"] == "finished"
    assert status["taskResult"] == "cleanSuccess"
    assert "KeyError" in status["message"]
    crash_logs = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert crash_logs
    assert crash_logs[0].exc_info is not None  # the traceback is in the log
    ok = ask(manager, "submit", "createVolume", lambda _ctx: None)
    assert finished(manager, ok)["taskResult"] == "success"


def test_stop_aborts_a_long_work_which_rolls_back(manager: pykka.ActorRef[Any]):
    steps = threading.Event()
    undone = threading.Event()

    def long_work(ctx: TaskContext) -> None:
        ctx.add_rollback(undone.set)
        while True:
            steps.set()
            ctx.check_aborted()
            ctx.aborted.wait(0.05)  # one step of real work would be here

    task_id = ask(manager, "submit", "copyImage", long_work)
    assert steps.wait(WAIT)
    with pytest.raises(TaskNotFinished) as refused:
        ask(manager, "clear", task_id)
    assert refused.value.code == 403
    ask(manager, "stop_task", task_id)
    state = ask(manager, "status", task_id)["taskState"]
    assert state in ("aborting", "cleaning", "finished")
    status = finished(manager, task_id)
    assert status["taskResult"] == "cleanSuccess"
    assert status["code"] == TaskAborted.code == 411
    assert undone.is_set()
    ask(manager, "stop_task", task_id)  # stopping a finished task does nothing
    assert ask(manager, "status", task_id) == status


def test_a_work_that_ignores_stop_is_still_reported_aborted(manager: pykka.ActorRef[Any]):
    gate = Gate()
    task_id = ask(manager, "submit", "copyImage", gate)
    assert gate.entered.wait(WAIT)
    ask(manager, "stop_task", task_id)
    assert ask(manager, "status", task_id)["taskState"] == "aborting"
    gate.opened.set()
    status = finished(manager, task_id)
    assert (status["taskResult"], status["code"], status["message"]) == (
        "cleanSuccess",
        411,
        "Task is aborted",
    )


def test_clear_rules(manager: pykka.ActorRef[Any]):
    task_id = ask(manager, "submit", "createVolume", lambda _ctx: None)
    finished(manager, task_id)
    ask(manager, "clear", task_id)
    for method in ("status", "info", "clear", "stop_task"):
        with pytest.raises(UnknownTask) as raised:
            ask(manager, method, task_id)
        assert raised.value.code == 401
    assert task_id not in ask(manager, "all_statuses")


def test_progress_is_seen_growing_while_the_work_runs(manager: pykka.ActorRef[Any]):
    advance = threading.Semaphore(0)

    def work(ctx: TaskContext) -> None:
        for step in range(1, 5):
            if not advance.acquire(timeout=WAIT):
                raise AssertionError("the test stopped advancing")
            ctx.progress(step / 4)

    task_id = ask(manager, "submit", "copyImage", work)
    seen = []
    for step in range(1, 4):
        advance.release()
        want = step * 25.0
        seen.append(
            wait_for(
                lambda w=want: ask(manager, "all_details")[task_id].get("progress") == w and w,
                WAIT,
                f"progress {want}",
            )
        )
    advance.release()
    finished(manager, task_id)
    assert seen == [25.0, 50.0, 75.0]
    assert ask(manager, "all_details")[task_id]["progress"] == 100.0


def test_progress_reports_are_rate_limited():
    sent: list[Any] = []
    now = [0.0]
    ctx = TaskContext(
        key=_key("t"), report=sent.append, progress_interval=1.0, clock=lambda: now[0]
    )
    for step in range(1001):
        ctx.progress(step / 1000)  # a thousand tiny steps within one instant
    fractions = [m.fraction for m in sent]
    assert 90 <= len(fractions) <= 101  # about one per percent
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0  # completion always goes through
    sent.clear()
    ctx.progress(0.5)  # moved back by half: goes through
    ctx.progress(0.501)  # too small a move, too soon
    assert [m.fraction for m in sent] == [0.5]
    now[0] = 1.5
    ctx.progress(0.502)  # small, but the interval has passed: never stale for long
    ctx.progress(0.502)  # unchanged: nothing
    ctx.progress(7)  # clamped
    assert [m.fraction for m in sent] == [0.5, 0.502, 1.0]


def _key(task_id: str) -> Any:
    from hostvisor.actors.storage.tasks import WorkKey  # noqa: PLC0415

    return WorkKey("task", task_id)


def test_two_hundred_tasks_at_once(manager: pykka.ActorRef[Any]):
    release = threading.Event()

    def work(ctx: TaskContext) -> str:
        release.wait(WAIT)
        return ctx.task_id

    ids = [ask(manager, "submit", "createVolume", work) for _ in range(200)]
    assert len(set(ids)) == 200
    statuses = ask(manager, "all_statuses")
    assert set(statuses) == set(ids)
    assert {s["taskState"] for s in statuses.values()} == {"running"}  # queued reads running
    assert ask(manager, "statistics")["tasks_running"] <= 4  # the worker bound holds
    release.set()
    wait_for(
        lambda: all(s["taskResult"] == "success" for s in ask(manager, "all_statuses").values()),
        60,
        "200 tasks to succeed",
    )
    for task_id in ids:
        ask(manager, "clear", task_id)
    assert ask(manager, "all_statuses") == {}


def test_too_many_unfinished_tasks_are_refused_and_nothing_is_lost():
    link = Link(path="storage/tasks")
    ref = TaskManager.spawn(link, workers=1, max_tasks=2)
    try:
        gate = Gate()
        first = ask(ref, "submit", "a", gate)
        second = ask(ref, "submit", "b", gate)
        with pytest.raises(AddTaskError):
            ask(ref, "submit", "c", gate)
        assert set(ask(ref, "all_statuses")) == {first, second}
        gate.opened.set()
        finished(ref, first)
        finished(ref, second)
        ask(ref, "submit", "c", lambda _ctx: None)  # room again
    finally:
        ref.stop(timeout=5)


def test_stopping_the_manager_aborts_running_works():
    link = Link(path="storage/tasks")
    ref = TaskManager.spawn(link, workers=2)
    seen_abort = threading.Event()
    running = threading.Event()

    def work(ctx: TaskContext) -> None:
        running.set()
        if ctx.aborted.wait(WAIT):
            seen_abort.set()

    ask(ref, "submit", "copyImage", work)
    assert running.wait(WAIT)  # a work still queued is not run at all
    ref.stop(timeout=5)
    assert seen_abort.wait(WAIT)


# -- SDM jobs --------------------------------------------------------------------------------


def test_a_job_reports_vdsm_job_fields(manager: pykka.ActorRef[Any]):
    gate = Gate()
    job_id = "0b9c1d6e-0000-4000-8000-000000000001"
    assert ask(manager, "submit_job", job_id, gate, description="copy_data") == job_id
    with pytest.raises(JobExists) as exists:
        ask(manager, "submit_job", job_id, gate)
    assert exists.value.code == 69
    assert gate.entered.wait(WAIT)
    assert ask(manager, "jobs")[job_id] == {
        "id": job_id,
        "status": "running",
        "description": "copy_data",
        "job_type": "storage",
    }
    with pytest.raises(JobNotDone):
        ask(manager, "delete_job", job_id)
    gate.opened.set()
    done = wait_for(lambda: ask(manager, "jobs")[job_id]["status"] == "done", WAIT, "job done")
    assert done
    assert ask(manager, "jobs", "v2v") == {}
    assert list(ask(manager, "jobs", None, [job_id, "other"])) == [job_id]
    ask(manager, "delete_job", job_id)
    with pytest.raises(NoSuchJob) as missing:
        ask(manager, "abort_job", job_id)
    assert missing.value.code == 66


def test_a_failed_job_carries_its_error_and_an_aborted_job_says_so(
    manager: pykka.ActorRef[Any],
):
    def fail(_ctx: TaskContext) -> None:
        raise VolumeDoesNotExist(volUUID="v")

    ask(manager, "submit_job", "j-fail", fail)
    failed = wait_for(
        lambda: (j := ask(manager, "jobs")["j-fail"])["status"] == "failed" and j,
        WAIT,
        "job failure",
    )
    assert failed["error"] == {"code": 201, "message": str(VolumeDoesNotExist(volUUID="v"))}

    def endless(ctx: TaskContext) -> None:
        ctx.aborted.wait(WAIT)
        ctx.check_aborted()

    ask(manager, "submit_job", "j-abort", endless)
    ask(manager, "abort_job", "j-abort")
    aborted = wait_for(
        lambda: (j := ask(manager, "jobs")["j-abort"])["status"] == "aborted" and j, WAIT, "abort"
    )
    assert aborted["error"]["code"] == 411


def test_finished_jobs_are_forgotten_after_the_autodelete_delay():
    link = Link(path="storage/tasks")
    ref = TaskManager.spawn(link, job_autodelete=0.2, timers=Timers(name="test-timers"))
    try:
        ask(ref, "submit_job", "j", lambda _ctx: None)
        wait_for(lambda: "j" not in ask(ref, "jobs"), WAIT, "the job to be forgotten")
    finally:
        ref.stop(timeout=5)
