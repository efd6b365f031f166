"""SPM tasks on disk: one file per task in the master domain's `master/tasks/`.

VDSM persists every SPM task under the master domain (`master/tasks/<taskID>`) and,
when a host becomes SPM again, loads them and recovers those whose work died with
the process (reference/vdsm-wire.md §8; VDSM's taskManager.loadDumpedTasks and
Task.recover). Hostvisor keeps the same place and the same promise with its own
format: `<taskID>.task`, a small JSON object written atomically at each change of
the task's phase, removed by `Task.clear`.

A task read back in a phase that was still active ran (or waited) in an agent that
is gone: it is reported finished and aborted (code 411), `cleanSuccess` if its work
had not started (nothing was done), `cleanFailure` otherwise (its rollback did not
run; an interrupted volume creation, say, is left ILLEGAL). Plain blocking code on
the master's mount: the task manager runs it on a worker, in order.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostvisor.actors.storage.metadata import atomic_write, fsync_directory

log = logging.getLogger(__name__)

SUFFIX = ".task"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTask:
    """What is kept of one task: enough to answer its status after a restart."""

    id: str
    verb: str
    tag: str
    phase: str
    """A `tasks.Phase` value."""
    ending: str | None
    """A `tasks.Ending` value, once finished."""
    code: int
    message: str
    rolled_back: bool
    result: str = ""

    def to_json(self) -> bytes:
        """The file's content."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StoredTask:
        """Read a file's content. Raises ValueError (or TypeError) if it is not one."""
        fields: dict[str, Any] = json.loads(data)
        return cls(**fields)


class TaskStore:
    """The task files of one master domain. Every method blocks on its mount."""

    def __init__(self, directory: Path) -> None:
        """Keep tasks in `directory` (made if missing, at the first save)."""
        self.directory = directory

    def save(self, task: StoredTask) -> None:
        """Write `task` atomically. Raises OSError (or StorageError) on a failing mount."""
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.directory / f"{task.id}{SUFFIX}", task.to_json())

    def remove(self, task_id: str) -> None:
        """Forget `task_id` (nothing if it has no file). Raises OSError."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{task_id}{SUFFIX}").unlink()
            fsync_directory(self.directory)

    def load(self) -> list[StoredTask]:
        """Every readable task file; a corrupt one is logged and skipped. Raises OSError."""
        tasks = []
        try:
            entries = sorted(self.directory.glob(f"*{SUFFIX}"))
        except FileNotFoundError:
            return []
        for path in entries:
            try:
                tasks.append(StoredTask.from_json(path.read_bytes()))
            except (ValueError, TypeError):
                log.warning("skipping an unreadable task file %s", path)
        return tasks
