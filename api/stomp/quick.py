"""The edge's quick path: the usual frame served from its bytes (loop thread).

Nearly every frame a client sends is a SEND to a request queue whose head, but for
its `content-length`, the client sent before, and whose body is a request it sent
before but for its id (the Engine pings and polls). `QuickPath` serves those with
no frame parser and no `Frame`, in two ways:

- `KnownHeads` recognises a whole frame whose head was parsed once; its body goes
  to the dispatcher's `quick` (one `ujson.loads`, fewer checks than in general);
- a `_Template` recognises a whole frame whose bytes, but for the request id, are
  a frame's seen before that called a verb without params (`Dispatcher.plain`
  checked, once, that the id sits there and that any other id of that length made
  of ASCII letters, digits and `-` parses to the same call). The verb runs with no
  JSON parsed, and a `true` answer is written around the id into MESSAGE frames
  framed once per set of subscriptions (`StompServer.generation`).

Thread: the API loop's, within the connection's read callback; nothing here
blocks. It may assume that the connection's parser holds nothing (the caller
checks), so a frame starts at the first byte given. Whatever it is unsure of — a
partial frame, an unknown head, a bad length, a receipt, another command, a
connection at its request budget, an id of other characters — it hands back with
everything after it, for the parser and the connection's general path, which
accept, refuse and answer the same bytes alike (tests/api/stomp/test_quick_path.py
holds the two to the same bytes). What it keeps is bounded per connection:
`_QUICK_HEADS` heads of at most `_QUICK_HEAD` bytes, `_TEMPLATES` templates of at
most `_QUICK_HEAD + _TEMPLATE_BODY` bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from hostvisor.api.rpc.codec import TRUE_RESULT
from hostvisor.api.rpc.dispatch import Body, Origin, Plain
from hostvisor.api.stomp.frames import EOL, MAX_LENGTH_DIGITS, Limits, parse_plain_head

if TYPE_CHECKING:
    from hostvisor.api.stomp.connection import StompConnection

T = TypeVar("T")

Route = tuple[str | None, str, tuple[str, ...], Origin]
"""What the quick path keeps of a SEND's head: reply-to, destination, where copies
of it go (`StompServer.route`) and the requests' origin."""
Quick = Callable[[bytes, Origin, float], "bytes | Body | Coroutine[Any, Any, bytes | None] | None"]
"""The handler's `quick` (see `Dispatcher.quick`)."""
PlainOf = Callable[[bytes, Origin], "tuple[Plain, int, int] | None"]
"""The handler's `plain` (see `Dispatcher.plain`)."""
RunPlain = Callable[
    [Plain, bytes, float], "bool | bytes | Coroutine[Any, Any, bytes | None] | None"
]
"""The handler's `run_plain` (see `Dispatcher.run_plain`)."""

_NEWLINE = EOL[0]
_LENGTH_LINE = b"\ncontent-length:"
_QUICK_HEAD = 1024
"""Heads longer than this are never remembered (nor served quickly)."""
_QUICK_HEADS = 8
"""Heads remembered per connection: a client sends few kinds (the Engine: one)."""
_TEMPLATES = 4
"""Templates kept per connection (the newest): a client calls few verbs without params."""
_TEMPLATE_BODY = 512
"""Longer bodies are never templates."""
_RELEARN = 8
"""Frames taken by their head before the next try at a template."""
_TRUE_ID_AT = TRUE_RESULT.index(b"%s")
"""Where the encoded id goes in a `true` answer."""


class QuickPath:
    """Serves a connection's usual SENDs from the bytes received (loop thread)."""

    def __init__(
        self,
        connection: StompConnection,
        quick: Quick,
        plain_of: PlainOf | None = None,
        run_plain: RunPlain | None = None,
    ) -> None:
        """Serve `connection`'s usual frames with the handler's `quick` (and templates).

        Without `plain_of` and `run_plain` (a handler without them) no template is made.
        """
        self._connection = connection
        self._server = connection.server
        self._quick = quick
        self._plain_of = plain_of if run_plain is not None else None
        self._run_plain: RunPlain = run_plain or _never
        settings = connection.server.settings
        self._max_pending = settings.max_pending
        self._known: KnownHeads[Route] = KnownHeads(settings.limits, self._learn)
        self._templates: tuple[_Template, ...] = ()
        self._learning = 0
        """Frames to take by their head before trying to make a template again."""

    def serve(self, data: bytes) -> bytes:
        """Serve the usual SENDs at the start of `data`; return the rest, for the parser.

        Heart-beat EOLs before and between them are counted here, as the parser
        counts them. Returns b"" when all of `data` was taken (or the connection
        closed meanwhile: the rest is nobody's).
        """
        connection = self._connection
        while True:
            if data[0] == _NEWLINE:
                data = self._heartbeats(data)
                if not data:
                    return b""
            for template in self._templates:
                if data.startswith(template.prefix) and data.startswith(
                    template.suffix, template.end
                ):
                    token = data[template.at : template.end]
                    if token.replace(b"-", b"").isalnum() and (
                        connection.pending < self._max_pending
                    ):  # ASCII only (bytes): as the template was checked for
                        self._call(template, data, token)
                        data = data[template.stop :]
                        break
            else:
                rest = self._frame(data)
                if rest is None:
                    return data
                data = rest
            if not data or connection.closed:
                return b""

    def _call(self, template: _Template, data: bytes, token: bytes) -> None:
        """Serve the frame at the start of `data`, a template's with request id `token`."""
        connection = self._connection
        server = self._server
        now = connection.last_received = time.monotonic()
        answers = template.answers
        if answers is None or answers[0] != server.generation:
            answers = self._frame_answers(template)
        if answers[1]:  # the destination's own subscribers get a copy
            body = data[template.body : template.stop - 1]
            server.deliver_to(template.targets, template.destination, body)
        outcome = self._run_plain(template.plain, token, now)
        if outcome is True:
            for send, head, tail in answers[2]:
                send(head + token + tail)
        else:
            body = data[template.body : template.stop - 1]
            origin = template.plain.origin
            connection.carry_on(outcome, body, template.reply_to, origin)  # type: ignore[arg-type]

    def _frame(self, data: bytes) -> bytes | None:
        """Serve the frame at the start of `data` if its head is known; the rest, or None."""
        found = self._known.match(data)
        if found is None:
            return None
        route, start, stop = found
        reply_to, destination, targets, origin = route
        connection = self._connection
        server = self._server
        body = data[start:stop]
        connection.last_received = now = time.monotonic()
        subscriptions = server.subscriptions
        if subscriptions and not subscriptions.keys().isdisjoint(targets):
            server.deliver_to(targets, destination, body)
        if connection.pending >= self._max_pending:
            connection.serve_body(body, reply_to, origin, now)
        else:  # `serve_body`, inlined for the usual answer
            answering = self._quick(body, origin, now)
            if type(answering) is bytes and reply_to:
                for sub in subscriptions.get(reply_to, ()):  # `server.deliver(reply_to, ...)`
                    sub.connection.send_raw(sub.message(reply_to, answering))
            else:
                connection.carry_on(answering, body, reply_to, origin)
            if self._plain_of is not None:
                self._learning -= 1
                if self._learning < 0:
                    self._template(data, route, start, stop)
        return data[stop + 1 :]

    def _template(self, data: bytes, route: Route, start: int, stop: int) -> None:
        """Make a template of the frame served at the start of `data`, if it can be one."""
        self._learning = _RELEARN
        if stop - start > _TEMPLATE_BODY or self._plain_of is None:
            return
        found = self._plain_of(data[start:stop], route[3])
        if found is None:
            return
        plain, first, last = found
        template = _Template(data, route, plain, start + first, start + last, start, stop)
        self._templates = (template, *self._templates[: _TEMPLATES - 1])

    def _frame_answers(self, template: _Template) -> _Answers:
        """Frame a template's `true` answer for the subscriptions as they are now."""
        server = self._server
        subscriptions = server.subscriptions
        targets = template.targets
        copies = bool(subscriptions) and not subscriptions.keys().isdisjoint(targets)
        sends: list[tuple[Callable[[bytes], None], bytes, bytes]] = []
        reply_to = template.reply_to
        if reply_to:
            size = template.end - template.at
            body = TRUE_RESULT % (b'"' + b"0" * size + b'"')
            for sub in subscriptions.get(reply_to, ()):
                message = sub.message(reply_to, body)
                cut = len(message) - 1 - len(body) + _TRUE_ID_AT + 1  # after the id's quote
                sends.append((sub.connection.send_raw, message[:cut], message[cut + size :]))
        answers = template.answers = (server.generation, copies, tuple(sends))
        return answers

    def _heartbeats(self, data: bytes) -> bytes:
        """Count the heart-beat EOLs `data` starts with (any byte is life); the rest."""
        rest = data.lstrip(EOL)
        connection = self._connection
        connection.parser.heartbeats += len(data) - len(rest)
        connection.last_received = time.monotonic()
        return rest

    def _learn(self, command: str, headers: dict[str, str]) -> Route | None:
        """What the quick path keeps of a head seen for the first time; None: not for it.

        A SEND to a request queue with no receipt asked is served quickly; every
        other frame goes through the parser and the connection's `_handle`.
        """
        if command != "SEND" or "receipt" in headers:
            return None
        destination = headers.get("destination", "")
        request, targets = self._server.route(destination)
        if not request:
            return None
        return headers.get("reply-to"), destination, targets, self._connection.origin_of(headers)


_Answers = tuple[int, bool, tuple[tuple[Callable[[bytes], None], bytes, bytes], ...]]
"""A template's answers as framed for one generation of the server's subscriptions:
the generation; whether the destination's subscribers get a copy of the SEND; and
per subscriber of the reply-to, its `send_raw` and its MESSAGE frame before and
after the request id."""


class _Template:
    """A whole frame but for its request id: a SEND calling a verb without params."""

    __slots__ = (
        "answers",
        "at",
        "body",
        "destination",
        "end",
        "plain",
        "prefix",
        "reply_to",
        "stop",
        "suffix",
        "targets",
    )

    def __init__(  # noqa: PLR0913, PLR0917 - a record
        self, data: bytes, route: Route, plain: Plain, at: int, end: int, body: int, nul: int
    ) -> None:
        """The frame at the start of `data`: id from `at` to `end`, body from `body` to `nul`."""
        self.prefix = data[:at]
        """The frame up to the id."""
        self.suffix = data[end : nul + 1]
        """The frame after the id, its NUL included."""
        self.at, self.end, self.body, self.stop = at, end, body, nul + 1
        self.reply_to, self.destination, self.targets, _origin = route
        self.plain = plain
        self.answers: _Answers | None = None


def _never(_plain: Plain, _token: bytes, _received: float) -> bool:  # pragma: no cover
    raise AssertionError("no template without a handler's run_plain")


class KnownHeads(Generic[T]):
    """Recognises a whole frame by its head, parsed once: the quick path for the usual frame.

    A client sends frames whose heads differ only in `content-length` (the Engine's
    SENDs to the request queue: same destination, reply-to, content type). The head
    without that line is the key: the first time a key is seen, its head is parsed
    as `FrameParser` parses it and `learn` says what to remember (None: nothing, the
    frame is not for the quick path); after that the head is only compared.

    Only the simplest frames are recognised — a plain head (no escapes, no CR) of
    at most `_QUICK_HEAD` bytes with a valid `content-length` within the limits,
    starting at the first byte, with the whole body and its NUL present — so that
    whatever is recognised, `FrameParser` would have taken the same way: for
    anything else (a partial frame, a bad length, a missing NUL...) `match` says
    None and the caller feeds the parser, which answers it exactly. At most
    `_QUICK_HEADS` keys of at most `_QUICK_HEAD` bytes are kept: a peer cannot grow
    it. Plain code, no I/O.
    """

    def __init__(self, limits: Limits, learn: Callable[[str, dict[str, str]], T | None]) -> None:
        """Remember heads as `learn` says, for frames within `limits`."""
        self._learn = learn
        self._limits = limits
        self._heads: dict[bytes, T | None] = {}
        self._last: tuple[bytes, bytes, int, T] | None = None
        """The last head recognised: up to its length's digits; after them to the body;
        the length of the latter; what `learn` said of it."""
        self._bound = min(_QUICK_HEAD, limits.max_header_line)
        self._max_body = limits.max_body

    def match(self, data: bytes) -> tuple[T, int, int] | None:  # noqa: PLR0911 - inlined (hot)
        """Recognise the frame at the start of `data`.

        Returns:
            What `learn` returned for its head, where its body starts and where it
            ends (at its NUL); None when it is not a whole frame of a known head.
        """
        last = self._last
        if last is not None:  # the usual case: the same head as the last frame's
            before, after, rest, known = last
            digits_at = len(before)
            if data.startswith(before):
                eol = data.find(b"\n", digits_at, digits_at + 1 + MAX_LENGTH_DIGITS)
                start = eol + rest
                # No part holds a blank line: the body's is the first, as `find` says.
                if eol > 0 and start <= self._bound + 2 and data.startswith(after, eol):
                    digits = data[digits_at:eol]
                    if not digits.isdigit():  # at most MAX_LENGTH_DIGITS: `eol` is bounded
                        return None
                    stop = start + int(digits)
                    if stop - start > self._max_body or len(data) <= stop or data[stop] != 0:
                        return None
                    return known, start, stop
        end = data.find(b"\n\n", 0, self._bound + 2)
        if end < 0:
            return None
        cut = data.find(_LENGTH_LINE, 0, end)
        if cut < 0:
            return None
        eol = data.find(b"\n", cut + 16, end + 1)
        digits = data[cut + 16 : eol]
        before, after = data[:cut], data[eol:end]
        key = before + after
        heads = self._heads
        learnt = heads[key] if key in heads else self._remember(key, data[:end], digits)
        if learnt is None:
            return None
        before += _LENGTH_LINE
        after += b"\n\n"
        self._last = before, after, len(after), learnt
        return self._whole(data, learnt, end, digits)

    def _whole(self, data: bytes, known: T, end: int, digits: bytes) -> tuple[T, int, int] | None:
        """The frame whose head ends at `end`, if its length is valid and it is all here."""
        if not digits.isdigit() or len(digits) > MAX_LENGTH_DIGITS:
            return None
        start = end + 2
        stop = start + int(digits)
        if stop - start > self._max_body or len(data) <= stop or data[stop] != 0:
            return None
        return known, start, stop

    def _remember(self, key: bytes, head: bytes, digits: bytes) -> T | None:
        known = None
        if digits.isdigit() and b"\\" not in head and b"\r" not in head:
            parsed = parse_plain_head(head, self._limits)
            if parsed is not None and parsed[1].get("content-length") == digits.decode():
                known = self._learn(*parsed)
        if len(self._heads) >= _QUICK_HEADS:
            self._heads.clear()
            self._last = None
        self._heads[key] = known
        return known
