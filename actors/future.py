"""A pykka future that also runs callbacks once it is settled.

The bridge between actors and code that must not block: the API's event loop, and
the work facility's workers reporting back to an actor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pykka

log = logging.getLogger(__name__)


class CallbackFuture(pykka.ThreadingFuture[Any]):
    """A pykka future that also runs callbacks once it is settled.

    Lets code that must not block (the API's event loop) wait for an ask: the
    callback runs in the thread that settles the future (the actor's), or at once
    in the caller's if it is already settled, and must only hand the result on.
    """

    def __init__(self) -> None:
        """Create an unsettled future."""
        super().__init__()
        self._callbacks: list[Callable[[CallbackFuture], None]] | None = []

    def add_done_callback(self, callback: Callable[[CallbackFuture], None]) -> None:
        """Run `callback(self)` once the future is settled (at once if it is)."""
        with self._condition:  # pykka's own guard of this future's result
            if self._callbacks is not None:
                self._callbacks.append(callback)
                return
        callback(self)

    def set(self, value: Any | None = None) -> None:
        """Settle with a value, then run the callbacks."""
        super().set(value)
        self._settled()

    def set_exception(self, exc_info: Any = None) -> None:
        """Settle with an exception, then run the callbacks."""
        super().set_exception(exc_info)
        self._settled()

    def _settled(self) -> None:
        with self._condition:
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                log.exception("future callback %r failed", callback)
