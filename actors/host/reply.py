"""Answers an actor gives later, once work it ran off its thread is back.

pykka settles an ask with whatever the handler returned, at once. A handler whose
answer needs blocking work (run on the work facility with `Actor.run_off`) returns
a `Later` instead, and settles it from the `then` that runs back on the actor's
thread. The actor's reply futures (`FollowingFuture`, which the actor class makes
in `_create_future`) see a `Later` and settle when it does, with its value or its
error: the caller, and the API, see one future and one value, exactly as if the
handler had answered at once, and the actor's thread was free meanwhile.
"""

from __future__ import annotations

import sys
from typing import Any

from hostvisor.actors.future import CallbackFuture


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
