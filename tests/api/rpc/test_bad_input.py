"""Bad input: each case gets a clear error or a clean close, and the server serves on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.front import Front
from harness.stompclient import REQUESTS, RawClient, StompPyClient
from hostvisor.api.stomp.frames import encode


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    front = Front(tmp_path, detect_timeout=0.5, max_frame_bytes=4096, max_pending_requests=2)
    yield front
    front.stop()


@pytest.fixture
def bystander(front: Front) -> Iterator[StompPyClient]:
    """Another client, which must be served before, during and after each case."""
    client = StompPyClient(front.port).connect()
    assert client.call("Host.ping")["result"] is True
    yield client
    assert client.call("Host.ping")["result"] is True
    client.close()


def expect_error_and_close(raw: RawClient, fragment: str) -> None:
    command, headers, body = raw.read_frame()
    assert command == "ERROR"
    assert fragment in headers["message"]
    assert body.decode() == headers["message"]
    assert raw.closed_by_server()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"SEND\ncontent-length:3\n\nabcdef\x00", "does not end with NUL"),
        (b"SEND\ncontent-length:-1\n\n\x00", "bad content-length"),
        (b"SEND\nh:" + b"v" * 9000 + b"\n\n\x00", "too long"),
        (b"SEND\ndestination:x\n\n" + b"x" * 5000, "body exceeds"),
        (b"SEND\ncontent-length:99999\n\n", "exceeds the limit"),
        (b"CONNECT\naccept-version:1.2\n\n\x00ABORT\n\n\x00", "unsupported command"),
    ],
    ids=["no-nul", "bad-length", "long-header", "big-body", "big-length", "unknown-command"],
)
def test_broken_frames_get_an_error_and_a_close(
    front: Front, bystander, data: bytes, fragment: str
):
    raw = RawClient(front.port)
    try:
        raw.send(data)
        if data.startswith(b"CONNECT"):
            assert raw.read_frame()[0] == "CONNECTED"
        expect_error_and_close(raw, fragment)
    finally:
        raw.close()


def test_garbage_is_closed_without_an_answer(front: Front, bystander):
    for garbage in (
        b"\x16\x03\x01\x02\x00garbage-bytes",
        b"GET / HTTP/1.1\r\n\r\n",
        b"STOMP\naccept-version:1.2\n\n\x00",
    ):
        raw = RawClient(front.port)
        try:
            raw.send(garbage)
            assert raw.closed_by_server()
            assert raw.buffer == b""
        finally:
            raw.close()


def test_a_client_that_never_speaks_is_closed(front: Front, bystander):
    raw = RawClient(front.port)
    try:
        started = time.monotonic()
        assert raw.closed_by_server()
        assert 0.4 < time.monotonic() - started < 3
    finally:
        raw.close()


def test_a_byte_a_tick_client_does_not_hold_up_others(front: Front, bystander):
    body = json.dumps(
        {"jsonrpc": "2.0", "method": "Host.ping", "params": {}, "id": "slow"}
    ).encode()
    frame = encode("SUBSCRIBE", {"destination": "slow-replies", "id": "1"}) + encode(
        "SEND", {"destination": REQUESTS, "reply-to": "slow-replies"}, body
    )
    raw = RawClient(front.port)
    done = threading.Event()

    def dribble() -> None:
        for i in range(len(frame)):
            raw.send(frame[i : i + 1])
            if done.wait(0.01):
                return

    sender = threading.Thread(target=dribble)
    sender.start()
    try:
        for _ in range(10):
            started = time.monotonic()
            assert bystander.call("Host.ping")["result"] is True
            assert time.monotonic() - started < 0.5
        sender.join(timeout=30)
        command, _headers, reply = raw.read_frame()
        assert command == "MESSAGE"
        assert json.loads(reply)["id"] == "slow"
    finally:
        done.set()
        sender.join(timeout=5)
        raw.close()


def test_semantic_errors_keep_the_connection(front: Front, bystander):
    raw = RawClient(front.port)
    try:
        raw.send(encode("SUBSCRIBE", {"destination": "d"}))
        assert raw.read_frame()[1]["message"] == "SUBSCRIBE needs destination and id headers"
        raw.send(encode("SEND", {"destination": "nobody.listens"}, b"x"))
        assert raw.read_frame()[1]["message"] == "Subscription not available: nobody.listens"
        raw.send(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))
        raw.send(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))
        assert "already in use" in raw.read_frame()[1]["message"]
        body = json.dumps({"jsonrpc": "2.0", "method": "Host.ping", "id": "still"}).encode()
        raw.send(encode("SEND", {"destination": REQUESTS, "reply-to": "r"}, body))
        assert json.loads(raw.read_frame()[2])["id"] == "still"
    finally:
        raw.close()


def test_too_many_pending_requests_are_refused(front: Front, bystander):
    raw = RawClient(front.port)
    try:
        raw.send(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))
        for n in range(3):
            body = json.dumps(
                {"jsonrpc": "2.0", "method": "Test.nap", "params": {"seconds": 0.2}, "id": str(n)}
            ).encode()
            raw.send(encode("SEND", {"destination": REQUESTS, "reply-to": "r"}, body))
        frames = [raw.read_frame() for _ in range(3)]
        assert [f[0] for f in frames] == ["MESSAGE"] * 3  # no ERROR: the connection goes on
        answers = {answer["id"]: answer for answer in (json.loads(f[2]) for f in frames)}
        refused = [
            answer["error"]
            for answer in answers.values()
            if "too many pending requests" in answer.get("error", {}).get("message", "")
        ]
        assert len(refused) == 1  # answered at once, by id, and never run
        assert refused[0]["code"] == 40
        assert sorted(answers) == ["0", "1", "2"]
    finally:
        raw.close()


def test_lone_surrogates_are_answered_through_the_front(front: Front, bystander):
    """stomp.py sends UTF-8 text: lone surrogates travel as JSON escapes, and come back so."""
    bodies = [
        {"jsonrpc": "2.0", "method": "Host.echo", "params": {"message": "\ud800"}, "id": "\udfff"},
        {"jsonrpc": "2.0", "method": "Host.\ud800", "params": {}, "id": "m"},
        {"jsonrpc": "2.0", "method": "Host.echo", "params": {"\ud800": 1}, "id": "p"},
    ]
    echo, method, param = (
        bystander.call(body["method"], body["params"], request_id=body["id"]) for body in bodies
    )
    assert echo == {"jsonrpc": "2.0", "id": "\udfff", "result": "\ud800"}
    assert (method["id"], method["error"]["code"]) == ("m", -32601)
    assert (param["id"], param["error"]["code"]) == ("p", -32602)
    bystander.send_body(json.dumps(bodies))
    assert [reply["id"] for reply in bystander.wait_reply()] == ["\udfff", "m", "p"]
