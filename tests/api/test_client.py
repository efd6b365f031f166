"""The client library (`hostvisor.api.client`) against a real front over real sockets."""

from __future__ import annotations

import asyncio
import queue
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness.front import Front
from harness.pki import Pki, make_pki
from hostvisor.actors.events import Event, Publish
from hostvisor.api.client import CallTimeout, Client, ClientClosed, ServerError, connect
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.tls import client_context

EVENTS = "jms.queue.events"


class HangingFront(Front):
    """A front with `Test.hang`: a verb that is never answered (until the front goes)."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.hanging = threading.Event()
        super().__init__(tmp_path, **settings)

    def _test_verbs(self) -> list[Verb]:
        def hang(_call: Any) -> Any:
            self.hanging.set()
            return asyncio.get_running_loop().create_future()

        return [
            *super()._test_verbs(),
            Verb(namespace="Test", name="hang", doc="", timeout=60.0, handler=hang),
        ]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def front(tmp_path: Path) -> Iterator[HangingFront]:
    front = HangingFront(tmp_path)
    yield front
    front.stop()


@pytest.fixture
def cli(front: Front) -> Iterator[Client]:
    with connect("127.0.0.1", front.port, timeout=10) as client:
        yield client


def test_ping(cli: Client):
    assert cli.Host.ping() is True
    assert cli.call("Host.ping") is True


def test_echo_keeps_unicode_and_nested_data(cli: Client):
    payload = {
        "text": 'héllo ☃ 日本語 😀 \u0000 "quoted" \\ back\nslash',
        "numbers": [0, -1, 2**53, 1.5, -0.25],
        "nested": {"a": [{"b": None, "c": True, "d": False}], "empty": {}, "list": []},
        "ключ": "значение",
    }
    assert cli.Host.echo(message=payload) == payload
    assert cli.Host.echo(message="") == ""


def test_server_errors_carry_vdsm_codes(cli: Client):
    with pytest.raises(ServerError) as unknown:
        cli.Host.nosuch()
    assert unknown.value.code == -32601
    assert "Host.nosuch" in unknown.value.message
    with pytest.raises(ServerError) as typed:
        cli.Test.add(a="two", b=3)
    assert typed.value.code == -32602
    assert "'a'" in typed.value.message
    with pytest.raises(ServerError) as internal:
        cli.Test.crash()
    assert internal.value.code == -32603
    assert "secret" not in str(internal.value)
    assert cli.Test.add(a=2, b=3) == 5


def test_a_verb_past_its_server_timeout_is_a_server_error(cli: Client):
    with pytest.raises(ServerError) as raised:
        cli.Test.nap(seconds=1)
    assert raised.value.code == 40
    assert "timed out" in raised.value.message


def test_a_call_past_its_own_timeout_raises_call_timeout(cli: Client):
    # The front answers Test.nap with error 40 after 0.3 s: a CallTimeout (not that
    # ServerError) shows the client gave up first.
    with pytest.raises(CallTimeout):
        cli.call("Test.nap", {"seconds": 1}, timeout=0.1)
    with pytest.raises(CallTimeout):
        cli.Test.nap(seconds=1, _timeout=0.1)
    assert cli.Host.echo(message="after") == "after"  # late answers go nowhere
    assert cli._pending == {}


def concurrent_echoes(cli: Client, threads: int = 8, calls: int = 50) -> None:
    start = threading.Barrier(threads)

    def worker(thread: int) -> list[Any]:
        start.wait(timeout=10)
        wrong = []
        for n in range(calls):
            payload = {"thread": thread, "n": n, "text": f"t{thread}-c{n}-" + "x" * (n * 37)}
            answer = cli.Host.echo(message=payload)
            if answer != payload:
                wrong.append((payload, answer))
        return wrong

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(worker, range(threads)))
    assert results == [[]] * threads
    assert cli._pending == {}


def test_threads_calling_at_once_each_get_their_own_answers(cli: Client):
    concurrent_echoes(cli)


def test_threads_calling_at_once_over_tls(tmp_path: Path, pki: Pki):
    """Reads and writes from many threads on one TLS connection (OpenSSL is not
    thread-safe per connection: the client must serialize them)."""
    front = Front(
        tmp_path, ssl=True, cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert
    )
    try:
        tls = client_context(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
        for _ in range(3):
            with connect("127.0.0.1", front.port, tls=tls, timeout=10) as cli:
                concurrent_echoes(cli)
    finally:
        front.stop()


def test_events_arrive_on_the_subscribed_queue(cli: Client, front: Front):
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    prefix: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    cli.subscribe(EVENTS, events)
    cli.subscribe("jms.queue", prefix)
    assert cli.Host.ping() is True  # frames are handled in order: the subscriptions are in
    params = {"vm-1": {"status": "Up", "hash": "-1"}, "notify_time": 4294967295}
    front.ref.tell(Publish(Event(method="|virt|VM_status|vm-1", params=params)))
    assert events.get(timeout=10) == ("|virt|VM_status|vm-1", params)
    assert prefix.get(timeout=10) == ("|virt|VM_status|vm-1", params)
    assert cli.Host.echo(message="not an event") == "not an event"
    assert events.empty()
    assert prefix.empty()


def test_calls_fail_with_client_closed_when_the_server_goes_away(front: HangingFront, cli: Client):
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(cli.call, "Test.hang", timeout=30)
        assert front.hanging.wait(10)
        front.stop()
        with pytest.raises(ClientClosed):
            pending.result(timeout=10)
    with pytest.raises(ClientClosed, match="server closed"):
        cli.Host.ping()
    cli.close()
    assert not cli._reader.is_alive()
    with pytest.raises(ConnectionRefusedError):
        connect("127.0.0.1", front.port, timeout=10)


def test_the_with_form_closes_cleanly(front: Front, caplog: pytest.LogCaptureFixture):
    with connect("127.0.0.1", front.port, timeout=10) as cli:
        assert cli.Host.ping() is True
    assert not cli._reader.is_alive()
    with pytest.raises(ClientClosed):
        cli.Host.ping()
    cli.close()  # again: nothing happens
    assert "connection lost" not in caplog.text
    with (
        pytest.raises(ServerError),
        connect("127.0.0.1", front.port, timeout=10) as failing,
    ):
        failing.Host.nosuch()
    with pytest.raises(ClientClosed):
        failing.Host.ping()
    with connect("127.0.0.1", front.port, timeout=10) as again:  # the server serves on
        assert again.Host.ping() is True


def test_a_server_that_never_says_connected_is_a_timeout():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(CallTimeout):
            connect("127.0.0.1", port, timeout=0.2)


def test_a_plain_client_to_a_tls_server_fails(tmp_path: Path, pki: Pki):
    front = Front(
        tmp_path, ssl=True, cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert
    )
    try:
        with pytest.raises((ClientClosed, ssl.SSLError)):
            connect("127.0.0.1", front.port, timeout=10)
    finally:
        front.stop()
