"""Log lines carry the actor they come from: `actor` (its path) and `vm_id`.

An actor's turn runs on a scheduler worker named `actor:<path>` for the length of
the turn, and a job of the work facility on a thread named
`work-N:<path>:<job>` (`Actor.run_off`). `install()` wraps logging's record factory
so that every record made on such a thread gets `record.actor = <path>` and, for a
VM or container VM actor, `record.vm_id`; other records get "-" for both. Any
handler can then print them (`%(actor)s`, `%(vm_id)s`), and so does `LOG_FORMAT`.

Reading the thread's name costs one attribute read per record; nothing is set on
the hot path of a message (a turn already names its worker).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from hostvisor.api.admin.ops import vm_id_of

LOG_FORMAT = (
    "%(asctime)s %(levelname)s (%(threadName)s) [%(name)s] actor=%(actor)s vm=%(vm_id)s %(message)s"
)
"""The agent's log line: the actor's path and VM id on every line from an actor."""

NO_ACTOR = "-"


def actor_of(thread_name: str) -> str | None:
    """The actor path a thread named `actor:<path>` or `work-N:<path>:<job>` works for."""
    if thread_name.startswith("actor:"):
        return thread_name[6:]
    head, sep, rest = thread_name.partition(":")
    if sep and head.startswith("work-"):
        path, sep, _job = rest.rpartition(":")
        return path if sep else None
    return None


def _context(record: logging.LogRecord) -> None:
    path = actor_of(threading.current_thread().name)
    record.actor = path or NO_ACTOR
    record.vm_id = (vm_id_of(path) if path else None) or NO_ACTOR


_installed = threading.Lock()


def install() -> None:
    """Make every log record carry `actor` and `vm_id` (idempotent; any thread).

    Wraps the process's record factory once: logging is process-wide by nature.
    """
    with _installed:
        factory = logging.getLogRecordFactory()
        if getattr(factory, "hostvisor_context", False):
            return

        def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            _context(record)
            return record

        make.hostvisor_context = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(make)
