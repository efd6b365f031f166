"""The client library: VDSM's JSON-RPC over STOMP, as `vdsm.client` offers it.

    from hostvisor.api.client import connect

    with connect("127.0.0.1", 54321) as cli:
        cli.Host.ping()
        caps = cli.Host.getCapabilities(_timeout=30)
        cli.subscribe("jms.queue.events", events)  # (method, params) tuples

A call blocks its caller until the answer or its timeout; answers are matched to
calls by JSON-RPC id, so any number of threads may call at once. One reader
thread per client parses frames; writes are serialized by a lock. The socket is
non-blocking and every operation on it holds one I/O lock, because an OpenSSL
connection must not be read and written by two threads at once (doing so corrupts
TLS records); threads wait for readiness with poll, outside the lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import select
import socket
import ssl
import threading
import uuid
from types import TracebackType
from typing import Any, Self

from hostvisor.api.stomp.frames import Frame, FrameError, FrameParser, encode

log = logging.getLogger(__name__)

REQUEST_QUEUE = "jms.topic.vdsm_requests"
DEFAULT_PORT = 54321
READ_SIZE = 65536


class ServerError(Exception):
    """The server answered with an error: VDSM's `code` and `message`."""

    def __init__(self, code: int, message: str) -> None:
        """Keep the code and message."""
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class CallTimeout(TimeoutError):
    """No answer within the call's timeout."""


class ClientClosed(ConnectionError):
    """The connection is closed (by us or by the server)."""


class _Pending:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: dict[str, Any] | None = None


class Client:
    """One STOMP connection to a host. Use `connect()` to make one."""

    def __init__(self, sock: socket.socket, *, timeout: float) -> None:
        """Wrap a connected socket; `connect()` does the STOMP handshake."""
        self.timeout = timeout
        self._sock = sock
        self._write_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._released = False
        self._lost = ""
        self._pending: dict[str, _Pending] = {}
        self._subscriptions: dict[str, queue.Queue[tuple[str, dict[str, Any]]]] = {}
        self._reply_to = str(uuid.uuid4())
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._settled = threading.Event()  # CONNECTED arrived, or the reader ended
        # owns a thread: the client's blocking socket reader (a client, not an actor)
        self._reader = threading.Thread(target=self._read, name="hostvisor-client", daemon=True)

    # -- connection ------------------------------------------------------------------------

    def _handshake(self) -> None:
        self._reader.start()
        try:
            self._send(
                "SUBSCRIBE", {"destination": self._reply_to, "id": self._reply_to, "ack": "auto"}
            )
            self._send("CONNECT", {"accept-version": "1.2", "heart-beat": "0,24000"})
        except ClientClosed:
            self._settled.wait(self.timeout)  # the reader's reason, if it has one
            raise ClientClosed(self._why_closed("before CONNECTED")) from None
        settled = self._settled.wait(self.timeout)
        if not self._connected.is_set():
            if not settled:
                raise CallTimeout("no CONNECTED from the server")
            raise ClientClosed(self._why_closed("before CONNECTED"))

    def close(self) -> None:
        """Disconnect (idempotent); pending calls fail with `ClientClosed`.

        Also releases the socket when the server closed the connection first.
        """
        with self._close_lock:
            if self._released:
                return
            self._released = True
        with contextlib.suppress(OSError):
            self._send("DISCONNECT", {})
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(self.timeout)  # the shutdown wakes it
        with self._write_lock, self._io_lock:
            self._sock.close()
        self._fail_pending()

    def __enter__(self) -> Self:
        """Use the client in a `with` block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the connection."""
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        flow_id: str | None = None,
    ) -> Any:
        """Call `method` and return its result (blocking, at most `timeout` s).

        Raises:
            ServerError: the server answered with an error.
            CallTimeout: no answer in time.
            ClientClosed: the connection is closed.
        """
        request_id = str(uuid.uuid4())
        body = json.dumps(
            {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": request_id}
        ).encode()
        pending = _Pending()
        self._pending[request_id] = pending
        headers = {
            "destination": REQUEST_QUEUE,
            "reply-to": self._reply_to,
            "content-type": "application/json",
        }
        if flow_id:
            headers["ovirtCorrelationId"] = flow_id
        wait = self.timeout if timeout is None else timeout
        try:
            self._send("SEND", headers, body)
            if not pending.done.wait(wait):
                raise CallTimeout(f"{method}: no answer within {wait} s")
        finally:
            self._pending.pop(request_id, None)
        response = pending.response
        if response is None:
            raise ClientClosed(f"{method}: connection closed before the answer")
        if "error" in response:
            error = response["error"]
            raise ServerError(int(error.get("code", -32603)), str(error.get("message", "")))
        return response.get("result")

    def subscribe(self, destination: str, events: queue.Queue[tuple[str, dict[str, Any]]]) -> None:
        """Deliver the notifications sent to `destination` into `events` as (method, params)."""
        sub_id = str(uuid.uuid4())
        self._subscriptions[sub_id] = events
        self._send("SUBSCRIBE", {"destination": destination, "id": sub_id, "ack": "auto"})

    def __getattr__(self, namespace: str) -> _Namespace:
        """`cli.Host` is the Host namespace; `cli.Host.ping()` calls Host.ping."""
        if namespace.startswith("_"):
            raise AttributeError(namespace)
        return _Namespace(self, namespace)

    # -- wire ------------------------------------------------------------------------------

    def _send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        if self._closed.is_set():
            raise ClientClosed(self._why_closed())
        data = memoryview(encode(command, headers, body))
        with self._write_lock:
            try:
                while data:
                    data = data[self._write_some(data) :]
            except (OSError, ValueError) as error:  # ValueError: the socket was closed
                raise ClientClosed(f"the connection is closed: {error}") from error

    def _why_closed(self, when: str = "") -> str:
        if self._released:
            return "the connection is closed"
        what = f"the server closed the connection {when}".rstrip()
        return f"{what}: {self._lost}" if self._lost else what

    def _write_some(self, data: memoryview) -> int:
        """Write what the socket takes now; wait for it (outside the lock) if nothing."""
        with self._io_lock:
            try:
                return self._sock.send(data)
            except (ssl.SSLWantWriteError, BlockingIOError):
                wanted = select.POLLOUT
            except ssl.SSLWantReadError:
                wanted = select.POLLIN
        _wait(self._sock, wanted)
        return 0

    def _receive(self) -> bytes | None:
        """Return what arrived (b"" at the end), or None after waiting for more."""
        with self._io_lock:
            try:
                return self._sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError):
                wanted = select.POLLIN
            except ssl.SSLWantWriteError:
                wanted = select.POLLOUT
        _wait(self._sock, wanted)
        return None

    def _read(self) -> None:
        parser = FrameParser()
        try:
            while not self._closed.is_set():
                chunk = self._receive()
                if chunk is None:
                    continue
                if not chunk:
                    break
                parser.feed(chunk)
                for frame in parser.frames():
                    self._on_frame(frame)
        except (OSError, ValueError, FrameError) as error:  # ValueError: closed under us
            if not self._closed.is_set():
                self._lost = str(error)
                log.info("connection lost: %s", error)  # the caller hears it: `_lost`
        finally:
            self._closed.set()
            self._fail_pending()
            self._settled.set()

    def _on_frame(self, frame: Frame) -> None:
        if frame.command == "CONNECTED":
            self._connected.set()
            self._settled.set()
        elif frame.command == "MESSAGE":
            self._on_message(frame)
        elif frame.command == "ERROR":
            log.warning("server error frame: %s", frame.headers.get("message", ""))

    def _on_message(self, frame: Frame) -> None:
        try:
            document = json.loads(frame.body)
        except ValueError:
            log.warning("undecodable message on %s", frame.headers.get("destination"))
            return
        subscription = frame.headers.get("subscription", "")
        if subscription in self._subscriptions:
            if isinstance(document, dict) and "method" in document:
                self._subscriptions[subscription].put(
                    (document["method"], document.get("params", {}))
                )
            return
        for response in document if isinstance(document, list) else [document]:
            pending = self._pending.get(str(response.get("id")))
            if pending is not None:
                pending.response = response
                pending.done.set()

    def _fail_pending(self) -> None:
        for pending in list(self._pending.values()):
            pending.done.set()


def _wait(sock: socket.socket, events: int) -> None:
    """Block until `sock` is ready for `events` (or hung up). ValueError once it is closed."""
    poller = select.poll()
    poller.register(sock.fileno(), events)
    poller.poll()


class _Namespace:
    __slots__ = ("_client", "_name")

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self._name = name

    def __getattr__(self, verb: str) -> Any:
        method = f"{self._name}.{verb}"

        def invoke(
            _timeout: float | None = None, _flow_id: str | None = None, **params: Any
        ) -> Any:
            return self._client.call(method, params, timeout=_timeout, flow_id=_flow_id)

        invoke.__name__ = verb
        return invoke


def connect(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = 60.0,
) -> Client:
    """Connect to a host's API and return a ready client (blocking).

    Args:
        host: address of the host.
        port: the API port.
        tls: a client context (see `hostvisor.api.tls.client_context`); None for plain.
        timeout: default seconds per call, and for connecting.

    Raises:
        OSError: the connection or the TLS handshake failed.
        CallTimeout: the server did not answer CONNECT.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    sock.settimeout(0.0)  # non-blocking: see the module's docstring
    client = Client(sock, timeout=timeout)
    try:
        client._handshake()  # noqa: SLF001 - part of construction
    except BaseException:
        client.close()
        raise
    return client
