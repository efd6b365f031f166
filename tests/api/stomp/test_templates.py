"""The quick path's templates answer as the general path does, byte for byte.

A template (`api/stomp/quick.py`, `Dispatcher.plain`) is a frame seen before but for
its request id, calling a verb without params: the next such frame is served with no
JSON parsed. These tests hold it to what the parser and `Dispatcher.answer` make of
the same bytes: `plain` only ever accepts a body in which another id of the same
length and characters parses to the same request (a Hypothesis property over odd
bodies), `run_plain` answers as `answer` does (every kind of handler outcome, ready
or recovering, counted alike), and over a socket the frames received are those the
general path sends — with other ids, subscriptions that come and go, copies to the
request queue's subscribers, and a budget spent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import ujson
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.stompclient import REQUESTS, RawClient
from hostvisor.actors.errors import Unavailable
from hostvisor.api.rpc import codec
from hostvisor.api.rpc.dispatch import Dispatcher, Origin
from hostvisor.api.rpc.host_verbs import HostApi, host_verbs
from hostvisor.api.rpc.verbs import Verb, VerbTable
from hostvisor.api.stomp.frames import encode
from hostvisor.api.stomp.server import ServerSettings
from hostvisor.supervision.registry import Registry

ORIGIN = Origin("127.0.0.1:1", "127.0.0.1:2")
SAFE = st.text(alphabet="abcXYZ0189-", min_size=1, max_size=12)
"""Ids a template takes: ASCII letters, digits and `-`."""


def _host() -> Dispatcher:
    return Dispatcher(VerbTable.of(host_verbs(HostApi(Registry()))), is_ready=lambda: True)


# Bodies built to fool a template: the id's text elsewhere, escaped, twice, nested.
ODD_BODIES = [
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "abc"}',
    b'{"id":"abc","jsonrpc":"2.0","method":"Host.ping","params":{}}',
    b'{"id": "abc", "jsonrpc": "2.0", "method": "Host.ping", "params": {}, "x": "abc"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "abc", "x": "\\"abc\\""}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "abc", "id": "abd"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "ab", "id": "abc"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "\\u0061bc"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "a/c"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "s0\\udfff\\ud800x"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "\xc3\xa9t\xc3\xa9"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "Host"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "2.0"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {"abc": 1}, "id": "abc"}',
    b'{"jsonrpc": "2.0", "method": "Host.echo", "params": {}, "id": "abc"}',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": 123}',
    b'{"jsonrpc": "2.0", "method": "Host.nothing", "params": {}, "id": "abc"}',
    b'[{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "abc"}]',
    b'{"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "abc"',
]


@settings(max_examples=300, deadline=None)
@given(raw=st.sampled_from(ODD_BODIES), other=SAFE, junk=st.binary(max_size=4))
def test_a_template_is_the_same_request_for_any_id_it_takes(raw: bytes, other: str, junk: bytes):
    dispatcher = _host()
    for body in (raw, raw + junk, junk + raw):
        found = dispatcher.plain(body, ORIGIN)
        if found is None:
            continue
        plain, at, end = found
        document = ujson.loads(body)
        assert body[at:end] == document["id"].encode()
        token = (other * 12)[: end - at].encode()
        again = body[:at] + token + body[end:]
        assert ujson.loads(again) == {**document, "id": token.decode()}
        assert json.loads(again) == {**document, "id": token.decode()}
        assert plain.method == document["method"]


@settings(max_examples=300, deadline=None)
@given(
    request_id=st.text(st.characters(blacklist_categories=())) | st.integers() | st.none(),
    method=st.sampled_from(["Host.ping", "Host.echo", "Host.ping2", "X", ""]),
    raw=st.binary(max_size=40),
)
def test_plain_never_raises(request_id: Any, method: str, raw: bytes):
    dispatcher = _host()
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": {}, "id": request_id})
    for text in (body.encode(), body.encode("utf-8", "surrogatepass"), raw):
        found = dispatcher.plain(text, ORIGIN)
        if found is not None:
            assert text[found[1] : found[2]] == str(request_id).encode()


def test_a_template_is_made_of_the_usual_ping():
    raw = json.dumps({"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "a-1"})
    assert _host().plain(raw.encode(), ORIGIN) is not None


class Recorder:
    """Keeps what the dispatcher counts: (method, error code or None)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []

    def request(self, method: str, code: int | None, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((method, code))


def _raise(error: Exception) -> Any:
    raise error


async def _later() -> bool:
    return True


NO_PARAMS = [
    Verb(namespace="T", name="true", doc="", handler=lambda _c: True),
    Verb(namespace="T", name="none", doc="", handler=lambda _c: None),
    Verb(namespace="T", name="value", doc="", handler=lambda _c: {"x": [1, "/"]}),
    Verb(namespace="T", name="caller", doc="", handler=lambda _c: _raise(Unavailable(reason="x"))),
    Verb(namespace="T", name="bug", doc="", handler=lambda _c: _raise(RuntimeError("x"))),
    Verb(namespace="T", name="ungated", doc="", gated=False, handler=lambda _c: True),
    Verb(namespace="T", name="odd", doc="", handler=lambda _c: {1, 2}),  # not JSON: -32603
    Verb(namespace="T", name="later", doc="", handler=lambda _c: _later()),
]


@pytest.mark.parametrize("ready", [True, False], ids=["ready", "recovering"])
@pytest.mark.parametrize("verb", [verb.method for verb in NO_PARAMS])
def test_run_plain_answers_as_answer_does(verb: str, ready: bool):
    raw = json.dumps({"jsonrpc": "2.0", "method": verb, "params": {}, "id": "x-1"}).encode()
    recorder = Recorder()
    dispatcher = Dispatcher(VerbTable.of(NO_PARAMS), is_ready=lambda: ready, recorder=recorder)
    found = dispatcher.plain(raw, ORIGIN)
    assert found is not None
    plain, at, end = found

    async def both() -> tuple[Any, Any]:
        token = b"Z-9"
        templated = dispatcher.run_plain(plain, token, time.monotonic())
        if templated is True:
            templated = codec.TRUE_RESULT % b'"Z-9"'
        elif asyncio.iscoroutine(templated):
            templated = await templated
        again = raw[:at] + token + raw[end:]
        return templated, await dispatcher.answer(dispatcher.decode(again), ORIGIN)

    templated, general = asyncio.run(both())
    assert templated == general
    assert recorder.seen[0] == recorder.seen[1]


def _ping(request_id: str, **headers: str) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": request_id})
    return encode("SEND", {"destination": REQUESTS, "reply-to": "r", **headers}, body.encode())


def _reply(raw: RawClient) -> tuple[str, dict[str, str], bytes]:
    command, headers, body = raw.read_frame()
    assert command == "MESSAGE", (command, headers, body)
    return command, headers, body


def test_templated_frames_are_answered_as_the_parser_would(edge: Any):
    """Same-length ids, other ids, two subscribers, copies, all in few reads."""
    server = edge()
    first, second, watcher = (RawClient(server.port) for _ in range(3))
    try:
        first.send(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))
        watcher.send(encode("SUBSCRIBE", {"destination": REQUESTS, "id": "w", "receipt": "ok"}))
        assert watcher.read_frame()[0] == "RECEIPT"
        ids = ["aaaa", "bbbb", "c-dd", "a/bb", "éé", "eeee", "x", "ffff"]
        first.send(b"".join(_ping(i) for i in ids[:4]) + b"\n")
        first.send(b"".join(_ping(i) for i in ids[4:]))
        for request_id in ids:
            _, headers, body = _reply(first)
            assert headers == {
                "destination": "r",
                "subscription": "1",
                "content-type": "application/json",
                "content-length": str(len(body)),
            }
            assert json.loads(body) == {"jsonrpc": "2.0", "id": request_id, "result": True}
            assert body == codec.encode_response(
                {"jsonrpc": "2.0", "id": request_id, "result": True}
            )
            _, copied, sent = watcher.read_frame()  # the SEND's copy, as sent
            assert copied["destination"] == REQUESTS
            assert json.loads(sent)["id"] == request_id
        # A second subscriber of the reply-to comes: both hear; it goes: one hears.
        second.send(encode("SUBSCRIBE", {"destination": "r", "id": "2", "receipt": "in"}))
        assert second.read_frame()[0] == "RECEIPT"
        first.send(_ping("gggg"))
        for raw, sub in ((first, "1"), (second, "2")):
            _, headers, body = _reply(raw)
            assert headers["subscription"] == sub
            assert json.loads(body)["id"] == "gggg"
        second.send(encode("UNSUBSCRIBE", {"id": "2", "receipt": "out"}))
        assert second.read_frame()[0] == "RECEIPT"
        first.send(_ping("hhhh") + _ping("iiii"))
        assert [json.loads(_reply(first)[2])["id"] for _ in range(2)] == ["hhhh", "iiii"]
    finally:
        for raw in (first, second, watcher):
            raw.close()


def test_a_template_respects_the_request_budget(edge: Any):
    """At its budget, a templated frame is refused code 40 as any other."""
    server = edge(ServerSettings(max_pending=1))
    raw = RawClient(server.port)
    try:
        raw.send(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))
        raw.send(_ping("aaaa") + _ping("bbbb"))  # learnt
        assert [json.loads(_reply(raw)[2])["id"] for _ in range(2)] == ["aaaa", "bbbb"]
        work = json.dumps(
            {"jsonrpc": "2.0", "method": "Test.work", "params": {"seconds": 0.5}, "id": "w"}
        ).encode()
        raw.send(encode("SEND", {"destination": REQUESTS, "reply-to": "r"}, work) + _ping("cccc"))
        refused = json.loads(_reply(raw)[2])
        assert refused["id"] == "cccc"
        assert refused["error"]["code"] == Unavailable.code
        worked = json.loads(_reply(raw)[2])
        assert worked["id"] == "w"
        assert "result" in worked
    finally:
        raw.close()
