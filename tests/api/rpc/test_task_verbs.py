"""The Task verbs and Host task/job listings through a whole embedded host, as the Engine polls.

Works are handed to the host's own task manager (`storage/tasks`), as the SPM verbs
do; everything the test reads comes over the API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import embedded_host
from harness.waiting import wait_for
from hostvisor.actors.storage.addresses import TASKS
from hostvisor.actors.storage.errors import VolumeDoesNotExist
from hostvisor.actors.storage.proxy import TaskProxy
from hostvisor.actors.storage.tasks import TaskContext, Work
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.libvirt]

UNKNOWN_TASK, TASK_NOT_FINISHED, TASK_ABORTED = 401, 403, 411
WAIT = 15.0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root) as running:
        yield running


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with host.client() as client:
        yield client


def submit(host: EmbeddedHost, verb: str, work: Work, **kwargs: Any) -> str:
    manager = TaskProxy(host.registry.lookup(TASKS))
    task_id: str = manager.submit(verb, work, **kwargs).get(timeout=5)
    return task_id


def finished(cli: Client, task_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (s := cli.Task.getStatus(taskID=task_id))["taskState"] == "finished" and s,
        WAIT,
        f"{task_id} to finish",
    )


def error_of(invoke: Callable[..., Any], **params: Any) -> ServerError:
    with pytest.raises(ServerError) as raised:
        invoke(**params)
    return raised.value


def test_a_task_is_polled_then_cleared_as_the_engine_does(host: EmbeddedHost, cli: Client):
    release = threading.Event()
    task_id = submit(host, "createVolume", lambda _ctx: release.wait(WAIT))
    assert cli.Task.getInfo(taskID=task_id) == {"id": task_id, "verb": "createVolume"}
    status = cli.Task.getStatus(taskID=task_id)
    assert status["taskState"] == "running"
    assert status["taskResult"] == ""
    assert isinstance(status["code"], int)
    assert cli.Host.getAllTasksStatuses()[task_id] == status
    assert cli.Host.getAllTasksInfo()[task_id] == {"id": task_id, "verb": "createVolume"}
    error = error_of(cli.Task.clear, taskID=task_id)
    assert (error.code, error.message.startswith("Task not finished")) == (TASK_NOT_FINISHED, True)

    release.set()
    assert finished(cli, task_id) == {
        "taskID": task_id,
        "taskState": "finished",
        "taskResult": "success",
        "code": 0,
        "message": "1 jobs completed successfully",
    }
    assert cli.Task.clear(taskID=task_id) is True
    for verb in (cli.Task.getStatus, cli.Task.getInfo, cli.Task.clear, cli.Task.stop):
        assert error_of(verb, taskID=task_id).code == UNKNOWN_TASK
    assert task_id not in cli.Host.getAllTasksStatuses()


def test_a_failing_task_reports_the_storage_error(host: EmbeddedHost, cli: Client):
    def work(_ctx: TaskContext) -> None:
        raise VolumeDoesNotExist(volUUID="5d1c2b3a-0000-4000-8000-000000000001")

    status = finished(cli, submit(host, "deleteVolume", work))
    assert status["taskResult"] == "cleanSuccess"
    assert status["code"] == VolumeDoesNotExist.code
    assert status["message"].startswith("Volume does not exist")


def test_a_crashing_task_is_code_100_and_the_host_carries_on(host: EmbeddedHost, cli: Client):
    def work(_ctx: TaskContext) -> None:
        raise ZeroDivisionError("oops")

    status = finished(cli, submit(host, "createVolume", work))
    assert status["code"] == 100
    assert "Traceback" not in status["message"]
    assert cli.Host.ping2() is True


def test_stop_through_the_api(host: EmbeddedHost, cli: Client):
    started = threading.Event()

    def long_work(ctx: TaskContext) -> None:
        started.set()
        while not ctx.aborted.wait(0.05):
            pass
        ctx.check_aborted()

    task_id = submit(host, "copyImage", long_work)
    assert started.wait(WAIT)
    assert cli.Task.stop(taskID=task_id) is True
    status = finished(cli, task_id)
    assert (status["taskResult"], status["code"]) == ("cleanSuccess", TASK_ABORTED)
    assert cli.Task.clear(taskID=task_id) is True


def test_progress_is_readable_while_the_task_runs(host: EmbeddedHost, cli: Client):
    advance = threading.Semaphore(0)

    def work(ctx: TaskContext) -> None:
        for step in range(1, 5):
            advance.acquire(timeout=WAIT)
            ctx.progress(step / 4)

    task_id = submit(host, "copyImage", work)
    seen = []
    for step in (1, 2, 3, 4):
        advance.release()
        want = step * 25.0
        seen.append(
            wait_for(
                lambda w=want: cli.Host.getAllTasks()[task_id].get("progress") == w and w,
                WAIT,
                f"progress {want}",
            )
        )
    finished(cli, task_id)
    assert seen == [25.0, 50.0, 75.0, 100.0]
    cli.Task.clear(taskID=task_id)


def test_jobs_are_listed_with_host_get_jobs(host: EmbeddedHost, cli: Client):
    manager = TaskProxy(host.registry.lookup(TASKS))
    release = threading.Event()
    job_id = "7f7f0000-0000-4000-8000-00000000abcd"

    def work(ctx: TaskContext) -> None:
        ctx.progress(0.5)
        release.wait(WAIT)

    manager.submit_job(job_id, work, description="copy_data").get(timeout=5)
    running = wait_for(
        lambda: (j := cli.Host.getJobs(job_ids=[job_id]).get(job_id)) and "progress" in j and j,
        WAIT,
        "the job's progress",
    )
    assert running == {
        "id": job_id,
        "status": "running",
        "description": "copy_data",
        "job_type": "storage",
        "progress": 50.0,
    }
    release.set()
    wait_for(lambda: cli.Host.getJobs(job_type="storage")[job_id]["status"] == "done", WAIT, "done")
    assert cli.Host.getJobs(job_type="v2v") == {}


def test_two_hundred_tasks_polled_through_the_api(host: EmbeddedHost, cli: Client):
    release = threading.Event()
    ids = {submit(host, "createVolume", lambda _ctx: release.wait(WAIT)) for _ in range(200)}
    assert len(ids) == 200
    assert ids <= set(cli.Host.getAllTasksStatuses())
    release.set()
    wait_for(
        lambda: all(
            s["taskResult"] == "success"
            for i, s in cli.Host.getAllTasksStatuses().items()
            if i in ids
        ),
        60,
        "200 tasks to succeed",
    )
    for task_id in ids:
        assert cli.Task.clear(taskID=task_id) is True
    assert not ids & set(cli.Host.getAllTasksStatuses())
