r"""STOMP 1.2 frames: an incremental parser with limits, and an encoder.

The dialect is VDSM's (reference/vdsm-wire.md §1.2): `COMMAND\n`, `key:value\n`
headers, a blank line, the body and a NUL. A trailing `\r` on a line is tolerated;
empty lines between frames are heart-beats. With `content-length` exactly that many
body bytes are read and the next byte must be NUL; without it the body runs to the
first NUL. Header values use STOMP 1.2 escapes (except in CONNECT and CONNECTED);
a repeated header keeps its first value. Every frame we send carries
`content-length`, because the Engine's parser depends on it.

The connection's quick path (`quick.py`) takes the usual frame without the parser,
only ever as the parser would.

Plain code, no I/O: the server feeds bytes in and writes bytes out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

NUL = b"\x00"
EOL = b"\n"

CLIENT_COMMANDS = frozenset({"CONNECT", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "DISCONNECT"})
"""The commands the server accepts; any other command closes the connection."""
DETECT_PREFIXES = (
    b"CONNECT",
    b"SEND",
    b"SUBSCRIBE",
    b"UNSUBSCRIBE",
    b"DISCONNECT",
    b"MESSAGE",
    b"CONNECTED",
    b"ERROR",
    b"RECEIPT",
)
"""What VDSM's protocol detector takes for STOMP (the bare `STOMP` command is not)."""
DETECT_BYTES = max(len(prefix) for prefix in DETECT_PREFIXES)

_UNESCAPE = {b"\\\\": b"\\", b"\\n": b"\n", b"\\r": b"\r", b"\\c": b":"}
_RAW_COMMANDS = frozenset({"CONNECT", "CONNECTED"})
MAX_LENGTH_DIGITS = 12
_SMALL_BODY = 4096
"""Bodies shorter than this are copied out of the buffer without a memoryview."""


class FrameError(Exception):
    """The peer sent something that is not a STOMP frame we accept.

    Attributes:
        reason: what was wrong, safe to send back in an ERROR frame.
    """

    def __init__(self, reason: str) -> None:
        """Describe what was wrong."""
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may send; past any of them the frame is refused."""

    max_body: int = 16 * 1024 * 1024
    max_headers: int = 64
    max_header_line: int = 8192
    max_command: int = 32


class Frame(NamedTuple):
    """One STOMP frame. Header names and values are decoded text.

    A named tuple rather than a frozen dataclass: one is made per frame received,
    and a tuple is made several times faster.
    """

    command: str
    headers: Mapping[str, str] = MappingProxyType({})
    body: bytes = b""


def looks_like_stomp(prefix: bytes) -> bool:
    """Return whether the first bytes of a connection start a STOMP frame.

    Call it once `DETECT_BYTES` bytes or a whole first line have arrived.
    """
    return prefix.startswith(DETECT_PREFIXES)


def _unescape(raw: bytes) -> str:
    if b"\\" not in raw:
        return raw.decode()
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\":
            pair = raw[i : i + 2]
            if pair not in _UNESCAPE:
                raise FrameError(f"bad escape {pair!r} in header")
            out += _UNESCAPE[pair]
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return out.decode()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(":", "\\c")


def encode(command: str, headers: Mapping[str, str] | None = None, body: bytes = b"") -> bytes:
    """Return the bytes of one frame, with `content-length` always set."""
    return b"%scontent-length:%d\n\n%s\x00" % (encode_head(command, headers), len(body), body)


def encode_head(command: str, headers: Mapping[str, str] | None = None) -> bytes:
    """Return the start of a frame: its command and headers, up to `content-length`.

    `encode` is this, then `content-length:N`, a blank line, the body and a NUL; a
    sender of many frames with the same headers keeps the head.
    """
    lines = [command]
    escape = command not in _RAW_COMMANDS
    for name, value in (headers or {}).items():
        if name == "content-length":
            continue
        lines.append(f"{_escape(name)}:{_escape(value)}" if escape else f"{name}:{value}")
    lines.append("")
    # A lone surrogate in a header (never a peer's: their headers are strict UTF-8)
    # becomes "?" rather than make the frame unsendable.
    return "\n".join(lines).encode(errors="replace")


class FrameParser:
    """Turns a byte stream into frames, enforcing `limits`.

    Feed it whatever arrived; iterate `frames()` for every complete frame. After a
    `FrameError` the stream is unusable: send an ERROR and close.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        """Start with an empty buffer."""
        self.limits = limits or Limits()
        self._buffer = self.buffer = bytearray()
        """`buffer`: the bytes received and not yet taken as frames (read it, never
        change it: its length is `buffered`, without a call)."""
        self.heartbeats = 0
        """Heart-beat EOLs seen between frames: any byte counts as life."""
        self._head: tuple[str, dict[str, str], int, int] | None = None
        """The parsed head of the frame whose body is still arriving, where its body
        starts and where its NUL must be (-1: no content-length): a body that comes in
        many reads has its head parsed once."""
        self._scanned = 0
        """How far the body of the frame still arriving was searched for its NUL."""
        limits = self.limits
        self._max_head = limits.max_header_line * (limits.max_headers + 1)
        self._max_line = limits.max_header_line

    @property
    def partial(self) -> bool:
        """Whether part of a frame is buffered (after `frames()`; heart-beats excluded)."""
        return bool(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as frames."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame in the buffer, in order.

        Raises:
            FrameError: a frame breaks the protocol or a limit.
        """
        while True:
            frame = self._next()
            if frame is None:
                return
            yield frame

    def _skip_heartbeats(self) -> None:
        buf = self._buffer
        start = 0
        while start < len(buf) and buf[start] in b"\r\n":
            if buf[start] == ord("\n"):
                self.heartbeats += 1
            start += 1
        if start:
            del buf[:start]

    def _next(self) -> Frame | None:
        buf = self._buffer
        head = self._head
        if head is None:
            if not buf:
                return None
            if buf[0] in b"\r\n":
                self._skip_heartbeats()
            head = self._head = self._find_head()
            if head is None:
                return None
        command, headers, body_start, body_end = head
        if body_end == -1:
            found = self._nul(body_start)
            if found is None:
                return None
            body_end = found
        elif len(buf) <= body_end:
            return None
        elif buf[body_end] != 0:
            raise FrameError("frame does not end with NUL after content-length bytes")
        if body_end - body_start < _SMALL_BODY:
            body = bytes(buf[body_start:body_end])
        else:
            with memoryview(buf) as view:
                body = view[body_start:body_end].tobytes()
        del buf[: body_end + 1]
        self._head = None
        self._scanned = 0
        return Frame(command, headers, body)

    def _find_head(self) -> tuple[str, dict[str, str], int, int] | None:
        """Parse the head at the start of the buffer.

        Returns:
            (command, headers, where the body starts, where its NUL must be or -1
            when there is no content-length); None while the head is incomplete.

        Only the first `_max_head` bytes are searched, so a body arriving in many
        reads is not searched again with each.
        """
        buf = self._buffer
        bound = self._max_head
        head_end = buf.find(b"\n\n", 0, bound + 2)
        crlf_end = buf.find(b"\r\n\r\n", 0, (bound if head_end == -1 else head_end) + 4)
        if crlf_end != -1 and (head_end == -1 or crlf_end < head_end):
            head_end, separator = crlf_end, 4
        else:
            separator = 2
        if head_end == -1:
            self._check_partial_head()
            return None
        if head_end > bound:
            raise FrameError("frame header too large")
        head = bytes(buf[:head_end])
        parsed = None
        if head_end <= self._max_line and b"\\" not in head and b"\r" not in head:
            parsed = parse_plain_head(head, self.limits)
        command, headers = parsed or self._parse_head(head)
        body_start = head_end + separator
        return command, headers, body_start, self._length_end(headers, body_start)

    def _check_partial_head(self) -> None:
        """Refuse a head that can no longer be accepted, however it ends.

        The same checks apply to a complete head, so where the stream is cut into
        reads never changes whether it is accepted.
        """
        if len(self._buffer) > self._max_head:
            raise FrameError("frame header too large")
        first_line_end = self._buffer.find(b"\n", 0, self.limits.max_header_line + 1)
        if first_line_end == -1 and len(self._buffer) > self.limits.max_header_line:
            raise FrameError("header line too long")

    def _parse_head(self, head: bytes) -> tuple[str, dict[str, str]]:
        limits = self.limits
        lines = head.split(b"\n")
        command = lines[0].rstrip(b"\r").decode(errors="replace")
        if len(command) > limits.max_command or not command.isalpha() or not command.isupper():
            raise FrameError(f"not a STOMP command: {command[: limits.max_command]!r}")
        if len(lines) - 1 > limits.max_headers:
            raise FrameError(f"too many headers (limit {limits.max_headers})")
        headers: dict[str, str] = {}
        raw = command in _RAW_COMMANDS
        for line in lines[1:]:
            line = line.rstrip(b"\r")  # noqa: PLW2901
            if len(line) > limits.max_header_line:
                raise FrameError(f"header line too long (limit {limits.max_header_line})")
            name, colon, value = line.partition(b":")
            if not colon or not name:
                raise FrameError(f"malformed header line {line[:64]!r}")
            try:
                key = name.decode() if raw else _unescape(name)
                text = value.decode() if raw else _unescape(value)
            except UnicodeDecodeError:
                raise FrameError("header is not UTF-8") from None
            headers.setdefault(key, text)
        return command, headers

    def _length_end(self, headers: Mapping[str, str], body_start: int) -> int:
        """Where the NUL of a frame with `content-length` must be; -1 without one."""
        length_text = headers.get("content-length")
        if length_text is None:
            return -1
        limit = self.limits.max_body
        # ASCII digits only (int() takes other scripts' digits), and few of them.
        digits = length_text.isascii() and length_text.isdigit()
        if not digits or len(length_text) > MAX_LENGTH_DIGITS:
            raise FrameError(f"bad content-length {length_text[:32]!r}")
        length = int(length_text)
        if length > limit:
            raise FrameError(f"body of {length} bytes exceeds the limit of {limit}")
        return body_start + length

    def _nul(self, body_start: int) -> int | None:
        """Where the NUL ending a body without `content-length` is; None: not yet."""
        buf = self._buffer
        limit = self.limits.max_body
        end = buf.find(NUL, max(body_start, self._scanned), body_start + limit + 1)
        if end == -1:
            if len(buf) - body_start > limit:
                raise FrameError(f"body exceeds the limit of {limit} bytes")
            self._scanned = len(buf)
            return None
        return end


def parse_plain_head(head: bytes, limits: Limits) -> tuple[str, dict[str, str]] | None:
    """Parse a short head with no escapes and no CR (the usual kind) in one decode.

    Returns None for anything else it finds wrong, so that the general parser
    answers it (with its exact error).
    """
    try:
        lines = head.decode().split("\n")
    except UnicodeDecodeError:
        return None
    command = lines[0]
    if len(command) > limits.max_command or not command.isalpha() or not command.isupper():
        return None
    if len(lines) - 1 > limits.max_headers:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name:
            return None
        if name not in headers:
            headers[name] = value
    return command, headers
