"""The dispatcher: from a decoded request to its response, on the API's event loop.

It looks the verb up, answers 99 while the host recovers, binds the params, runs
the handler and waits for its answer at most the verb's timeout. A handler hands
the work to the owning actor by message (an ask) and returns the future; nothing
here blocks the loop. This is the one place where errors become JSON-RPC errors:
a `HostvisorError` becomes its VDSM code and message; anything else is a bug,
logged with its traceback and answered -32603 with no detail on the wire.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.errors import (
    CallerError,
    HostvisorError,
    InvalidArgument,
    Recovering,
    Timeout,
)
from hostvisor.api.rpc import codec
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.verbs import Call, Verb, VerbTable

log = logging.getLogger(__name__)


class Dispatcher:
    """Serves the verbs of `table`. Its coroutines run on one asyncio loop."""

    def __init__(self, table: VerbTable, *, is_ready: Callable[[], bool]) -> None:
        """Serve `table`; gate every gated verb on `is_ready()`."""
        self.table = table
        self._is_ready = is_ready

    async def handle_body(self, body: bytes, origin: Origin) -> bytes | None:
        """Answer one message body: a request or a batch. None when nothing is owed."""
        elements, _batch = codec.decode(body)
        if len(elements) == 1:
            answer = await self._answer(elements[0], origin)
            return codec.encode_responses([] if answer is None else [answer])
        answers = await asyncio.gather(*(self._answer(element, origin) for element in elements))
        return codec.encode_responses([a for a in answers if a is not None])

    async def _answer(
        self, element: codec.Request | codec.Invalid, origin: Origin
    ) -> dict[str, Any] | None:
        if isinstance(element, codec.Invalid):
            return codec.error(element.id, element.code, element.message)
        response = await self.call(element, origin)
        return None if element.notification else response

    async def call(self, request: codec.Request, origin: Origin | None = None) -> dict[str, Any]:
        """Run one request and return its response."""
        origin = origin or Origin()
        prepared = self._prepare(request, origin)
        if isinstance(prepared, dict):
            return prepared
        verb, call = prepared
        try:
            value = verb.handler(call)
            if _pending(value):
                value = await asyncio.wait_for(_awaitable(value), timeout=verb.timeout)
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

    def _prepare(
        self, request: codec.Request, origin: Origin
    ) -> tuple[Verb, Call] | dict[str, Any]:
        """Find the verb and bind its params; or return the error response."""
        verb = self.table.get(request.method)
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
        return verb, Call(args=args, peer=origin.peer, local=origin.local, flow_id=origin.flow_id)

    @staticmethod
    def _failed(request: codec.Request, origin: Origin, error: HostvisorError) -> dict[str, Any]:
        level = logging.INFO if isinstance(error, CallerError) else logging.WARNING
        log.log(level, "%s from %s failed: %s", request.method, origin.peer, error)
        return codec.error(request.id, error.code, error.render())


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request body came from."""

    peer: str = ""
    local: str = ""
    flow_id: str | None = None


def _pending(value: Any) -> bool:
    return inspect.isawaitable(value) or isinstance(value, pykka.Future)


def _awaitable(value: Any) -> Any:
    """Turn a handler's pending value into something to await.

    A pykka future is awaitable too, but awaiting it blocks the thread in `get()`:
    it must be bridged, and is checked first.
    """
    if isinstance(value, pykka.Future):
        return settled(value)
    return value
