"""The edge's budgets on a real server: frame deadline, request budget, batches, backlog.

Each test drives `edge` (conftest.py: the real StompServer and Dispatcher on a loop
of their own) through sockets, as a hostile or careless peer would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness.stompclient import REQUESTS, RawClient
from harness.waiting import wait_for
from hostvisor.api.rpc import codec
from hostvisor.api.stomp.frames import encode
from hostvisor.api.stomp.server import ServerSettings

Edge = Callable[..., Any]


def request(method: str, params: Any = None, request_id: Any = "1") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": request_id}


def send(raw: RawClient, body: Any) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    raw.send(encode("SEND", {"destination": REQUESTS, "reply-to": "r"}, data))


def subscribed(port: int) -> RawClient:
    raw = RawClient(port)
    raw.send(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))
    return raw


def reply(raw: RawClient) -> Any:
    command, headers, body = raw.read_frame()
    assert command == "MESSAGE", headers
    return json.loads(body)


# -- read deadline ------------------------------------------------------------------------


def test_a_frame_dripped_forever_ends_with_an_error_and_a_close(edge: Edge):
    server = edge(ServerSettings(frame_timeout=0.5))
    raw = RawClient(server.port)
    stop = threading.Event()

    def drip() -> None:
        for byte in b"SEND\ndestination:/q\nreply-to:r\n" * 100:
            try:
                raw.send(bytes([byte]))
            except OSError:
                return
            if stop.wait(0.02):  # the pace of the drip
                return

    raw.send(encode("CONNECT", {"accept-version": "1.2"}))
    assert raw.read_frame()[0] == "CONNECTED"
    dripper = threading.Thread(target=drip)
    started = time.monotonic()
    dripper.start()
    try:
        command, headers, _ = raw.read_frame()
        assert (command, headers["message"]) == ("ERROR", "no complete frame in 0.5 s")
        assert raw.closed_by_server()
        assert 0.4 < time.monotonic() - started < 3
        wait_for(lambda: server.connections() == 0, 5, "the connection to be gone")
    finally:
        stop.set()
        dripper.join(timeout=5)
        raw.close()


def test_an_idle_connection_has_no_read_deadline_and_frames_reset_it(edge: Edge):
    server = edge(ServerSettings(frame_timeout=0.3))
    raw = subscribed(server.port)
    try:
        frame = encode("SEND", {"destination": REQUESTS, "reply-to": "r"}, b"{}")
        began = time.monotonic()
        count = 0
        while time.monotonic() - began < 1.2:  # four deadlines of beats and whole frames
            raw.send(b"\n")
            raw.send(frame[:10])  # a frame started...
            threading.Event().wait(0.1)  # the peer's pace, well within the deadline
            raw.send(frame[10:])  # ...and completed in time
            count += 1
            assert reply(raw)["error"]["code"] == codec.INVALID_REQUEST
        assert server.connections() == 1
        send(raw, request("Host.ping", request_id="after"))
        assert reply(raw) == {"jsonrpc": "2.0", "id": "after", "result": True}
        assert count >= 4
    finally:
        raw.close()


# -- batches and the request budget -------------------------------------------------------


def test_a_batch_over_the_cap_gets_one_error_naming_it_and_the_connection_carries_on(
    edge: Edge,
):
    server = edge()
    raw = subscribed(server.port)
    try:
        send(raw, [request("Host.ping", request_id=n) for n in range(codec.MAX_BATCH + 1)])
        refused = reply(raw)
        assert refused["id"] is None
        assert refused["error"]["code"] == codec.INVALID_REQUEST
        assert f"at most {codec.MAX_BATCH} requests" in refused["error"]["message"]
        send(raw, [request("Host.ping", request_id=n) for n in range(codec.MAX_BATCH)])
        answers = reply(raw)
        assert [answer["id"] for answer in answers] == list(range(codec.MAX_BATCH))
        assert all(answer["result"] is True for answer in answers)
    finally:
        raw.close()


def test_each_request_of_a_batch_counts_in_the_connections_budget(edge: Edge):
    server = edge(ServerSettings(max_pending=4))
    raw = subscribed(server.port)
    work = [request("Test.work", {"seconds": 0.05}, f"b{n}") for n in range(3)]
    try:
        send(raw, work)  # 3 in flight
        send(raw, request("Test.work", {"seconds": 0.05}, "one"))  # 4
        send(raw, request("Host.ping", request_id="five"))  # would be 5
        send(raw, [request("Host.ping", request_id="x"), request("Host.ping", request_id="y")])
        frames = [raw.read_frame() for _ in range(4)]
        assert all(command == "MESSAGE" for command, _, _ in frames)  # no ERROR, no close
        answers = [json.loads(body) for _, _, body in frames]
        refused = {
            a["id"]: a["error"]
            for answer in answers
            for a in (answer if isinstance(answer, list) else [answer])
            if "error" in a
        }
        assert sorted(refused) == ["five", "x", "y"]  # each refused request answered by id
        assert {error["code"] for error in refused.values()} == {40}
        assert "too many pending requests (4 in flight, limit 4)" in refused["five"]["message"]
        ids = [
            answer["id"] if isinstance(answer, dict) else [a["id"] for a in answer]
            for answer in answers
            if all("result" in a for a in (answer if isinstance(answer, list) else [answer]))
        ]
        assert sorted(ids, key=str) == [["b0", "b1", "b2"], "one"]
        # an idle connection always gets one batch up to the cap, whatever its budget
        send(raw, [request("Host.ping", request_id=n) for n in range(10)])
        assert len(reply(raw)) == 10
    finally:
        raw.close()


def test_a_batch_request_whose_deadline_passed_at_the_front_never_reaches_the_actor(
    edge: Edge,
):
    server = edge()
    raw = subscribed(server.port)
    size = 40  # 4 s of work at the actor, against a deadline of 0.5 s
    try:
        send(raw, [request("Test.work", {"seconds": 0.1}, n) for n in range(size)])
        answers = reply(raw)
        assert [answer["id"] for answer in answers] == list(range(size))
        done = [answer for answer in answers if "result" in answer]
        timed_out = [answer for answer in answers if answer.get("error", {}).get("code") == 40]
        assert len(done) + len(timed_out) == size
        assert len(done) >= 1
        # Those answered in time ran, and at most the one the actor was handling when
        # the deadline passed. Asks still in the actor's mailbox were abandoned and
        # dropped there; requests still waiting at the front were never sent: without
        # both, every one of them would run late.
        assert len(done) <= server.done() <= len(done) + 1 < size
    finally:
        raw.close()


# -- what goes back: any text, and a bounded backlog --------------------------------------


def test_lone_surrogates_in_id_method_and_params_are_answered(
    edge: Edge, caplog: pytest.LogCaptureFixture
):
    server = edge()
    raw = subscribed(server.port)
    cases: list[tuple[bytes, Any]] = [
        (b'{"jsonrpc":"2.0","id":"\\ud800","method":"Host.ping"}', {"id": "\ud800"}),
        (b'{"jsonrpc":"2.0","id":2,"method":"Host.\\udc00"}', {"code": -32601}),
        (
            b'{"jsonrpc":"2.0","id":3,"method":"Host.echo","params":{"message":"a\\ud800b"}}',
            {"result": "a\ud800b"},
        ),
        (b'{"jsonrpc":"2.0","id":4,"method":"Host.ping","params":{"\\ud800":1}}', {"id": 4}),
        (b'{"jsonrpc":"2.0","id":"\xed\xa0\x80","method":"Host.ping"}', {"id": "\ud800"}),
        (b'{"jsonrpc":"2.0","id":6,"method":"Host.echo","params":["\\udfff"]}', {"id": 6}),
        (b'{"jsonrpc":"\\ud800","id":7,"method":"Host.ping"}', {"code": -32600}),
    ]
    try:
        for body, expected in cases:
            send(raw, body)
            answer = reply(raw)
            for key, value in expected.items():
                seen = answer["error"]["code"] if key == "code" else answer[key]
                assert seen == value, (body, answer)
        batch = b"[" + b",".join(body for body, _ in cases) + b"]"
        send(raw, batch)
        assert len(reply(raw)) == len(cases)
    finally:
        raw.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_subscriber_that_reads_nothing_is_closed_past_its_backlog(edge: Edge):
    server = edge(ServerSettings(max_backlog=256 * 1024))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(encode("SUBSCRIBE", {"destination": "ev", "id": "1", "receipt": "s"}))
        sock.settimeout(10)
        assert b"RECEIPT" in sock.recv(100)
        event = b"x" * 65536
        published = 0
        while server.connections() and published < 2000:  # 125 MiB if nothing stopped it
            server.server.publish("ev", event)
            published += 1
        wait_for(lambda: server.connections() == 0, 10, "the subscriber to be closed")
        assert published < 1000
    finally:
        sock.close()


def test_a_peer_that_sends_requests_but_reads_no_reply_is_paused_then_closed(edge: Edge):
    server = edge(ServerSettings(frame_timeout=0.5))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(10)
    message = "y" * 16384
    frame = encode(
        "SEND",
        {"destination": REQUESTS, "reply-to": "r"},
        json.dumps(request("Host.echo", {"message": message})).encode(),
    )
    sent = 0

    def flood() -> None:
        nonlocal sent
        try:
            sock.sendall(encode("SUBSCRIBE", {"destination": "r", "id": "1"}))
            for _ in range(4000):  # 64 MiB of replies if it were all read and answered
                sock.sendall(frame)
                sent += 1
        except OSError:
            return

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        wait_for(lambda: server.connections() == 0, 20, "the non-reader to be closed")
    finally:
        sock.close()
        flooder.join(timeout=15)
    assert sent < 4000
