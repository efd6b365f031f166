"""JSON-RPC 2.0 messages in VDSM's dialect (reference/vdsm-wire.md §1.3, §2).

A body is one request object or a batch (an array). A request without `id` is a
notification and gets no reply. A single response goes out as an object, never a
one-element array (VDSM's STOMP server cannot send arrays, and clients expect an
object even for their one-element batch). The request id is echoed wherever it
can be read, since the Engine's client mishandles errors with `id: null`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ujson

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

RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded call. `params` is a dict (by name) or a list (by position)."""

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


def decode(body: bytes) -> tuple[list[Request | Invalid], bool]:
    """Decode a request body into requests and invalid elements.

    Returns:
        The elements in order, and whether the body was a batch (an array).
    """
    try:
        document = ujson.loads(body)
    except (ValueError, UnicodeDecodeError):
        return [Invalid(None, PARSE_ERROR, _MESSAGES[PARSE_ERROR])], False
    if isinstance(document, list):
        if not document:
            return [Invalid(None, INVALID_REQUEST, _MESSAGES[INVALID_REQUEST])], True
        return [_element(item) for item in document], True
    return [_element(document)], False


def _element(item: Any) -> Request | Invalid:
    if not isinstance(item, dict):
        return Invalid(None, INVALID_REQUEST, _MESSAGES[INVALID_REQUEST])
    request_id = item.get("id")
    if not isinstance(request_id, str | int | type(None)) or isinstance(request_id, bool):
        request_id = None
    method = item.get("method")
    if item.get("jsonrpc") != "2.0" or not isinstance(method, str) or not method:
        return Invalid(request_id, INVALID_REQUEST, _MESSAGES[INVALID_REQUEST])
    params = item.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict | list):
        return Invalid(request_id, INVALID_PARAMS, "params must be an object or an array")
    return Request(method, params, request_id, notification="id" not in item)


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
    """Encode what goes back for one body: nothing, one object, or an array."""
    if not responses:
        return None
    if len(responses) == 1:
        return dumps(responses[0])
    return dumps(responses)


def dumps(document: Any) -> bytes:
    """Encode compactly as UTF-8 JSON."""
    return ujson.dumps(document, ensure_ascii=False, escape_forward_slashes=False).encode()
