"""Independent clients for API tests: stomp.py, and a raw socket for bad input."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from typing import Any

import stomp

REQUESTS = "jms.topic.vdsm_requests"
EVENTS = "jms.queue.events"


class Recorder(stomp.ConnectionListener):  # type: ignore[misc]
    """Keeps what stomp.py received, with waits on each kind."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.messages: list[tuple[dict[str, str], str]] = []
        self.receipts: set[str] = set()
        self.errors: list[dict[str, str]] = []
        self.heartbeats = 0

    def _add(self, update: Any) -> None:
        with self.changed:
            update()
            self.changed.notify_all()

    def on_message(self, frame: Any) -> None:
        self._add(lambda: self.messages.append((frame.headers, frame.body)))

    def on_receipt(self, frame: Any) -> None:
        self._add(lambda: self.receipts.add(frame.headers["receipt-id"]))

    def on_error(self, frame: Any) -> None:
        self._add(lambda: self.errors.append(frame.headers))

    def on_heartbeat(self) -> None:
        def beat() -> None:
            self.heartbeats += 1

        self._add(beat)

    def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise TimeoutError("nothing arrived in time")

    def next_message(self, timeout: float = 10.0) -> tuple[dict[str, str], str]:
        self.wait(lambda: self.messages, timeout)
        with self.changed:
            return self.messages.pop(0)


class StompPyClient:
    """A stomp.py 1.2 connection that sends JSON-RPC requests and reads replies."""

    def __init__(self, port: int, *, heartbeats: tuple[int, int] = (0, 0), **ssl: Any) -> None:
        self.conn = stomp.Connection12(
            [("127.0.0.1", port)], heartbeats=heartbeats, auto_content_length=True
        )
        if ssl:
            self.conn.set_ssl(for_hosts=[("127.0.0.1", port)], **ssl)
        self.listener = Recorder()
        self.conn.set_listener("test", self.listener)
        self.reply_to = str(uuid.uuid4())

    def connect(self, *, subscribe: bool = True) -> StompPyClient:
        self.conn.connect(with_connect_command=True, wait=True)
        if subscribe:
            self.subscribe(self.reply_to, receipt=True)
        return self

    def subscribe(self, destination: str, *, receipt: bool = False) -> None:
        receipt_id = str(uuid.uuid4()) if receipt else None
        headers = {"receipt": receipt_id} if receipt_id else {}
        self.conn.subscribe(
            destination=destination, id=str(uuid.uuid4()), ack="auto", headers=headers
        )
        if receipt_id:
            self.listener.wait(lambda: receipt_id in self.listener.receipts)

    def send_body(self, body: str) -> None:
        self.conn.send(
            destination=REQUESTS,
            body=body,
            content_type="application/json",
            headers={"reply-to": self.reply_to},
        )

    def call(self, method: str, params: Any = None, *, request_id: str | None = None) -> Any:
        request_id = request_id or str(uuid.uuid4())
        body = {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": request_id}
        self.send_body(json.dumps(body))
        return self.wait_reply()

    def wait_reply(self) -> Any:
        headers, body = self.listener.next_message()
        assert headers["destination"] == self.reply_to
        assert "subscription" in headers
        assert int(headers["content-length"]) == len(body.encode())
        return json.loads(body)

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect()


class RawClient:
    """A plain socket, for the bytes no well-behaved client sends."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[str, dict[str, str], bytes]:
        """Read the next non-heartbeat frame (no escapes needed for the tests)."""
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")
            head_end = self.buffer.find(b"\n\n")
            if head_end != -1:
                head = self.buffer[:head_end].decode().split("\n")
                headers = {
                    name: _unescape(value)
                    for name, value in (line.split(":", 1) for line in head[1:])
                }
                length = int(headers["content-length"])
                end = head_end + 2 + length
                if len(self.buffer) > end:
                    body = self.buffer[head_end + 2 : end]
                    self.buffer = self.buffer[end + 1 :]
                    return head[0], headers, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk

    def closed_by_server(self) -> bool:
        """Read until EOF; True if the server closed (heartbeat EOLs are skipped)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                if chunk.strip(b"\r\n"):
                    self.buffer += chunk
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def _unescape(value: str) -> str:
    return value.replace("\\c", ":").replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
