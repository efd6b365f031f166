"""Awaiting an actor's answer from the API's event loop without blocking it."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import pykka

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import Unavailable

T = TypeVar("T")


def settled(future: pykka.Future[T], *, timeout: float | None = None) -> asyncio.Future[T]:
    """Return an asyncio future of the running loop settled like the actor's `future`.

    Runs on the loop; never blocks. A dead actor becomes `Unavailable`. With
    `timeout`, the returned future fails with `TimeoutError` once that many seconds
    pass first: one future and one timer, cheaper than `asyncio.wait_for` around it.
    Whenever the returned future ends without the answer (timed out, or its awaiting
    coroutine cancelled), the ask is abandoned: the actor need not do the work if it
    has not started it yet.

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
        try:
            loop.call_soon_threadsafe(_resolve, bridged, outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            return

    timer = None if timeout is None else loop.call_later(timeout, _expire, bridged)

    def ended(bridged: asyncio.Future[T]) -> None:
        if timer is not None:
            timer.cancel()
        if bridged.cancelled() or bridged.exception() is not None:
            future.abandon()  # harmless if the actor answered already

    bridged.add_done_callback(ended)
    future.add_done_callback(settle)
    return bridged


def _expire(bridged: asyncio.Future[Any]) -> None:
    if not bridged.done():
        bridged.set_exception(TimeoutError())


def _resolve(bridged: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if bridged.done():
        return  # the caller gave up (timeout) already
    ok, value = outcome
    if ok:
        bridged.set_result(value)
    else:
        bridged.set_exception(value)
