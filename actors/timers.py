"""The timer service: tell an actor a message later, or every interval, from one thread.

A VM needs a few one-shot timers (the end of "Powering up", a shutdown that must be
forced after its timeout) and samplers tick every few seconds. A thread per timer
costs a stack each; with a thousand VMs that is a thousand sleeping threads.
`Timers` keeps every pending timer in one heap, served by one daemon thread that
only waits and tells: the message is handled in the actor's own thread, as any other.

Time is read from an injected `Clock`. On a `ManualClock` the thread sleeps until
the clock is advanced, so a test moves time by hand and sees timers fire at once.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import pykka

from hostvisor.actors.clock import Clock, ManualClock, MonotonicClock, is_real


@dataclass(order=True, slots=True)
class _Pending:
    due: float  # the clock's monotonic seconds
    seq: int
    ref: pykka.ActorRef[Any] = field(compare=False)
    message: Any = field(compare=False)
    interval: float | None = field(default=None, compare=False)
    """Set for a periodic timer: it is pushed again `interval` after each tell."""
    cancelled: bool = field(default=False, compare=False)


class Timer:
    """A pending tell; `cancel()` drops it (and stops a periodic one) from now on."""

    __slots__ = ("_pending",)

    def __init__(self, pending: _Pending) -> None:
        """Wrap one heap entry."""
        self._pending = pending

    def cancel(self) -> None:
        """Do not tell the message again (no effect on a tell already made)."""
        self._pending.cancelled = True


class Timers:
    """One thread that tells each pending message to its actor when it is due.

    Thread-safe: any thread may add or cancel timers. The thread starts with the
    first timer and lives as long as the process (a daemon that only waits).
    """

    def __init__(self, clock: Clock | None = None, *, name: str = "timers") -> None:
        """Create the heap on `clock` (default: the real one)."""
        self.clock: Clock = clock or MonotonicClock()
        self._name = name
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        if isinstance(self.clock, ManualClock):
            self.clock.on_advance(self._poke)

    def tell_later(self, delay: float, ref: pykka.ActorRef[Any], message: Any) -> Timer:
        """Tell `message` to `ref` in `delay` seconds; dropped if `ref` is dead by then."""
        return self._push(max(delay, 0.0), ref, message, None)

    def tick_every(
        self,
        interval: float,
        ref: pykka.ActorRef[Any],
        message: Any,
        *,
        first: float | None = None,
    ) -> Timer:
        """Tell `message` to `ref` every `interval` s until cancelled or `ref` dies.

        The first tell comes after `first` seconds (default: one interval).
        """
        if interval <= 0:
            raise ValueError("a periodic timer needs a positive interval")
        return self._push(interval if first is None else max(first, 0.0), ref, message, interval)

    def pending(self) -> int:
        """How many timers wait (cancelled ones included until their time comes)."""
        with self._wakeup:
            return len(self._heap)

    def _push(
        self, delay: float, ref: pykka.ActorRef[Any], message: Any, interval: float | None
    ) -> Timer:
        pending = _Pending(self.clock.monotonic() + delay, next(self._seq), ref, message, interval)
        with self._wakeup:
            heapq.heappush(self._heap, pending)
            if self._thread is None:
                # owns a thread: the one thread that waits for every timer of the process
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if self._heap[0] is pending:
                self._wakeup.notify()
        return Timer(pending)

    def _poke(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def _wait(self) -> _Pending:
        """Return the next due timer, waiting for it (holding no lock while waiting)."""
        real = is_real(self.clock)
        with self._wakeup:
            while True:
                now = self.clock.monotonic()
                if self._heap and self._heap[0].due <= now:
                    return heapq.heappop(self._heap)
                timeout = self._heap[0].due - now if self._heap and real else None
                self._wakeup.wait(timeout)

    def _run(self) -> None:
        while True:
            due = self._wait()
            if due.cancelled:
                continue
            try:
                due.ref.tell(due.message)
            except pykka.ActorDeadError:
                continue
            if due.interval is not None:
                due.due = max(due.due + due.interval, self.clock.monotonic())
                due.seq = next(self._seq)
                with self._wakeup:
                    heapq.heappush(self._heap, due)
