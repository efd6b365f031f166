"""A pykka future that also runs callbacks once it is settled.

The bridge between actors and code that must not block: the API's event loop, and
the work facility's workers reporting back to an actor.
"""

from __future__ import annotations

import logging
import sys
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
        self.abandoned = False
        """Set by `abandon`: nobody waits for the answer any more."""

    def abandon(self) -> None:
        """Say nobody waits for this answer (its asker timed out or was cancelled).

        Any thread may call it. An actor that finds an abandoned ask in its mailbox
        drops it unhandled (`Actor`), so work whose caller gave up is not done late.
        """
        self.abandoned = True

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


# -- answers given later ------------------------------------------------------------------
#
# pykka settles an ask with whatever the handler returned, at once. A handler whose
# answer needs blocking work (run on the work facility with `Actor.run_off`) returns a
# `Later` instead, and settles it from the `then` that runs back on the actor's thread.
# Every actor's reply futures are `FollowingFuture`s (`Actor._create_future`): given a
# `Later` they settle when it does, with its value or its error. The caller sees one
# future and one value, as if the handler had answered at once, and the actor's
# thread was free meanwhile.


class Later(CallbackFuture):
    """An answer to come; its owner settles it with `set` or `set_exception`."""


class FollowingFuture(CallbackFuture):
    """A reply future that, given a `Later`, settles as that `Later` does."""

    def set(self, value: Any | None = None) -> None:
        """Settle with `value`, or follow it when it is a `Later` (never blocks)."""
        if isinstance(value, Later):
            value.add_done_callback(self._follow)
            return
        super().set(value)

    def _follow(self, later: CallbackFuture) -> None:
        """Runs in the thread that settled `later` (the actor's)."""
        try:
            value = later.get(timeout=0)
        except BaseException:  # noqa: BLE001 - handed on to whoever waits on this future
            self.set_exception(exc_info=sys.exc_info())
            return
        super().set(value)
