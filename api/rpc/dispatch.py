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
other body becomes one task. `quick` does the same from the body's bytes for the
connection's quick path, checking the usual request (an id, params by name) in
fewer steps, and calling a verb without params (Host.ping) with the origin's
ready-made `Call`; `plain` and `run_plain` serve its templates (a body seen
before but for its id: a verb without params called with no JSON parsed);
`tests/api/stomp/test_quick_path.py` holds both to `answer`'s bytes.
An actor's answer is awaited through one loop future with its own timer
(`bridge.settled`), not `asyncio.wait_for` around it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import pykka
import ujson

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
TEMPLATE_TIMEOUT = 1.0
"""A verb with a shorter timeout (seconds) is never a template's: `run_plain` does not
check the deadline of a request received just before."""


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
        return self._lone(element, origin, body.received)

    def quick(
        self, raw: bytes, origin: Origin, received: float
    ) -> bytes | Body | Coroutine[Any, Any, bytes | None] | None:
        """Decode a body and, when it is one valid request, start it (loop thread).

        The connection's path for the usual SEND, which must have room for one more
        request in its budget. Returns, for one valid request, what `answer_now`
        returns (its encoded answer; None when nothing is owed; or the coroutine
        that finishes it); for anything else (a batch, an invalid body) the decoded
        `Body`, nothing of it run yet: the caller charges and answers it as any
        other. `received` is when the body arrived (`time.monotonic()`). Never raises.
        """
        try:
            document = ujson.loads(raw)
        except codec.JSON_ERRORS:
            return Body(*codec.decode(raw, self.max_batch), received)  # its parse error
        if type(document) is not dict:
            return Body(*codec.from_document(document, self.max_batch), received)
        request_id = document.get("id")
        method = document.get("method")
        params = document.get("params")
        if (
            type(request_id) is str
            and type(method) is str
            and type(params) is dict
            and method
            and document.get("jsonrpc") == "2.0"
        ):  # the usual request: what `codec.element` makes of it, for fewer checks
            verb = self._verbs.get(method)
            if (
                verb is not None
                and not params
                and not verb.params
                and (not verb.gated or self._is_ready())
            ):  # the usual call of a verb without params (Host.ping): `_start`, inlined
                return self._call_plain(method, request_id, origin, verb, received)
            request = codec.Request(method, params, request_id, False)  # noqa: FBT003 - hot
        else:
            element = codec.element(document)
            if type(element) is not codec.Request:
                return Body([element], batch=False, received=received)
            request = element
        return self._lone(request, origin, received)

    def _call_plain(
        self, method: str, request_id: str, origin: Origin, verb: Verb, received: float
    ) -> bytes | Coroutine[Any, Any, bytes | None]:
        """Answer a call of a verb that takes no params, sent none (`_start`, inlined).

        For a request with an id, to a verb not gated now: the same answer as
        `_start` then `_lone` give, with fewer steps (Host.ping's path).
        """
        left = verb.timeout - (time.monotonic() - received)
        if left < EXPIRED:
            log.debug("%s from %s expired before it ran", method, origin.peer)
            expired = Timeout(method=method, timeout=verb.timeout)
            return self._respond(
                method, codec.error(request_id, expired.code, expired.render()), received
            )
        try:
            value = verb.handler(origin.bare)
        except Exception as error:  # noqa: BLE001 - answered as `_start` answers it
            return self._plain_failed(method, request_id, origin, error, received)
        if value is True or value is None:
            encoded = ujson.dumps(request_id)  # as `codec.encode_response` does
            if "\\" not in encoded:
                if self.recorder is not None:
                    self.recorder.request(method, None, time.monotonic() - received)
                return codec.TRUE_RESULT % encoded.encode()
        return self._plain_value(method, request_id, origin, verb, value, left, received)

    def plain(  # noqa: PLR0911 - each refusal returns
        self, raw: bytes, origin: Origin
    ) -> tuple[Plain, int, int] | None:
        """Whether body `raw` can be a template: its call, and where its id is in it.

        A template (the connection's quick path) is a body that calls a verb taking
        no params, with none, with a string id of ASCII letters, digits and `-`
        found, in quotes, from the first to the second index returned: any body
        that differs from it only in an id of that length and those characters
        there is the same request with that id (checked here with a second id).
        None for any other body. Decodes, never runs anything. Loop thread; never
        raises.
        """
        try:
            document = ujson.loads(raw)
        except codec.JSON_ERRORS:
            return None
        if type(document) is not dict:
            return None
        request_id, method, params = (document.get(k) for k in ("id", "method", "params"))
        if not (
            type(request_id) is str
            and type(method) is str
            and method
            and type(params) is dict
            and not params
            and document.get("jsonrpc") == "2.0"
        ):
            return None
        verb = self._verbs.get(method)
        if (
            verb is None
            or verb.params
            or verb.timeout < TEMPLATE_TIMEOUT
            or not request_id.isascii()  # (a lone surrogate...)
        ):
            return None
        token = request_id.encode()
        if not token.replace(b"-", b"").isalnum():
            return None
        at = raw.rfind(b'"%s"' % token) + 1
        if at == 0:
            return None
        end = at + len(token)
        probe = bytes(_ZERO if c != _ZERO else _ONE for c in token)  # differs at every byte
        try:
            again = ujson.loads(raw[:at] + probe + raw[end:])
        except codec.JSON_ERRORS:
            return None
        if again != {**document, "id": probe.decode()}:
            return None
        call = getattr(verb.handler, "plain", None) or functools.partial(verb.handler, origin.bare)
        return Plain(method, verb, call, origin), at, end

    def run_plain(
        self, plain: Plain, token: bytes, received: float
    ) -> bool | bytes | Coroutine[Any, Any, bytes | None] | None:
        """Answer a template's call with request id `token` (see `plain`; loop thread).

        Returns True when the answer is `true` (`codec.TRUE_RESULT` around the id,
        which the caller frames itself); else what `quick` returns for the same
        body. `received` must be now: the request's deadline is not checked (a
        template's verb has time). Never raises.
        """
        if plain.verb.gated and not self._is_ready():
            request = codec.Request(plain.method, {}, token.decode(), False)  # noqa: FBT003
            return self._lone(request, plain.origin, received)  # answers 99 as it should
        try:
            value = plain.call()
        except Exception as error:  # noqa: BLE001 - answered as `_start` answers it
            return self._plain_failed(plain.method, token.decode(), plain.origin, error, received)
        if value is True or value is None:
            if self.recorder is not None:
                self.recorder.request(plain.method, None, time.monotonic() - received)
            return True
        left = plain.verb.timeout - (time.monotonic() - received)
        return self._plain_value(
            plain.method, token.decode(), plain.origin, plain.verb, value, left, received
        )

    def _plain_failed(
        self, method: str, request_id: str, origin: Origin, error: Exception, received: float
    ) -> bytes:
        """The answer to a call without params whose handler raised `error`."""
        if isinstance(error, HostvisorError):
            request = codec.Request(method, {}, request_id, False)  # noqa: FBT003
            response = self._failed(request, origin, error)
        else:
            log.error("%s from %s: unexpected error", method, origin.peer, exc_info=error)
            message = codec.standard_message(codec.INTERNAL_ERROR)
            response = codec.error(request_id, codec.INTERNAL_ERROR, message)
        return self._respond(method, response, received)

    def _plain_value(  # noqa: PLR0913, PLR0917 - the call's parts, hot
        self,
        method: str,
        request_id: str,
        origin: Origin,
        verb: Verb,
        value: Any,
        left: float,
        received: float,
    ) -> bytes | Coroutine[Any, Any, bytes | None]:
        """The answer to a call without params whose handler returned `value`."""
        if type(value) not in _PLAIN and (
            isinstance(value, pykka.Future) or inspect.isawaitable(value)
        ):
            request = codec.Request(method, {}, request_id, False)  # noqa: FBT003
            return self._finish(request, origin, (verb, value, left), received)
        result = True if value is None else value
        return self._respond(
            method, {"jsonrpc": "2.0", "id": request_id, "result": result}, received
        )

    def _respond(self, method: str, response: dict[str, Any], received: float) -> bytes:
        """Count `response` to a request of `method` in the recorder, if any; encode it."""
        if self.recorder is not None:
            failure = response.get("error")
            code = None if failure is None else int(failure.get("code", codec.INTERNAL_ERROR))
            self.recorder.request(method, code, time.monotonic() - received)
        return codec.encode_response(response)

    def _lone(
        self, request: codec.Request, origin: Origin, received: float
    ) -> bytes | Coroutine[Any, Any, bytes | None] | None:
        """Answer one request now if that needs no waiting (see `answer_now`)."""
        try:
            started = self._start(request, origin, received)
        except Exception:  # a bug below; the request is answered all the same
            log.exception("%r from %s: unexpected error", request.method, origin.peer)
            message = codec.standard_message(codec.INTERNAL_ERROR)
            started = codec.error(request.id, codec.INTERNAL_ERROR, message)
        if type(started) is dict:
            if self.recorder is not None:
                self._observed(request, started, received)
            return None if request.notification else codec.encode_response(started)
        return self._finish(request, origin, started, received)  # type: ignore[arg-type]

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

    def _start(  # noqa: C901, PLR0911 - one flat path per request (hot); each failure returns
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
        params = request.params
        try:
            if verb.gated and not self._is_ready():
                raise Recovering
            # A verb of no params called with none (Host.ping) gets the origin's call
            # with no arguments, made once: what binding {} would give.
            args = None if not params and not verb.params else verb.bind(params)
        except InvalidArgument as error:
            log.info("%s from %s refused: %s", request.method, origin.peer, error)
            return codec.error(request.id, codec.INVALID_PARAMS, error.render())
        except HostvisorError as error:
            return codec.error(request.id, error.code, error.render())
        if args is None:
            call = origin.bare
        else:
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
        return {"jsonrpc": "2.0", "id": request.id, "result": True if value is None else value}

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


_ZERO, _ONE = b"01"
"""The bytes of a probe id (see `Dispatcher.plain`)."""

_PLAIN = frozenset({bool, dict, list, str, int, float, type(None)})
"""Types a handler's value may have that are never pending (checked first: cheaper)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request body came from."""

    peer: str = ""
    local: str = ""
    flow_id: str | None = None
    bare: Call = field(init=False, repr=False, compare=False)
    """A call from here with no arguments: made once, for every call of a verb that
    takes none."""

    def __post_init__(self) -> None:
        """Make `bare` (frozen: set as dataclasses do)."""
        bare = Call(args=_NO_ARGS, peer=self.peer, local=self.local, flow_id=self.flow_id)
        object.__setattr__(self, "bare", bare)


_NO_ARGS: Mapping[str, Any] = MappingProxyType({})


class Plain(NamedTuple):
    """A call of a verb without params from one origin, made once, run per request.

    Attributes:
        method: the verb's method name.
        verb: the verb.
        call: calls its handler with no arguments (or the origin's `bare` call).
        origin: where its requests come from.
    """

    method: str
    verb: Verb
    call: Callable[[], Any]
    origin: Origin
