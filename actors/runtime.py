"""What every actor of one tree shares: the clock, timers, work facility and scheduler.

A `Runtime` is made once per tree (by `hostvisor serve`, the embedded host, or a
test with a `ManualClock`) and handed down: the runner gives it to the root
supervisor's link, and every supervisor gives its own to each child it starts. An
actor reaches it as `self.runtime`; plain helpers are given the part they need.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hostvisor.actors.clock import Clock, MonotonicClock
from hostvisor.actors.scheduler import Scheduler
from hostvisor.actors.timers import Timers
from hostvisor.actors.work import WorkPool


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """The clock, timers, workers and scheduler of one tree."""

    clock: Clock
    timers: Timers
    work: WorkPool
    scheduler: Scheduler
    """Runs actors' turns: a thread for each busy actor, none for idle ones."""

    @classmethod
    def make(cls, clock: Clock | None = None, *, max_workers: int = 64) -> Runtime:
        """Return a new runtime on `clock` (default: the real one), with its own threads."""
        clock = clock or MonotonicClock()
        return cls(
            clock=clock,
            timers=Timers(clock),
            work=WorkPool(max_workers=max_workers),
            scheduler=Scheduler(),
        )

    @classmethod
    def default(cls) -> Runtime:
        """The process's default runtime, for actors that nobody supervises (tools, benches)."""
        global _default  # noqa: PLW0603 - the one process-wide fallback, made on first use
        with _default_lock:
            if _default is None:
                _default = cls.make()
            return _default


_default: Runtime | None = None
_default_lock = threading.Lock()
