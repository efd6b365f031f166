"""The task manager's store on the master: what it writes, and what it reads back.

A task file found in each phase is recovered as VDSM's Task.recover leaves it: a
finished task as it ended; a task that was only queued as stopped before it began
(cleanSuccess); one that was running, aborting or cleaning as stopped without its
rollback (cleanFailure); all with code 411 but the finished one. A corrupt file is
skipped. Real files in tmp_path; the manager runs on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.waiting import wait_for
from hostvisor.actors.actor import Link, call
from hostvisor.actors.storage.proxy import flat
from hostvisor.actors.storage.task_store import StoredTask, TaskStore
from hostvisor.actors.storage.tasks_actor import TaskManager

WAIT = 10.0


@pytest.fixture
def manager() -> Iterator[pykka.ActorRef[Any]]:
    link = Link(path="storage/tasks")
    ref = TaskManager.spawn(link, workers=2, max_tasks=10)
    link.started.get(timeout=5)
    yield ref
    ref.stop(timeout=5)


def ask(ref: pykka.ActorRef[Any], method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a manager method; an answer that is itself a future is waited for too."""
    return flat(call(ref, method, *args, **kwargs)).get(timeout=WAIT)


def stored(task_id: str, phase: str, **fields: Any) -> StoredTask:
    values: dict[str, Any] = {
        "id": task_id,
        "verb": "createVolume",
        "tag": "spm",
        "phase": phase,
        "ending": None,
        "code": 0,
        "message": "running job 1 of 1",
        "rolled_back": True,
        **fields,
    }
    return StoredTask(**values)


def test_tasks_found_on_the_master_come_back_with_their_true_state(manager, tmp_path: Path):
    store = TaskStore(tmp_path / "master" / "tasks")
    store.save(
        stored(
            "done",
            "finished",
            ending="succeeded",
            message="1 jobs completed successfully",
            result="",
        )
    )
    store.save(stored("waiting", "queued", message="Task is initializing"))
    for phase in ("running", "aborting", "recovering"):
        store.save(stored(phase, phase))
    (store.directory / "broken.task").write_text("{not json")

    assert ask(manager, "use_store", store.directory) == 5
    statuses = ask(manager, "all_statuses", "spm")
    assert statuses["done"]["taskResult"] == "success"
    assert statuses["done"]["code"] == 0
    assert statuses["waiting"]["taskResult"] == "cleanSuccess"
    for phase in ("running", "aborting", "recovering"):
        assert statuses[phase]["taskState"] == "finished"
        assert statuses[phase]["taskResult"] == "cleanFailure"
        assert statuses[phase]["code"] == 411
    assert "broken" not in statuses

    # Written back as recovered, then gone once cleared.
    wait_for(
        lambda: json.loads((store.directory / "running.task").read_text())["phase"] == "finished",
        WAIT,
        "the recovered state on disk",
    )
    ask(manager, "clear", "running")
    wait_for(lambda: not (store.directory / "running.task").exists(), WAIT, "the file gone")


def test_a_new_task_is_written_at_each_phase(manager, tmp_path: Path):
    store = TaskStore(tmp_path / "tasks")
    assert ask(manager, "use_store", store.directory) == 0
    task_id = ask(manager, "submit", "deleteImage", lambda _ctx: None)
    wait_for(
        lambda: (t := {s.id: s for s in store.load()}.get(task_id)) and t.phase == "finished",
        WAIT,
        "the finished task on disk",
    )
    [saved] = [s for s in store.load() if s.id == task_id]
    assert (saved.verb, saved.ending, saved.code) == ("deleteImage", "succeeded", 0)
    # Jobs and other tags are not kept, as VDSM keeps only SPM tasks.
    ask(manager, "submit_job", "job-1", lambda _ctx: None)
    other = ask(manager, "submit", "x", lambda _ctx: None, tag="hsm")
    wait_for(lambda: ask(manager, "status", other)["taskState"] == "finished", WAIT, "hsm task")
    assert {s.id for s in store.load()} == {task_id}
