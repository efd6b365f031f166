"""An actor's mailbox: a FIFO that asks for a turn when a message reaches an idle actor.

The actor is *scheduled* from the moment a turn is asked for until that turn finds
the mailbox empty and releases it. `put` asks for a turn only when the actor is not
scheduled, so a busy actor costs its senders one `deque.append` and one attribute
read: no lock, no wake-up.

No message is stranded: `put` appends before it reads `scheduled`, and `release`
clears `scheduled` before it looks at the queue once more. Either the sender sees
the actor unscheduled and claims the turn, or the releasing turn sees the message
and claims it back; the claim is under a lock, so exactly one of them wins.

Once closed (the actor has ended), every message already in it and every later one
is handed to the `refuse` callback: asks fail at once instead of waiting for their
timeout.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, final

from pykka._envelope import Envelope  # internal to pykka 4 (pinned); only typed here

Turn = Callable[[], None]


def _not_bound(_turn: Turn) -> None:
    raise RuntimeError("a mailbox was used before its actor was started")


def _keep(_envelope: Envelope[Any]) -> None:
    """Before `close`, nothing is refused."""


@final
class Mailbox:
    """The inbox of one actor (pykka's `ActorInbox` protocol, minus blocking `get`)."""

    __slots__ = ("_claim", "_closed", "_items", "_refuse", "_scheduled", "_submit", "_turn")

    def __init__(self) -> None:
        """Create an empty mailbox, *scheduled* until `bind`: the first turn is the start."""
        self._items: collections.deque[Envelope[Any]] = collections.deque()
        self._claim = threading.Lock()
        self._scheduled = True
        self._closed = False
        self._turn: Turn = lambda: None
        self._submit: Callable[[Turn], None] = _not_bound
        self._refuse: Callable[[Envelope[Any]], None] = _keep

    def bind(self, turn: Turn, submit: Callable[[Turn], None]) -> None:
        """Tie the mailbox to its actor's `turn` and the scheduler's `submit`; start it."""
        self._turn = turn
        self._submit = submit
        submit(turn)

    def put(self, envelope: Envelope[Any]) -> None:
        """Queue `envelope` (any thread); ask for a turn if the actor is idle. Never blocks."""
        self._items.append(envelope)
        if self._closed:
            self._drain()
        elif not self._scheduled and self._try_claim():
            self._submit(self._turn)

    def next(self) -> Envelope[Any] | None:
        """The oldest message, or None when empty (the actor's turn only)."""
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def release(self) -> bool:
        """End the turn on an empty mailbox (the actor's turn only).

        Returns:
            True when a message arrived meanwhile and this turn claimed it back:
            the caller goes on handling instead of ending.
        """
        self._scheduled = False
        return bool(self._items) and self._try_claim()

    def close(self, refuse: Callable[[Envelope[Any]], None]) -> None:
        """Refuse every queued and future message with `refuse` (the actor has ended)."""
        self._refuse = refuse
        self._closed = True
        self._drain()

    def qsize(self) -> int:
        """Messages waiting (a snapshot, for introspection)."""
        return len(self._items)

    def empty(self) -> bool:
        """True when no message waits."""
        return not self._items

    def _try_claim(self) -> bool:
        with self._claim:
            if self._scheduled:
                return False
            self._scheduled = True
            return True

    def _drain(self) -> None:
        while True:
            try:
                envelope = self._items.popleft()
            except IndexError:
                return
            self._refuse(envelope)
