"""The STOMP edge driven by independent clients: stomp.py and raw sockets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.front import Front
from harness.stompclient import EVENTS, REQUESTS, RawClient, StompPyClient
from hostvisor.actors.actor import call
from hostvisor.actors.events import Event, Publish
from hostvisor.api.stomp.frames import encode


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    front = Front(tmp_path)
    yield front
    front.stop()


@pytest.fixture
def client(front: Front) -> Iterator[StompPyClient]:
    client = StompPyClient(front.port).connect()
    yield client
    client.close()


def request(method: str, params: Any = None, request_id: Any = "1") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": request_id}


def test_ping_and_echo(client: StompPyClient):
    assert client.call("Host.ping", request_id="p-1") == {
        "jsonrpc": "2.0",
        "id": "p-1",
        "result": True,
    }
    assert client.call("Host.echo", {"message": "héllo"})["result"] == "héllo"


def test_params_by_position_follow_the_declared_order(client: StompPyClient):
    assert client.call("Test.add", [2, 3])["result"] == 5


def test_error_replies_carry_the_request_id(client: StompPyClient):
    reply = client.call("Host.nosuch", request_id="abc")
    assert reply["id"] == "abc"
    assert reply["error"]["code"] == -32601
    reply = client.call("Test.add", {"a": "two", "b": 3}, request_id="typed")
    assert reply["id"] == "typed"
    assert reply["error"]["code"] == -32602
    assert "'a'" in reply["error"]["message"]
    reply = client.call("Test.add", {"a": 1})
    assert reply["error"]["code"] == -32602
    assert "missing" in reply["error"]["message"]


def test_an_unexpected_error_leaks_nothing(client: StompPyClient):
    reply = client.call("Test.crash")
    assert reply["error"] == {"code": -32603, "message": "Internal JSON-RPC error"}


def test_a_slow_verb_times_out_cleanly_and_others_carry_on(client: StompPyClient):
    started = time.monotonic()
    reply = client.call("Test.nap", {"seconds": 2})
    assert reply["error"]["code"] == 40
    assert "timed out" in reply["error"]["message"]
    assert time.monotonic() - started < 1.5
    assert client.call("Host.ping")["result"] is True


def test_a_batch_gets_one_array_and_notifications_get_nothing(client: StompPyClient):
    body = [
        request("Host.echo", {"message": 1}, "a"),
        {"jsonrpc": "2.0", "method": "Host.ping", "params": {}},
        request("Host.nosuch", None, "b"),
    ]
    client.send_body(json.dumps(body))
    reply = client.wait_reply()
    assert [r["id"] for r in reply] == ["a", "b"]
    assert reply[0]["result"] == 1
    client.send_body(json.dumps([request("Host.ping", None, "one")]))
    assert client.wait_reply() == {"jsonrpc": "2.0", "id": "one", "result": True}


def test_invalid_json_and_invalid_requests(client: StompPyClient):
    client.send_body("{not json")
    assert client.wait_reply()["error"]["code"] == -32700
    client.send_body("[]")
    assert client.wait_reply()["error"]["code"] == -32600
    client.send_body(json.dumps({"jsonrpc": "1.0", "method": "Host.ping", "id": "x"}))
    assert client.wait_reply() == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {"code": -32600, "message": "Invalid request"},
    }


def test_the_gate_answers_99_while_recovering(front: Front, client: StompPyClient):
    front.ready.clear()
    reply = client.call("Host.ping")
    assert reply["error"] == {"code": 99, "message": "Recovering from crash or Initializing"}
    front.ready.set()
    assert client.call("Host.ping")["result"] is True


def test_events_reach_subscribers_of_the_queue_and_its_prefixes(
    front: Front, client: StompPyClient
):
    client.subscribe(EVENTS, receipt=True)
    watcher = StompPyClient(front.port).connect(subscribe=False)
    watcher.subscribe("jms.queue", receipt=True)
    try:
        front.ref.tell(Publish(Event(method="|virt|VM_status|vm-1", params={"notify_time": 1})))
        for listener in (client.listener, watcher.listener):
            headers, body = listener.next_message()
            event = json.loads(body)
            assert headers["destination"] == EVENTS
            assert event == {
                "jsonrpc": "2.0",
                "method": "|virt|VM_status|vm-1",
                "params": {"notify_time": 1},
            }
    finally:
        watcher.close()


def test_subscribe_and_send_before_connect(front: Front):
    raw = RawClient(front.port)
    try:
        raw.send(encode("SUBSCRIBE", {"destination": "replies", "id": "s1", "ack": "auto"}))
        body = json.dumps(request("Host.ping", None, "early")).encode()
        raw.send(encode("SEND", {"destination": REQUESTS, "reply-to": "replies"}, body))
        command, headers, reply = raw.read_frame()
        assert command == "MESSAGE"
        assert headers["subscription"] == "s1"
        assert headers["content-type"] == "application/json"
        assert json.loads(reply)["id"] == "early"
        raw.send(
            encode("CONNECT", {"accept-version": "1.2", "heart-beat": "0,15000", "host": "null"})
        )
        assert raw.read_frame()[:2] == (
            "CONNECTED",
            {"version": "1.2", "heart-beat": "15000,0", "content-length": "0"},
        )
    finally:
        raw.close()


def test_version_other_than_1_2_is_refused(front: Front):
    raw = RawClient(front.port)
    try:
        raw.send(encode("CONNECT", {"accept-version": "1.1,1.2"}))
        command, headers, _ = raw.read_frame()
        assert (command, headers["message"]) == ("ERROR", "Version unsupported")
    finally:
        raw.close()


def test_disconnect_with_receipt(front: Front):
    raw = RawClient(front.port)
    try:
        raw.send(encode("DISCONNECT", {"receipt": "bye"}))
        assert raw.read_frame()[:2] == ("RECEIPT", {"receipt-id": "bye", "content-length": "0"})
        assert raw.closed_by_server()
    finally:
        raw.close()


def test_heartbeats_both_ways(front: Front):
    client = StompPyClient(front.port, heartbeats=(1000, 1000)).connect()
    try:
        started = time.monotonic()
        client.listener.wait(lambda: client.listener.heartbeats > 0)  # the server's EOL
        assert time.monotonic() - started < 3
        assert client.call("Host.ping")["result"] is True
    finally:
        client.close()
    raw = RawClient(front.port)
    try:
        raw.send(encode("CONNECT", {"accept-version": "1.2", "heart-beat": "1000,0"}))
        assert raw.read_frame()[1]["heart-beat"] == "0,1000"
        started = time.monotonic()
        assert raw.closed_by_server()  # promised a beat a second, sent none: dropped
        assert time.monotonic() - started < 5
    finally:
        raw.close()


def test_events_are_dropped_while_recovering(front: Front, client: StompPyClient):
    client.subscribe(EVENTS, receipt=True)
    front.ready.clear()
    front.ref.tell(Publish(Event(method="|virt|VM_status|early", params={})))
    call(front.ref, "address").get(timeout=5)  # the front has handled the event
    front.ready.set()
    front.ref.tell(Publish(Event(method="|virt|VM_status|late", params={})))
    _headers, body = client.listener.next_message()
    assert json.loads(body)["method"] == "|virt|VM_status|late"
    assert not client.listener.messages
