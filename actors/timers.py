"""Timers: tell an actor a message later, from one thread shared by every actor.

A VM needs a few one-shot timers (the end of "Powering up", a shutdown that must be
forced after its timeout). A `threading.Timer` each costs a thread and its stack per
pending timer; with a thousand VMs that is a thousand sleeping threads. `Timers`
keeps every pending timer in one heap, served by one daemon thread that only waits
and tells: the message is handled in the actor's own thread, as any other.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pykka


@dataclass(order=True, slots=True)
class _Pending:
    due: float  # monotonic
    seq: int
    ref: pykka.ActorRef[Any] = field(compare=False)
    message: Any = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Timer:
    """A pending tell; `cancel()` drops it if it has not been told yet."""

    __slots__ = ("_pending",)

    def __init__(self, pending: _Pending) -> None:
        """Wrap one heap entry."""
        self._pending = pending

    def cancel(self) -> None:
        """Do not tell the message (no effect once it has been told)."""
        self._pending.cancelled = True


class Timers:
    """One thread that tells each pending message to its actor when it is due."""

    def __init__(self, name: str = "timers") -> None:
        """Create the heap; the thread starts with the first timer."""
        self._name = name
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def tell_later(self, delay: float, ref: pykka.ActorRef[Any], message: Any) -> Timer:
        """Tell `message` to `ref` in `delay` seconds; dropped if `ref` is dead by then."""
        pending = _Pending(time.monotonic() + max(delay, 0.0), next(self._seq), ref, message)
        with self._wakeup:
            heapq.heappush(self._heap, pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if self._heap[0] is pending:
                self._wakeup.notify()
        return Timer(pending)

    def pending(self) -> int:
        """How many timers wait (cancelled ones included until their time comes)."""
        with self._wakeup:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap or self._heap[0].due > time.monotonic():
                    timeout = self._heap[0].due - time.monotonic() if self._heap else None
                    self._wakeup.wait(timeout)
                due = heapq.heappop(self._heap)
            if due.cancelled:
                continue
            try:
                due.ref.tell(due.message)
            except pykka.ActorDeadError:
                continue


_shared = Timers()


def shared_timers() -> Timers:
    """The process's timer thread, used by actors that are not given their own."""
    return _shared
