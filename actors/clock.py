"""Clocks: where actors, timers and supervisors read the time, real or driven by a test.

Nothing under `actors/` calls `time.monotonic()` or `time.time()` itself: it reads the
clock it was given (an actor's `self.clock`), so a test can move time by hand
(`ManualClock.advance`) and see restart windows, "Powering up" and timeouts pass
without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, final


class Clock(Protocol):
    """A source of monotonic and wall-clock seconds."""

    def monotonic(self) -> float:
        """Return seconds from an arbitrary, fixed origin; never goes backwards."""
        ...

    def time(self) -> float:
        """Return seconds since the epoch (wall clock, for reports such as `statusTime`)."""
        ...


@final
class MonotonicClock:
    """The real clock: `time.monotonic` and `time.time`."""

    real = True
    """Timers wait on it with real timeouts."""

    def monotonic(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()

    def time(self) -> float:
        """Return `time.time()`."""
        return time.time()


@final
class ManualClock:
    """A clock that moves only when told to, so time is tested without sleeping.

    `advance` may be called from any thread; reads see a float assignment, which is
    atomic. Whoever waits on this clock (the timer service) subscribes with
    `on_advance` and is called, in the advancing thread, after each move.
    """

    real = False

    def __init__(self, start: float = 0.0, *, epoch: float = 1_800_000_000.0) -> None:
        """Start the clock at `start` monotonic seconds and `epoch + start` wall seconds."""
        self._now = start
        self._epoch = epoch
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """Return the current manual time."""
        return self._now

    def time(self) -> float:
        """Return the manual wall-clock time."""
        return self._epoch + self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (must not be negative); wake the waiters."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now += seconds
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every `advance` (from the advancing thread)."""
        with self._lock:
            self._listeners.append(listener)


def is_real(clock: Clock) -> bool:
    """Whether `clock` moves by itself (waits on it may use real timeouts)."""
    return bool(getattr(clock, "real", True))
