"""The recovery gate: the API answers 99 until every resource branch has recovered.

Each resource branch's recoverer reports when it has re-adopted its resources
(`report`); the gate opens once every expected branch has reported at least once,
and never closes again (a branch restarted later recovers behind an open gate, as
VDSM recovers a VM while serving the others). Reading it is a plain attribute
read, cheap on every call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)


class Gate:
    """Closed at first; opened once every expected branch has reported. Thread-safe."""

    def __init__(self, expected: Iterable[str] = ()) -> None:
        """Start closed, waiting for a report from each of `expected` (none: `open()`)."""
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._waiting = set(expected)
        self.reports: dict[str, int] = {}
        """How many times each branch reported (read by tests and introspection)."""

    def report(self, branch: str, adopted: int = 0) -> None:
        """Record that `branch` has recovered (`adopted` resources); open when all have."""
        with self._lock:
            self.reports[branch] = self.reports.get(branch, 0) + 1
            self._waiting.discard(branch)
            ready = not self._waiting
        log.debug("branch %s recovered %d resources", branch, adopted)
        if ready and not self._open.is_set():
            log.info("every branch has recovered; the API is open")
            self._open.set()

    def open(self) -> None:
        """Let calls through from now on, whatever has reported."""
        self._open.set()

    def is_open(self) -> bool:
        """Whether calls are let through."""
        return self._open.is_set()

    def wait_open(self, timeout: float | None = None) -> bool:
        """Block until open or `timeout`; return whether it is open."""
        return self._open.wait(timeout)

    def waiting(self) -> frozenset[str]:
        """The branches that have not reported yet."""
        with self._lock:
            return frozenset(self._waiting)
