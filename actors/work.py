"""The work facility: bounded worker threads for blocking calls, results as futures.

An actor must stay responsive (DESIGN, rule 3): a call that can hang or take long
(libvirt on a busy monitor, docker inspect, qemu-img, a stat on a hung mount) runs
here, and its result comes back to the actor as a message (`Actor.run_off`).

Workers are made on demand up to `max_workers` and leave after `idle_seconds` with
nothing to do, so an idle host holds no spare threads. When every worker is busy,
work waits in a FIFO queue: the bound is on threads, not on work. A worker stuck in
a call that never returns stays counted as busy (`statistics().busy`) — that is the
signal the console shows; it never blocks the actors that asked, only later work
once every worker is stuck.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

from hostvisor.actors.future import CallbackFuture

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkStats:
    """A snapshot of the pool (trio's `statistics()`)."""

    workers: int
    busy: int
    queued: int
    done: int


@dataclass(frozen=True, slots=True)
class _Job:
    fn: Callable[[], Any]
    future: CallbackFuture
    name: str


@final
class WorkPool:
    """Bounded worker threads shared by every actor of one tree. Thread-safe."""

    def __init__(
        self, *, max_workers: int = 64, idle_seconds: float = 30.0, name: str = "work"
    ) -> None:
        """Create an empty pool; threads are started by `submit` as needed."""
        if max_workers < 1:
            raise ValueError("a work pool needs at least one worker")
        self._max = max_workers
        self._idle_seconds = idle_seconds
        self._name = name
        self._queue: collections.deque[_Job] = collections.deque()
        self._ready = threading.Condition()
        self._workers = 0
        self._idle = 0
        self._done = 0
        self._serial = 0

    def submit(self, fn: Callable[[], Any], *, name: str = "work") -> CallbackFuture:
        """Run `fn()` on a worker; return a future settled with its result or exception.

        Never blocks. `name` shows in the worker thread's name while it runs (for
        SIGUSR1 thread dumps).
        """
        future = CallbackFuture()
        job = _Job(fn, future, name)
        with self._ready:
            self._queue.append(job)
            if self._idle > 0:
                self._ready.notify()
                return future
            if self._workers < self._max:
                self._workers += 1
                self._serial += 1
                serial = self._serial
            else:
                return future
        # owns a thread: this is the work facility's own worker
        threading.Thread(target=self._work, name=f"{self._name}-{serial}", daemon=True).start()
        return future

    def statistics(self) -> WorkStats:
        """Return how many workers exist, how many are busy, queued and done jobs."""
        with self._ready:
            return WorkStats(
                workers=self._workers,
                busy=self._workers - self._idle,
                queued=len(self._queue),
                done=self._done,
            )

    def _next(self) -> _Job | None:
        """The next job, or None once this worker has idled long enough to leave."""
        with self._ready:
            while not self._queue:
                self._idle += 1
                woken = self._ready.wait(self._idle_seconds)
                self._idle -= 1
                if not woken and not self._queue:
                    self._workers -= 1
                    return None
            return self._queue.popleft()

    def _work(self) -> None:
        thread = threading.current_thread()
        base = thread.name
        while (job := self._next()) is not None:
            thread.name = f"{base}:{job.name}"
            try:
                result = job.fn()
            except BaseException:  # noqa: BLE001 - handed to whoever waits on the future
                job.future.set_exception(exc_info=sys.exc_info())
            else:
                job.future.set(result)
            finally:
                thread.name = base
                with self._ready:
                    self._done += 1
