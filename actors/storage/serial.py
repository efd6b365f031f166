"""Blocking storage work run off an actor's thread, one at a time and in order.

A storage actor (connections, a domain's writer, the pool) must answer while a
mount, a metadata write or a preallocation blocks. `Serial` keeps the actor's queue
of blocking works and hands them, one at a time, to the work facility through the
actor's `run_off`; the outcome comes back to the actor's thread, which settles the
caller's future and starts the next. So two changes never interleave, nothing
blocks the mailbox, and no thread is owned.

`settle` is the one place an outcome becomes an answer: a `HostvisorError` is the
caller's error; anything else is logged with its traceback and answered as a
`StorageError` naming the operation (a failing disk is not the actor's bug).
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hostvisor.actors.actor import Actor
from hostvisor.actors.errors import HostvisorError, Unavailable
from hostvisor.actors.future import CallbackFuture
from hostvisor.actors.storage.errors import StorageError

log = logging.getLogger(__name__)


class RunOff(Protocol):
    """`Actor.run_off`'s signature."""

    def __call__(
        self, work: Callable[[], Any], then: Callable[[Any], Any], *, name: str = ...
    ) -> CallbackFuture:
        """Run `work` on the work facility; `then(outcome)` on the actor's thread."""
        ...


def settle(reply: CallbackFuture, outcome: Any, op: str) -> None:
    """Settle `reply` with a work's outcome (a value, or the exception it raised)."""
    if isinstance(outcome, HostvisorError):
        reply.set_exception(exc_info=(type(outcome), outcome, None))
    elif isinstance(outcome, BaseException):
        log.error("%s failed", op, exc_info=outcome)
        failure = StorageError(operation=op, reason=f"{type(outcome).__name__}: {outcome}")
        reply.set_exception(exc_info=(StorageError, failure, None))
    else:
        reply.set(outcome)


def failed(error: HostvisorError) -> CallbackFuture:
    """A future already settled with `error`."""
    future = CallbackFuture()
    future.set_exception(exc_info=(type(error), error, None))
    return future


def done(value: Any = None) -> CallbackFuture:
    """A future already settled with `value`."""
    future = CallbackFuture()
    future.set(value)
    return future


@dataclass(frozen=True, slots=True)
class _Queued:
    make: Callable[[], Callable[[], Any]]
    reply: CallbackFuture
    op: str
    after: Callable[[Any], None] | None


class Serial:
    """One actor's queue of blocking works, run one at a time, in the order added.

    Used only from the owning actor's thread (no lock): `add` and the outcome
    handling both run there.

    Args:
        run_off: the owning actor's `run_off`.
        name: what the works are named after in thread dumps.
    """

    def __init__(self, run_off: RunOff, name: str) -> None:
        """Make an empty, idle queue."""
        self._run_off = run_off
        self._name = name
        self._queue: collections.deque[_Queued] = collections.deque()
        self._busy: _Queued | None = None

    def add(
        self,
        work: Callable[[], Any],
        *,
        op: str,
        after: Callable[[Any], None] | None = None,
    ) -> CallbackFuture:
        """Queue `work`; return the future its outcome settles.

        `after(outcome)` runs on the actor's thread before the future is settled
        (to apply the outcome to the actor's state). Does not block.
        """
        return self.add_made(lambda: work, op=op, after=after)

    def add_made(
        self,
        make: Callable[[], Callable[[], Any]],
        *,
        op: str,
        after: Callable[[Any], None] | None = None,
    ) -> CallbackFuture:
        """Queue a work made when its turn comes: `make()` runs on the actor's thread.

        So the work sees the actor's state as every earlier work left it (check
        there; a `HostvisorError` it raises answers the caller and the queue moves on).
        """
        reply = CallbackFuture()
        self._queue.append(_Queued(make, reply, op, after))
        self._next()
        return reply

    @property
    def depth(self) -> int:
        """Works queued or running."""
        return len(self._queue) + (self._busy is not None)

    def fail_all(self, reason: str) -> None:
        """Answer every queued work (not the running one) Unavailable; the owner stops."""
        while self._queue:
            item = self._queue.popleft()
            settle(item.reply, Unavailable(actor=self._name, reason=reason), item.op)
        busy, self._busy = self._busy, None
        if busy is not None:  # its outcome is dropped with the stopping actor
            settle(busy.reply, Unavailable(actor=self._name, reason=reason), busy.op)

    def _next(self) -> None:
        while self._busy is None and self._queue:
            item = self._queue.popleft()
            try:
                work = item.make()
            except HostvisorError as error:
                settle(item.reply, error, item.op)
                continue
            self._busy = item
            self._run_off(work, functools.partial(self._ended, item), name=item.op)

    def _ended(self, item: _Queued, outcome: Any) -> None:
        if self._busy is not item:
            return  # answered by fail_all already
        self._busy = None
        try:
            if item.after is not None:
                item.after(outcome)
        finally:
            settle(item.reply, outcome, item.op)
            self._next()


class SerialActor(Actor):
    """An actor whose changes run one at a time, in order, off its thread (`Serial`).

    Subclasses start the queue with `_start_serial()` in `on_start` and reach it as
    `_serial`; on a stop or a crash every queued change is answered with Unavailable
    (`stopped` names who stopped). Only asks (method calls) come to such an actor:
    any other message is a bug, and crashes it.
    """

    stopped = "the actor stopped"

    _queue: Serial | None = None

    def _start_serial(self) -> None:
        """Make the queue (call from `on_start`, on the actor's thread)."""
        self._queue = Serial(self.run_off, self.path)

    @property
    def _serial(self) -> Serial:
        assert self._queue is not None  # noqa: S101 - made in on_start
        return self._queue

    def on_stop(self) -> None:
        """Answer what is queued: this actor is stopping."""
        if self._queue is not None:
            self._queue.fail_all(self.stopped)

    def on_failure(self, *_exc_info: Any) -> None:
        """As `on_stop`."""
        self.on_stop()

    def on_receive(self, message: Any) -> Any:
        """Only asks come here: any other message is a bug, and crashes the actor."""
        raise TypeError(f"{type(self).__name__} got an unexpected message: {message!r}")
