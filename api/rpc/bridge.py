"""Awaiting an actor's answer from the API's event loop without blocking it."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import pykka

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import Unavailable

T = TypeVar("T")


def settled(future: pykka.Future[T]) -> asyncio.Future[T]:
    """Return an asyncio future of the running loop settled like the actor's `future`.

    Runs on the loop; never blocks. A dead actor becomes `Unavailable`.

    Raises:
        TypeError: `future` is not from a Hostvisor actor (it cannot call back).
    """
    if not isinstance(future, CallbackFuture):
        raise TypeError("only a Hostvisor actor's future can be awaited on the loop")
    loop = asyncio.get_running_loop()
    bridged: asyncio.Future[T] = loop.create_future()

    def settle(done: CallbackFuture) -> None:
        try:
            value = done.get(timeout=0)
        except pykka.ActorDeadError:
            outcome: tuple[bool, Any] = (False, Unavailable(reason="actor is not running"))
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (False, error)
        else:
            outcome = (True, value)
        loop.call_soon_threadsafe(_resolve, bridged, outcome)

    future.add_done_callback(settle)
    # The awaiting coroutine was cancelled (its deadline passed): the actor need not
    # do the work if it has not started it yet.
    bridged.add_done_callback(lambda b: future.abandon() if b.cancelled() else None)
    return bridged


def _resolve(bridged: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if bridged.done():
        return  # the caller gave up (timeout) already
    ok, value = outcome
    if ok:
        bridged.set_result(value)
    else:
        bridged.set_exception(value)
