"""A ticker: tells an actor a message every interval, from one small thread.

Actors must not sleep in their mailbox thread, so periodic work (sampling) is
driven from outside: the ticker's thread only waits and tells.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pykka

log = logging.getLogger(__name__)


class Ticker:
    """Tells `message` to `ref` every `interval` seconds until stopped or `ref` dies."""

    def __init__(
        self,
        ref: pykka.ActorRef[Any],
        message: Any,
        interval: float,
        name: str,
        *,
        first: float | None = None,
    ) -> None:
        """Start ticking: the first tell after `first` s (default: one interval)."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(ref, message, interval, interval if first is None else first),
            name=f"ticker:{name}",
            daemon=True,
        )
        self._thread.start()

    def _run(self, ref: pykka.ActorRef[Any], message: Any, interval: float, first: float) -> None:
        wait = first
        while not self._stopped.wait(wait):
            wait = interval
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                return

    def stop(self) -> None:
        """Stop ticking; returns at once (the thread ends within one wait)."""
        self._stopped.set()
