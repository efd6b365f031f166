"""A raw STOMP connection for fuzzing: pipelines any bodies, collects every answer by id.

Unlike the client library it sends bytes no client should (bodies that are not
JSON, surrogate ids, batches past the cap, frames dripped a byte at a time) and
keeps everything that comes back: each JSON-RPC response (by the id it echoes),
each ERROR frame, and whether the server closed. One reader thread per
connection parses frames; `wait_answered` blocks the test until every request
sent was answered or the server closed the connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from hostvisor.api.stomp.frames import FrameError, FrameParser, Limits, encode

REQUESTS = "jms.topic.vdsm_requests"


def request(method: Any, params: Any, request_id: Any) -> dict[str, Any]:
    """One JSON-RPC request object (any kinds, on purpose)."""
    return {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}


class FuzzConnection:
    """A STOMP 1.2 connection that sends raw bodies and records what comes back.

    Thread-safe: any thread may send; the reader thread records answers under a lock.
    """

    def __init__(self, port: int, *, timeout: float = 30.0, handshake: bool = True) -> None:
        """Connect (blocking, at most `timeout`); with `handshake`, CONNECT and SUBSCRIBE."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reply_to = f"fuzz-{id(self)}"
        self.changed = threading.Condition()
        self.answers: dict[str, list[dict[str, Any]]] = {}
        """Responses by `json.dumps(id)` (so surrogate and int ids are keys too)."""
        self.codes: Counter[int] = Counter()
        self.errors: list[str] = []
        """The `message` header of each ERROR frame."""
        self.frames = 0
        self.messages = 0
        self.closed = False
        self.broken: str | None = None
        """Why the reader stopped early (a frame the client could not parse)."""
        self._write = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="fuzz-reader", daemon=True)
        self._reader.start()
        if handshake:
            self.send_raw(encode("CONNECT", {"accept-version": "1.2", "host": "fuzz"}))
            self.wait(lambda: self.frames >= 1 or self.closed, timeout, "CONNECTED")
            if self.frames == 0:
                raise ConnectionError(f"closed before CONNECTED ({self.broken})")
            self.send_raw(
                encode("SUBSCRIBE", {"destination": self.reply_to, "id": "1", "ack": "auto"})
            )

    # -- sending ----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (blocking); ignored once the server closed."""
        with self._write:
            try:
                self.sock.sendall(data)
            except OSError:
                with self.changed:
                    self.closed = True
                    self.changed.notify_all()

    def send_body(self, body: bytes | str, **headers: str) -> None:
        """SEND one request body to the request queue, replies to this connection."""
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        self.send_raw(
            encode(
                "SEND",
                {"destination": REQUESTS, "reply-to": self.reply_to, **headers},
                data,
            )
        )

    def send_json(self, document: Any) -> None:
        """SEND a JSON document (lone surrogates are escaped by `json`)."""
        self.send_body(json.dumps(document))

    def exchange(self, body: bytes | str | list[Any] | dict[str, Any], timeout: float) -> None:
        """Send one body and wait for its one MESSAGE (every body that is not a lone
        notification gets one), within the connection's request budget."""
        with self.changed:
            before = self.messages
        if isinstance(body, list | dict):
            self.send_json(body)
        else:
            self.send_body(body)
        self.wait(lambda: self.closed or self.messages > before, timeout, "the answer")

    def drip(self, data: bytes, pause: float, stop: threading.Event | None = None) -> bool:
        """Send `data` a byte at a time, `pause` seconds apart; False if stopped or closed."""
        for index in range(len(data)):
            if self.closed or (stop is not None and stop.is_set()):
                return False
            self.send_raw(data[index : index + 1])
            time.sleep(pause)  # the drip itself is what is tested: a slow client's pace
        return not self.closed

    # -- what came back ---------------------------------------------------------------------

    def answered(self, request_id: Any) -> list[dict[str, Any]]:
        """The responses that echo `request_id`."""
        with self.changed:
            return list(self.answers.get(json.dumps(request_id), []))

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        """Block until `predicate()` holds (checked on each frame); fail after `timeout`."""
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; "
                    f"closed={self.closed} errors={self.errors[-3:]} broken={self.broken}"
                )

    def wait_answered(self, ids: Iterable[Any], timeout: float) -> list[Any]:
        """Wait until every id was answered or the server closed; return the unanswered.

        An id left unanswered is only allowed when the server closed the connection
        after an ERROR frame; the caller checks that.
        """
        keys = [json.dumps(i) for i in ids]
        self.wait(
            lambda: self.closed or all(k in self.answers for k in keys),
            timeout,
            f"answers to {len(keys)} requests",
        )
        with self.changed:
            return [json.loads(k) for k in keys if k not in self.answers]

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the server closes; return whether it did."""
        with self.changed:
            return self.changed.wait_for(lambda: self.closed, timeout)

    def close(self) -> None:
        """Close the socket (the reader then ends)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(timeout=10)

    def _read(self) -> None:
        parser = FrameParser(Limits(max_body=256 * 1024 * 1024, max_headers=1024))
        try:
            while True:
                chunk = self.sock.recv(262144)
                if not chunk:
                    break
                parser.feed(chunk)
                for frame in parser.frames():
                    self._record(frame.command, dict(frame.headers), frame.body)
        except FrameError as error:
            self.broken = f"unparseable frame from the server: {error}"
        except OSError:
            pass
        finally:
            with self.changed:
                self.closed = True
                self.changed.notify_all()

    def _record(self, command: str, headers: dict[str, str], body: bytes) -> None:
        with self.changed:
            self.frames += 1
            if command == "ERROR":
                self.errors.append(headers.get("message", ""))
            elif command == "MESSAGE":
                self.messages += 1
                try:
                    document = json.loads(body)
                except ValueError:
                    self.broken = f"a MESSAGE that is not JSON: {body[:80]!r}"
                    document = []
                for response in document if isinstance(document, list) else [document]:
                    key = json.dumps(response.get("id"))
                    self.answers.setdefault(key, []).append(response)
                    if "error" in response:
                        self.codes[int(response["error"]["code"])] += 1
                    else:
                        self.codes[0] += 1
            self.changed.notify_all()
