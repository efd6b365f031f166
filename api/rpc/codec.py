r"""JSON-RPC 2.0 messages in VDSM's dialect (reference/vdsm-wire.md §1.3, §2).

A body is one request object or a batch (an array). A request without `id` is a
notification and gets no reply. A single response goes out as an object, never a
one-element array (VDSM's STOMP server cannot send arrays, and clients expect an
object even for their one-element batch). The request id is echoed wherever it
can be read, since the Engine's client mishandles errors with `id: null`.

Limits: a batch holds at most `MAX_BATCH` (1,000) requests; a larger one is
answered with one -32600 error naming the cap (VDSM sets no explicit cap; its
whole body is bounded only by the frame size). Any text round-trips, lone
surrogates (a `\ud800` escape, which JSON allows) included: the encoder
falls back to ASCII escapes for them instead of failing, so every request can be
answered whatever it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import ujson

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal JSON-RPC error",
}

MAX_BATCH = 1000
"""The most requests one body (a batch) may hold."""

RequestId = str | int | None


class Request(NamedTuple):
    """One decoded call. `params` is a dict (by name) or a list (by position).

    A named tuple rather than a frozen dataclass: one is made per request, and a
    tuple is made several times faster.
    """

    method: str
    params: Mapping[str, Any] | list[Any]
    id: RequestId
    notification: bool = False


@dataclass(frozen=True, slots=True)
class Invalid:
    """An element of the body that is not a valid request; answered with an error."""

    id: RequestId
    code: int
    message: str


def decode(body: bytes, max_batch: int = MAX_BATCH) -> tuple[list[Request | Invalid], bool]:
    """Decode a request body into requests and invalid elements. Never raises.

    A batch of more than `max_batch` requests becomes one `Invalid` (-32600)
    naming the cap: nothing of it is run.

    Returns:
        The elements in order, and whether the body was a batch (an array).
    """
    try:
        document = ujson.loads(body)
    except JSON_ERRORS:
        return [Invalid(None, PARSE_ERROR, _MESSAGES[PARSE_ERROR])], False
    return from_document(document, max_batch)


def decode_one(
    body: bytes, max_batch: int = MAX_BATCH
) -> Request | tuple[list[Request | Invalid], bool]:
    """Decode a body: the request itself when it is one valid request, else as `decode`.

    The quick path for the usual body (one request): no list is made for it. Never raises.
    """
    try:
        document = ujson.loads(body)
    except JSON_ERRORS:
        return decode(body, max_batch)  # its parse error
    if type(document) is dict:
        item = element(document)
        if type(item) is Request:
            return item
        invalid: list[Request | Invalid] = [item]
        return invalid, False
    return from_document(document, max_batch)


JSON_ERRORS = (ValueError, UnicodeDecodeError, RecursionError, OverflowError)
"""What `ujson.loads` raises for a body that is not JSON."""


def from_document(
    document: Any, max_batch: int = MAX_BATCH
) -> tuple[list[Request | Invalid], bool]:
    """Like `decode`, for a body already parsed as JSON. Never raises."""
    if isinstance(document, list):
        if not document:
            return [Invalid(None, INVALID_REQUEST, _MESSAGES[INVALID_REQUEST])], True
        if len(document) > max_batch:
            message = (
                f"{_MESSAGES[INVALID_REQUEST]}: a batch holds at most {max_batch} requests "
                f"(this one has {len(document)})"
            )
            return [Invalid(None, INVALID_REQUEST, message)], True
        return [element(item) for item in document], True
    return [element(document)], False


def element(item: Any) -> Request | Invalid:
    """Return one element of a body (parsed JSON) as a request, or why it is invalid."""
    # ujson makes plain dicts, lists, strs and ints (and bools, which are no ids):
    # exact type checks are the isinstance checks here, and cheaper (one per request).
    if type(item) is not dict:
        return Invalid(None, INVALID_REQUEST, _MESSAGES[INVALID_REQUEST])
    request_id = item.get("id", _ABSENT)
    notification = request_id is _ABSENT
    kind = type(request_id)
    if kind is not str and kind is not int:  # a bool, float, array, object, null or none
        request_id = None
    method = item.get("method")
    if type(method) is not str or not method or item.get("jsonrpc") != "2.0":
        return Invalid(request_id, INVALID_REQUEST, _MESSAGES[INVALID_REQUEST])
    params = item.get("params")
    if params is None:
        params = {}
    elif type(params) is not dict and type(params) is not list:
        return Invalid(request_id, INVALID_PARAMS, "params must be an object or an array")
    return Request(method, params, request_id, notification)


_ABSENT: Any = object()


def result(request_id: RequestId, value: Any) -> dict[str, Any]:
    """Return a success response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: RequestId, code: int, message: str) -> dict[str, Any]:
    """Return an error response."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def standard_message(code: int) -> str:
    """Return JSON-RPC's message for one of its own codes."""
    return _MESSAGES[code]


def notification(method: str, params: Mapping[str, Any]) -> bytes:
    """Encode an event: a request without id."""
    return dumps({"jsonrpc": "2.0", "method": method, "params": params})


def encode_responses(responses: list[dict[str, Any]]) -> bytes | None:
    """Encode what goes back for one body: nothing, one object, or an array. Never raises.

    A response that cannot be encoded (a handler returned something JSON cannot
    express: a bug) is replaced by -32603 for its id and logged with its traceback;
    the rest of the batch goes out as it is.
    """
    if not responses:
        return None
    document: Any = responses[0] if len(responses) == 1 else responses
    try:
        return dumps(document)
    except (TypeError, ValueError, OverflowError):
        safe = [_encodable(response) for response in responses]
        return dumps(safe[0] if len(safe) == 1 else safe)


def encode_response(response: dict[str, Any]) -> bytes:
    """Encode the one response to a lone request. Never raises (see `encode_responses`).

    A `true` result (most verbs' answer) is written around its encoded id: the same
    bytes as `dumps`, for less work.
    """
    if response.get("result") is True:
        request_id = ujson.dumps(response["id"])  # ASCII, "/" escaped: plain when no "\\"
        if "\\" not in request_id:
            return TRUE_RESULT % request_id.encode()
    try:
        return dumps(response)
    except (TypeError, ValueError, OverflowError):
        return dumps(_encodable(response))


TRUE_RESULT = b'{"jsonrpc":"2.0","id":%s,"result":true}'
"""A `true` result, but for its id: `%` an encoded id without escapes into it."""


def _encodable(response: dict[str, Any]) -> dict[str, Any]:
    try:
        dumps(response)
    except (TypeError, ValueError, OverflowError):
        request_id = response.get("id")
        log.exception("the response to request %r cannot be encoded", request_id)
        return error(request_id, INTERNAL_ERROR, _MESSAGES[INTERNAL_ERROR])
    return response


def dumps(document: Any) -> bytes:
    """Encode compactly as UTF-8 JSON.

    Text that UTF-8 cannot hold (a lone surrogate, as a peer may send in an escape)
    is written as JSON unicode escapes instead: the whole document then goes
    out ASCII-escaped, which every JSON parser reads back to the same text.

    Raises:
        TypeError, OverflowError: `document` holds something JSON cannot express.
    """
    try:
        return ujson.dumps(document, ensure_ascii=False, escape_forward_slashes=False).encode()
    except UnicodeEncodeError:
        return ujson.dumps(document, ensure_ascii=True, escape_forward_slashes=False).encode()
