"""The scheduler: threads for busy actors, none for idle ones.

An actor needs a thread only while it has something to do. The scheduler keeps a
stack of parked worker threads; running an actor takes the most recently parked
one (it is warm) or starts a new one when none is parked, so an actor that blocks
in a handler (a libvirt call, a sideways ask) holds one worker and never stops any
other actor from running. A worker parked for `idle_seconds` leaves.

So a host with 5,000 managed guests holds threads for the few actors that are
handling something, not 5,000; at worst (every actor blocked at once) it holds one
per actor, as a thread-per-actor design always does.

Thread-safety: `submit` may be called from any thread. Its fast path takes no lock:
`list.pop` and `SimpleQueue.put` are atomic. A worker leaving after its idle time
takes the one lock, to be sure nobody popped it meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

log = logging.getLogger(__name__)

Run = Callable[[], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerStats:
    """A snapshot of the scheduler (for introspection)."""

    workers: int
    parked: int
    runs: int


@final
class _Worker:
    __slots__ = ("inbox",)

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[Run] = queue.SimpleQueue()


@final
class Scheduler:
    """Runs actors' turns on parked worker threads. Thread-safe."""

    def __init__(self, *, idle_seconds: float = 30.0, name: str = "sched") -> None:
        """Create a scheduler with no threads; `submit` starts them as needed."""
        self._idle_seconds = idle_seconds
        self._name = name
        self._parked: list[_Worker] = []
        self._leaving = threading.Lock()
        self._workers = 0
        self._serial = 0
        self._runs = 0

    def submit(self, run: Run) -> None:
        """Run `run()` on a worker thread as soon as possible. Never blocks.

        `run` must not raise: it is the actor's whole turn and handles its own
        errors; anything that escapes is logged here and the worker carries on.
        """
        try:
            worker = self._parked.pop()
        except IndexError:
            self._start(run)
        else:
            worker.inbox.put(run)

    def statistics(self) -> SchedulerStats:
        """Return how many workers exist and how many are parked (approximate)."""
        return SchedulerStats(workers=self._workers, parked=len(self._parked), runs=self._runs)

    def _start(self, first: Run) -> None:
        with self._leaving:
            self._workers += 1
            self._serial += 1
            serial = self._serial
        # owns a thread: a scheduler worker, running one busy actor at a time
        thread = threading.Thread(
            target=self._work, args=(first,), name=f"{self._name}-{serial}", daemon=True
        )
        thread.start()

    def _work(self, run: Run) -> None:
        thread = threading.current_thread()
        base = thread.name
        worker = _Worker()
        inbox = worker.inbox
        while True:
            try:
                run()
            except BaseException:  # a run handles its own errors; never lose the worker
                log.exception("an actor's turn raised out of the scheduler")
            thread.name = base
            self._runs += 1
            self._parked.append(worker)
            try:
                run = inbox.get(timeout=self._idle_seconds)
            except queue.Empty:
                if self._leave(worker):
                    return
                run = inbox.get()  # popped just now: its run is on the way

    def _leave(self, worker: _Worker) -> bool:
        """Unpark `worker` to let its thread end; False if a submit popped it first."""
        with self._leaving:
            try:
                self._parked.remove(worker)
            except ValueError:
                return False
            self._workers -= 1
            return True
