"""A small, strict HTTP/1.1 request-head parser and the responses of the image server.

Only what the Engine's image transfers need (RFC 9112's message syntax, no more):
a request line in origin form, CRLF-terminated header fields, a body framed by
Content-Length. Everything else is refused with a clear status before any body
is read, and the connection is then closed:

    400  bad syntax: a malformed request line or field, a bare LF, obs-fold, a
         field name with a space before the colon, a duplicate framing or id field
    413  a Content-Length above `Limits.max_body`
    414  a request line longer than `Limits.max_line`
    431  a head larger than `Limits.max_head` or with more than `Limits.max_fields`
    505  a version other than HTTP/1.0 and HTTP/1.1

Threads: everything runs on the API's loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

CRLF: Final = b"\r\n"
END_OF_HEAD: Final = b"\r\n\r\n"
GENERAL_ERROR: Final = 100
"""VDSM's code for an error with no code of its own (JSON error bodies)."""
INVALID_PARAMETER: Final = 91

_METHOD: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN: Final = _METHOD
_TARGET: Final = re.compile(r"/[!-~]*")
_VERSION: Final = re.compile(r"HTTP/(\d)\.(\d)")
_BAD_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
UNIQUE_FIELDS: Final = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "range",
        "storage-pool-id",
        "storage-domain-id",
        "image-id",
        "volume-id",
    }
)
"""Fields that may appear once: two values would make the request ambiguous."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may send before the server refuses it."""

    max_line: int = 8 * 1024
    """Bytes of the request line, CRLF excluded."""
    max_head: int = 64 * 1024
    """Bytes of the whole head (request line and fields)."""
    max_fields: int = 100
    """Header fields."""
    max_body: int = 8 * 1024**3
    """Bytes of a request body (a volume's data; a write past its capacity is refused too)."""
    head_timeout: float = 60.0
    """Seconds a request head has to arrive once its first byte has (VDSM: 60 s)."""
    idle_timeout: float = 60.0
    """Seconds a kept-alive connection may wait for its next request (VDSM: 60 s)."""


class HttpError(Exception):
    """A request the server refuses; the answer says why.

    Attributes:
        status: the HTTP status.
        text: what was wrong, for the peer and the log.
        code: VDSM's error code for the JSON body.
        headers: extra response fields.
    """

    def __init__(
        self,
        status: HTTPStatus,
        text: str,
        *,
        code: int = GENERAL_ERROR,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Describe the refusal."""
        super().__init__(f"{int(status)} {text}")
        self.status = status
        self.text = text
        self.code = code
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head. Field names are lower case; values stripped."""

    method: str
    target: str
    version: tuple[int, int]
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        """The field `name` (any case), or None."""
        return self.fields.get(name.lower())

    @property
    def keep_alive(self) -> bool:
        """Whether the peer lets the connection carry another request after this one."""
        tokens = {t.strip().lower() for t in self.fields.get("connection", "").split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens

    @property
    def expects_continue(self) -> bool:
        """Whether the peer waits for "100 Continue" before sending its body."""
        return self.version >= (1, 1) and self.get("expect") == "100-continue"


async def read_head(
    reader: asyncio.StreamReader, buffer: bytearray, limits: Limits
) -> Request | None:
    """Read one request head, taking bytes from `buffer` first; leave the rest there.

    Waits `limits.idle_timeout` for a first byte and `limits.head_timeout` for the
    rest. Returns None when the peer closed (or stayed idle) between requests.

    Raises:
        HttpError: the head is malformed, too large or incomplete in time.
    """
    if not buffer:
        try:
            async with asyncio.timeout(limits.idle_timeout):
                chunk = await reader.read(65536)
        except TimeoutError:
            return None
        if not chunk:
            return None
        buffer += chunk
    try:
        async with asyncio.timeout(limits.head_timeout):
            end = await _find_end(reader, buffer, limits)
    except TimeoutError:
        raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "the request head is incomplete") from None
    head = bytes(buffer[:end])
    del buffer[: end + len(END_OF_HEAD)]
    return parse_head(head, limits)


async def _find_end(reader: asyncio.StreamReader, buffer: bytearray, limits: Limits) -> int:
    while True:
        end = buffer.find(END_OF_HEAD)
        line_end = buffer.find(CRLF)
        first_line = len(buffer) if line_end < 0 else line_end
        if first_line > limits.max_line:
            raise HttpError(HTTPStatus.REQUEST_URI_TOO_LONG, "the request line is too long")
        if end >= 0:
            if end + len(END_OF_HEAD) > limits.max_head:
                raise _head_too_large(limits)
            return end
        if len(buffer) > limits.max_head:
            raise _head_too_large(limits)
        if _BARE_LF.search(buffer):
            raise HttpError(HTTPStatus.BAD_REQUEST, "lines must end with CRLF")
        chunk = await reader.read(65536)
        if not chunk:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the connection ended inside the head")
        buffer += chunk


def _head_too_large(limits: Limits) -> HttpError:
    return HttpError(
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        f"the request head passes {limits.max_head} bytes",
    )


def parse_head(head: bytes, limits: Limits) -> Request:
    """Parse a request head (without its final empty line).

    Raises:
        HttpError: malformed (400), too many fields (431), or a version not served (505).
    """
    text = head.decode("latin-1")
    if "\n" in text.replace("\r\n", ""):
        raise HttpError(HTTPStatus.BAD_REQUEST, "lines must end with CRLF")
    line, *lines = text.split("\r\n")
    method, target, version = _request_line(line)
    if len(lines) > limits.max_fields:
        raise HttpError(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"more than {limits.max_fields} header fields",
        )
    fields: dict[str, str] = {}
    for raw in lines:
        name, value = _field(raw)
        if name in fields:
            if name in UNIQUE_FIELDS:
                raise HttpError(HTTPStatus.BAD_REQUEST, f"the field {name} appears twice")
            fields[name] = f"{fields[name]}, {value}"
        else:
            fields[name] = value
    return Request(method, target, version, fields)


def _request_line(line: str) -> tuple[str, str, tuple[int, int]]:
    parts = line.split(" ")
    if len(parts) != 3:  # noqa: PLR2004 - method, target, version
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not _METHOD.fullmatch(method):
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed method")
    if not _TARGET.fullmatch(target):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the target must be a path (origin form)")
    matched = _VERSION.fullmatch(version)
    if matched is None:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    numbers = (int(matched.group(1)), int(matched.group(2)))
    if numbers not in ((1, 0), (1, 1)):
        raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and HTTP/1.1")
    return method, target, numbers


def _field(raw: str) -> tuple[str, str]:
    if raw[:1] in (" ", "\t"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "folded header lines are not accepted")
    name, colon, value = raw.partition(":")
    if not colon or not _TOKEN.fullmatch(name):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed header field {raw[:40]!r}")
    value = value.strip(" \t")
    if _BAD_VALUE.search(value):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"control character in the field {name}")
    return name.lower(), value


def content_length(request: Request, limits: Limits) -> int:
    """The body's length, which a PUT must state (VDSM: 411 without it).

    Raises:
        HttpError: 411 (no Content-Length; chunked bodies are not served), 400 (not a
            decimal number, or framed both ways), 413 (above `limits.max_body`).
    """
    coding = request.get("transfer-encoding")
    value = request.get("content-length")
    if coding is not None:
        if value is not None:
            raise HttpError(HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length")
        raise HttpError(
            HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required (no chunked bodies)"
        )
    if value is None or value == "":
        raise HttpError(HTTPStatus.LENGTH_REQUIRED, "missing header Content-Length")
    if not value.isdigit() or not value.isascii() or len(value) > 19:  # noqa: PLR2004
        raise HttpError(HTTPStatus.BAD_REQUEST, f"not a length: {value[:40]!r}")
    length = int(value)
    if length > limits.max_body:
        raise HttpError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body passes {limits.max_body} bytes"
        )
    return length


_RANGE: Final = re.compile(r"bytes=(\d{1,19})-(\d{1,19})")


def byte_range(request: Request) -> tuple[int, int]:
    """The (offset, length) a GET's Range asks for: one "bytes=first-last" range.

    The Engine always sends "bytes=0-<size - 1>"; VDSM serves only that form and
    answers 400 to anything else, as this does (with any first byte allowed).

    Raises:
        HttpError: 400, no Range, or not one closed byte range.
    """
    value = request.get("range")
    if not value:
        raise HttpError(HTTPStatus.BAD_REQUEST, "missing header Range", code=INVALID_PARAMETER)
    matched = _RANGE.fullmatch(value)
    if matched is None:
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            f"unsupported Range {value[:40]!r}; expected bytes=first-last",
            code=INVALID_PARAMETER,
        )
    first, last = int(matched.group(1)), int(matched.group(2))
    if last < first:
        raise HttpError(HTTPStatus.BAD_REQUEST, "the range ends before it starts")
    return first, last - first + 1


def response(
    status: HTTPStatus,
    fields: list[tuple[str, str]],
    *,
    length: int = 0,
    close: bool = False,
) -> bytes:
    """A response head: status line, `fields`, Content-Length and Connection."""
    lines = [f"HTTP/1.1 {int(status)} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in fields]
    lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(error: HttpError) -> bytes:
    """A whole error response, always closing the connection.

    The body is VDSM's status JSON, which the Engine parses from any failed
    transfer (HttpImageTaskVDSCommand: `Content-Type: application/json`, then
    `{"status": {"code", "message"}}`).
    """
    body = json.dumps({"status": {"code": error.code, "message": error.text}}).encode()
    fields = [("Content-Type", "application/json"), *error.headers]
    return response(error.status, fields, length=len(body), close=True) + body
