"""The dispatcher: from a decoded request to its response, on the API's event loop.

It looks the verb up, answers 99 while the host recovers, binds the params, runs
the handler and waits for its answer at most the verb's timeout. A handler hands
the work to the owning actor by message (an ask) and returns the future; nothing
here blocks the loop. This is the one place where errors become JSON-RPC errors:
a `HostvisorError` becomes its VDSM code and message; anything else is a bug,
logged with its traceback and answered -32603 with no detail on the wire.

Fairness. A body is decoded first (`decode`, which the connection uses to charge
its request budget), then answered (`answer`). A request's deadline runs from
when its body arrived, not from when its turn came: a request still waiting at
the front when its verb's timeout has passed is answered code 40 and never sent
to an actor, so no stale work is queued behind other clients. A batch (at most
`codec.MAX_BATCH` requests) runs at most `BATCH_CONCURRENCY` requests at once, in
order: one connection never has more than that many of a batch's asks queued at
the actors, and a batch of cheap verbs yields the loop to every other connection
between rounds.

Cost. `answer_now` answers a lone request whose handler returns its value (ping,
echo, a bad request) within the connection's read callback, with no task; any
other body becomes one task. An actor's answer is awaited through one loop future
with its own timer (`bridge.settled`), not `asyncio.wait_for` around it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import pykka

from hostvisor.actors.errors import (
    CallerError,
    HostvisorError,
    InvalidArgument,
    Recovering,
    Timeout,
    Unavailable,
)
from hostvisor.api.rpc import codec
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.verbs import Call, Verb, VerbTable

log = logging.getLogger(__name__)

BATCH_CONCURRENCY = 4
"""Requests of one batch in flight at once (each at most one ask at an actor).

Measured (tests/api/test_edge_fairness.py, 10 batches of 1,000 Host.getStats while
another client pings): at 4 the pinger's p99 is ~3x its idle p99 and the storm
takes ~2.8 s; at 8, ~3.5x and 2 s; at 16, ~10x and 1 s; unbounded, ~30x.
"""
EXPIRED = 0.001
"""A request with less time than this left (seconds) is expired: not started."""


class Body(NamedTuple):
    """A decoded request body, waiting for its answer (a named tuple: one per body).

    Attributes:
        elements: its requests and invalid elements, in order.
        batch: whether it was an array.
        received: when it arrived (`time.monotonic()`); deadlines run from here.
    """

    elements: list[codec.Request | codec.Invalid]
    batch: bool
    received: float

    @property
    def cost(self) -> int:
        """What the body counts for in a connection's request budget."""
        return len(self.elements)


class RequestRecorder(Protocol):
    """Counts answered requests (the metrics' `ApiRecorder`). Loop thread; never raises."""

    def request(self, method: str, code: int | None, seconds: float) -> None:
        """Count one request of `method` answered with error `code` (None: a result)."""


class Dispatcher:
    """Serves the verbs of `table`. Its coroutines run on one asyncio loop."""

    def __init__(
        self,
        table: VerbTable,
        *,
        is_ready: Callable[[], bool],
        max_batch: int = codec.MAX_BATCH,
        batch_concurrency: int = BATCH_CONCURRENCY,
        recorder: RequestRecorder | None = None,
    ) -> None:
        """Serve `table`; gate every gated verb on `is_ready()`; count in `recorder`."""
        self.recorder = recorder
        self.table = table
        self._verbs = table.verbs
        self._is_ready = is_ready
        self.max_batch = max_batch
        self.batch_concurrency = batch_concurrency

    def decode(self, body: bytes) -> Body:
        """Decode a request body (any thread; never blocks, never raises)."""
        elements, batch = codec.decode(body, self.max_batch)
        return Body(elements, batch, time.monotonic())

    async def handle_body(self, body: bytes, origin: Origin) -> bytes | None:
        """Answer one message body: a request or a batch. None when nothing is owed."""
        return await self.answer(self.decode(body), origin)

    def refuse(self, body: Body, reason: str) -> bytes | None:
        """Answer every request of `body` with code 40 and `reason`, running none.

        For a body the connection cannot take now (its budget is spent): each caller
        hears at once that its request was not run, and may send it again. None when
        nothing is owed (notifications only). Any thread; never raises.
        """
        message = f"{Unavailable.message}: {reason}"
        return codec.encode_responses(
            [
                codec.error(element.id, Unavailable.code, message)
                for element in body.elements
                if not (type(element) is codec.Request and element.notification)
            ]
        )

    async def answer(self, body: Body, origin: Origin) -> bytes | None:
        """Answer a decoded body (loop thread). None when nothing is owed. Never raises.

        Whatever the body holds (lone surrogates, values JSON cannot express), the
        answer can be encoded: see `codec.encode_responses`.
        """
        elements = body.elements
        if len(elements) == 1:
            answer = await self._answer(elements[0], origin, body.received)
            return codec.encode_responses([] if answer is None else [answer])
        answers = await self._answer_batch(elements, origin, body.received)
        return codec.encode_responses([a for a in answers if a is not None])

    async def _answer_batch(
        self, elements: list[codec.Request | codec.Invalid], origin: Origin, received: float
    ) -> list[dict[str, Any] | None]:
        """Answer in order with at most `batch_concurrency` requests in flight.

        The feeder waits for a free slot before starting the next request, so a
        batch of cheap verbs runs `batch_concurrency` of them per loop round.
        """
        answers: list[dict[str, Any] | None] = [None] * len(elements)
        slots = asyncio.Semaphore(self.batch_concurrency)

        async def run(index: int, element: codec.Request | codec.Invalid) -> None:
            try:
                answers[index] = await self._answer(element, origin, received)
            finally:
                slots.release()

        tasks = []
        for index, element in enumerate(elements):
            await slots.acquire()
            tasks.append(asyncio.create_task(run(index, element)))
        await asyncio.gather(*tasks)
        return answers

    async def _answer(
        self, element: codec.Request | codec.Invalid, origin: Origin, received: float
    ) -> dict[str, Any] | None:
        if isinstance(element, codec.Invalid):
            return codec.error(element.id, element.code, element.message)
        try:
            response = await self.call(element, origin, received=received)
        except Exception:  # a bug below; the request is answered all the same
            log.exception("%r from %s: unexpected error", element.method, origin.peer)
            message = codec.standard_message(codec.INTERNAL_ERROR)
            response = codec.error(element.id, codec.INTERNAL_ERROR, message)
        return None if element.notification else response

    async def call(
        self,
        request: codec.Request,
        origin: Origin | None = None,
        *,
        received: float | None = None,
    ) -> dict[str, Any]:
        """Run one request and return its response (loop thread; never raises).

        Its deadline is `received` (default: now) plus the verb's timeout. Past it,
        the request is answered code 40 without running: it is never handed to an
        actor late.
        """
        origin = origin or Origin()
        received = time.monotonic() if received is None else received
        started = self._start(request, origin, received)
        if isinstance(started, dict):
            return self._observed(request, started, received)
        return self._observed(request, await self._settle(request, origin, *started), received)

    def answer_now(self, body: Body, origin: Origin) -> bytes | Coroutine[Any, Any, Any] | None:
        """Answer `body` at once if that needs no waiting (loop thread; never raises).

        A lone request whose handler returns its value (Host.ping, Host.echo, a bad
        request) is answered here, with no task: returns the encoded answer, or None
        when nothing is owed. Otherwise returns the coroutine that finishes the
        answer (awaiting it gives the same as `answer`); the lone request's handler
        has then already been called.
        """
        elements = body.elements
        if len(elements) != 1:
            return self.answer(body, origin)
        element = elements[0]
        if isinstance(element, codec.Invalid):
            return codec.encode_responses([codec.error(element.id, element.code, element.message)])
        try:
            started = self._start(element, origin, body.received)
        except Exception:  # a bug below; the request is answered all the same
            log.exception("%r from %s: unexpected error", element.method, origin.peer)
            message = codec.standard_message(codec.INTERNAL_ERROR)
            started = codec.error(element.id, codec.INTERNAL_ERROR, message)
        if isinstance(started, dict):
            self._observed(element, started, body.received)
            return None if element.notification else codec.encode_responses([started])
        return self._finish(element, origin, started, body.received)

    async def _finish(
        self,
        request: codec.Request,
        origin: Origin,
        started: tuple[Verb, Any, float],
        received: float,
    ) -> bytes | None:
        response = await self._settle(request, origin, *started)
        self._observed(request, response, received)
        return None if request.notification else codec.encode_responses([response])

    def _observed(
        self, request: codec.Request, response: dict[str, Any], received: float
    ) -> dict[str, Any]:
        """Count `response` in the recorder, if any; return it."""
        recorder = self.recorder
        if recorder is not None:
            error = response.get("error")
            code = None if error is None else int(error.get("code", codec.INTERNAL_ERROR))
            recorder.request(request.method, code, time.monotonic() - received)
        return response

    def _start(  # noqa: PLR0911 - one flat path per request (hot); each failure returns
        self, request: codec.Request, origin: Origin, received: float | None
    ) -> dict[str, Any] | tuple[Verb, Any, float]:
        """Run the handler: its response, or (verb, pending value, seconds left).

        Finds the verb, answers 99 while the host recovers, binds the params; any of
        those failing is the response.
        """
        verb = self._verbs.get(request.method)
        if verb is None:
            message = (
                f"The method does not exist or is not available: {{'method': '{request.method}'}}"
            )
            return codec.error(request.id, codec.METHOD_NOT_FOUND, message)
        try:
            if verb.gated and not self._is_ready():
                raise Recovering
            args = verb.bind(request.params)
        except InvalidArgument as error:
            log.info("%s from %s refused: %s", request.method, origin.peer, error)
            return codec.error(request.id, codec.INVALID_PARAMS, error.render())
        except HostvisorError as error:
            return codec.error(request.id, error.code, error.render())
        call = Call(args=args, peer=origin.peer, local=origin.local, flow_id=origin.flow_id)
        left = verb.timeout
        if received is not None:
            left -= time.monotonic() - received
        if left < EXPIRED:
            log.debug("%s from %s expired before it ran", request.method, origin.peer)
            expired = Timeout(method=request.method, timeout=verb.timeout)
            return codec.error(request.id, expired.code, expired.render())
        try:
            value = verb.handler(call)
        except HostvisorError as error:
            return self._failed(request, origin, error)
        except Exception:
            log.exception("%s from %s: unexpected error", request.method, origin.peer)
            message = codec.standard_message(codec.INTERNAL_ERROR)
            return codec.error(request.id, codec.INTERNAL_ERROR, message)
        if type(value) not in _PLAIN and (
            isinstance(value, pykka.Future) or inspect.isawaitable(value)
        ):
            return verb, value, left
        return codec.result(request.id, True if value is None else value)

    async def _settle(
        self, request: codec.Request, origin: Origin, verb: Verb, value: Any, left: float
    ) -> dict[str, Any]:
        """Wait at most `left` seconds for a handler's pending value; its response."""
        try:
            if isinstance(value, pykka.Future):
                value = await settled(value, timeout=left)
            else:
                value = await asyncio.wait_for(value, timeout=left)
        except TimeoutError:
            return self._failed(
                request, origin, Timeout(method=request.method, timeout=verb.timeout)
            )
        except HostvisorError as error:
            return self._failed(request, origin, error)
        except Exception:
            log.exception("%s from %s: unexpected error", request.method, origin.peer)
            message = codec.standard_message(codec.INTERNAL_ERROR)
            return codec.error(request.id, codec.INTERNAL_ERROR, message)
        return codec.result(request.id, True if value is None else value)

    @staticmethod
    def _failed(request: codec.Request, origin: Origin, error: HostvisorError) -> dict[str, Any]:
        level = logging.INFO if isinstance(error, CallerError) else logging.WARNING
        log.log(level, "%s from %s failed: %s", request.method, origin.peer, error)
        return codec.error(request.id, error.code, error.render())


_PLAIN = frozenset({bool, dict, list, str, int, float, type(None)})
"""Types a handler's value may have that are never pending (checked first: cheaper)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request body came from."""

    peer: str = ""
    local: str = ""
    flow_id: str | None = None
