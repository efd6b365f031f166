"""The edge's quick path gives what the general one gives, byte for byte.

The quick path (`KnownHeads` in `quick.py`, `Dispatcher.quick`) serves the usual
SEND without the frame parser and the usual request without the general decoding.
Whatever it accepts must be what the parser and `Dispatcher.answer` make of the
same bytes; whatever it declines goes the general way, untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.stompclient import REQUESTS, RawClient
from hostvisor.actors.errors import Unavailable
from hostvisor.api.rpc.dispatch import Body, Dispatcher, Origin
from hostvisor.api.rpc.host_verbs import HostApi, host_verbs
from hostvisor.api.rpc.verbs import Verb, VerbTable
from hostvisor.api.stomp.frames import FrameError, FrameParser, Limits, encode
from hostvisor.api.stomp.quick import KnownHeads
from hostvisor.supervision.registry import Registry

LIMITS = Limits(max_body=64, max_headers=4, max_header_line=60, max_command=12)
"""Small limits, so that generated frames reach them."""

# Head lines that make near-frames: escapes, CRs, odd lengths, repeated lengths.
LINES = st.sampled_from(
    [
        b"destination:" + REQUESTS.encode(),
        b"destination:/q",
        b"reply-to:r",
        b"receipt:9",
        b"content-type:application/json",
        b"content-length:",
        b"content-length:x",
        b"content-length:" + b"9" * 14,
        b"content-length:3",
        b"a:b\\c",
        b"a:\\x",
        b"cr:\r",
        b"nocolon",
        b":empty",
        "é:è".encode(),
        b"\xff:x",
        b"x" * 70,
        b"",
    ]
)
VALID = st.sampled_from([b"destination:" + REQUESTS.encode(), b"reply-to:r", b"a:b:c"])
COMMANDS = st.sampled_from([b"SEND", b"SEND", b"SEND", b"SUBSCRIBE", b"send", b"", b"\nSEND"])


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Two frames with the same head but for `content-length`, then anything."""
    command = draw(COMMANDS)
    lines = VALID | VALID | LINES  # mostly frames the quick path takes
    before = draw(st.lists(lines, max_size=3))
    after = draw(st.lists(lines, max_size=3))
    tail = draw(st.binary(max_size=8) | st.sampled_from([b"", b"\n", b"\n\n", b"\r\n"]))

    def frame(body: bytes, length: bytes) -> bytes:
        head = b"\n".join([command, *before, b"content-length:" + length, *after])
        return head + b"\n\n" + body + b"\x00"

    first = draw(st.binary(max_size=70))
    second = draw(st.binary(max_size=70))
    length = draw(
        st.sampled_from([b"%d" % len(second), b"0%d" % len(second), b"%d" % (len(second) + 1)])
    )
    return frame(first, b"%d" % len(first)), frame(second, length) + tail


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(pair=frames(), cut=st.integers(min_value=0, max_value=200))
def test_a_recognised_frame_is_the_parsers_first_frame(pair: tuple[bytes, bytes], cut: int):
    known: KnownHeads[tuple[str, dict[str, str]]] = KnownHeads(
        LIMITS, lambda command, headers: (command, dict(headers))
    )
    first, second = pair
    for data in (first, second, second[:cut]):  # learn; the same head again; part of it
        found = known.match(data)
        if found is None:
            continue
        (command, headers), start, stop = found
        parser = FrameParser(LIMITS)
        parser.feed(data)
        try:
            frame = next(parser.frames())
        except (FrameError, StopIteration) as error:  # pragma: no cover - the failure
            pytest.fail(f"recognised, but the parser says {error!r}: {data!r}")
        assert frame.command == command
        assert frame.body == data[start:stop]
        assert parser.buffered == len(data) - stop - 1
        assert int(frame.headers["content-length"]) == stop - start
        assert {k: v for k, v in frame.headers.items() if k != "content-length"} == {
            k: v for k, v in headers.items() if k != "content-length"
        }


def test_known_heads_stay_few():
    known: KnownHeads[str] = KnownHeads(Limits(), lambda command, _headers: command)
    for n in range(100):
        assert known.match(encode("SEND", {"destination": f"/q/{n}"}, b"x")) is not None
    assert len(known._heads) <= 8


BODIES: list[Any] = [
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "a"},
    {"jsonrpc": "2.0", "method": "Host.ping", "id": 7},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": [], "id": "b"},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {"x": 1}, "id": "c"},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": "x", "id": "d"},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": None},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": True},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": 1.5},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "a/b"},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "é\u2028"},
    {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": 'q"\\\n'},
    {"jsonrpc": "1.0", "method": "Host.ping", "params": {}, "id": "e"},
    {"jsonrpc": "2.0", "method": "", "params": {}, "id": "f"},
    {"jsonrpc": "2.0", "method": 3, "params": {}, "id": "g"},
    {"jsonrpc": "2.0", "method": "Host.nothing", "params": {}, "id": "h"},
    {"jsonrpc": "2.0", "method": "Host.echo", "params": {"message": "/é"}, "id": "i"},
    {"jsonrpc": "2.0", "method": "Host.echo", "params": {}, "id": "j"},
    [{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "k"}],
    [],
    "text",
    3,
]
RAW_BODIES = [
    *(json.dumps(body).encode() for body in BODIES),
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "\\ud800"}',
    b'{"jsonrpc": "2.0", "method": "Host.echo", "params": {"message": "\\udfff"}, "id": 1}',
    b"not json",
    b"",
    b"[" * 5000,
]


class Recorder:
    """Keeps what the dispatcher counts: (method, error code or None)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []

    def request(self, method: str, code: int | None, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((method, code))


@pytest.mark.parametrize("ready", [True, False], ids=["ready", "recovering"])
@pytest.mark.parametrize("raw", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_quick_answers_as_answer_does(raw: bytes, ready: bool):
    recorder = Recorder()
    dispatcher = Dispatcher(
        VerbTable.of(host_verbs(HostApi(Registry()))), is_ready=lambda: ready, recorder=recorder
    )
    origin = Origin("127.0.0.1:1", "127.0.0.1:2")

    async def both() -> tuple[Any, Any]:
        quick = dispatcher.quick(raw, origin, time.monotonic())
        if type(quick) is Body:
            assert dispatcher.decode(raw).elements == quick.elements
            quick = await dispatcher.answer(quick, origin)
        elif asyncio.iscoroutine(quick):
            quick = await quick
        return quick, await dispatcher.answer(dispatcher.decode(raw), origin)

    quick, general = asyncio.run(both())
    assert quick == general
    counted = len(recorder.seen) // 2
    assert recorder.seen[:counted] == recorder.seen[counted:]


def test_frames_in_one_read_are_answered_in_order(edge: Any):
    """Quick frames, a receipt, a heart-beat and a frame cut in two, all in few reads."""
    server = edge()
    raw = RawClient(server.port)
    try:
        raw.send(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))

        def send(request_id: str, **headers: str) -> bytes:
            body = json.dumps(
                {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": request_id}
            ).encode()
            return encode("SEND", {"destination": REQUESTS, "reply-to": "r", **headers}, body)

        last = send("5")
        raw.send(
            send("1")
            + send("2")
            + b"\n"
            + send("3", receipt="r3")
            + send("4", ovirtCorrelationId="flow")
            + b"\n\n"
            + last[:7]
        )
        raw.send(last[7:] + b"\n")
        seen = []
        for _ in range(6):
            command, headers, body = raw.read_frame()
            seen.append(headers["receipt-id"] if command == "RECEIPT" else json.loads(body)["id"])
        assert seen == ["1", "2", "3", "r3", "4", "5"]
    finally:
        raw.close()


def _raise(error: Exception) -> Any:
    raise error


NO_PARAMS = [
    Verb(namespace="T", name="none", doc="", handler=lambda _c: None),
    Verb(namespace="T", name="value", doc="", handler=lambda _c: {"x": [1, "/"]}),
    Verb(namespace="T", name="caller", doc="", handler=lambda _c: _raise(Unavailable(reason="x"))),
    Verb(namespace="T", name="bug", doc="", handler=lambda _c: _raise(RuntimeError("x"))),
    Verb(namespace="T", name="ungated", doc="", gated=False, handler=lambda _c: True),
    Verb(namespace="T", name="odd", doc="", handler=lambda _c: {1, 2}),  # not JSON: -32603
]


@pytest.mark.parametrize("late", [0.0, 1000.0], ids=["in-time", "expired"])
@pytest.mark.parametrize("ready", [True, False], ids=["ready", "recovering"])
@pytest.mark.parametrize("verb", [verb.method for verb in NO_PARAMS])
def test_quick_answers_a_verb_without_params_as_answer_does(verb: str, ready: bool, late: float):
    raw = json.dumps({"jsonrpc": "2.0", "method": verb, "params": {}, "id": "1"}).encode()
    recorder = Recorder()
    dispatcher = Dispatcher(VerbTable.of(NO_PARAMS), is_ready=lambda: ready, recorder=recorder)
    origin = Origin("127.0.0.1:1", "127.0.0.1:2")
    received = time.monotonic() - late
    quick = dispatcher.quick(raw, origin, received)
    general = asyncio.run(
        dispatcher.answer(dispatcher.decode(raw)._replace(received=received), origin)
    )
    assert quick == general
    assert recorder.seen[0] == recorder.seen[1]
