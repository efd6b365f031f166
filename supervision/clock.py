"""Clocks a supervisor reads its restart window from, real or driven by a test."""

from __future__ import annotations

import time
from typing import Protocol, final


class Clock(Protocol):
    """A source of monotonic seconds."""

    def monotonic(self) -> float:
        """Return seconds from an arbitrary, fixed origin; never goes backwards."""
        ...


@final
class MonotonicClock:
    """The real clock: `time.monotonic`."""

    def monotonic(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()


@final
class ManualClock:
    """A clock that moves only when told to, so restart windows are tested without sleeping.

    `advance` may be called from any thread; reads see a float assignment, which is atomic.
    """

    def __init__(self, start: float = 0.0) -> None:
        """Start the clock at `start` seconds."""
        self._now = start

    def monotonic(self) -> float:
        """Return the current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now += seconds
