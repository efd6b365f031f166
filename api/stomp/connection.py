"""One STOMP connection: detection, frames in, frames out, heart-beats.

Framing errors (garbage, a frame without NUL, a wrong content-length, a limit
passed) get an ERROR frame and the connection is closed: its byte stream can no
longer be trusted. Semantic errors (a SUBSCRIBE without id, an unknown version)
get an ERROR and the connection carries on. Nothing a peer sends can raise out
of here: the server and every other connection carry on.

Budgets, per connection (see `ServerSettings`):
- requests in flight: `max_pending`, each element of a batch counting one;
- a started frame must be complete within `frame_timeout` (60 s) of its first
  byte or of the previous complete frame, or the connection is closed with an
  ERROR frame; an idle connection (nothing or only heart-beats buffered) has no
  read deadline;
- unsent bytes: past `PAUSE_BACKLOG` (1 MiB) the connection reads nothing more
  until the peer has caught up, and is closed if it has not within
  `frame_timeout`; a peer whose backlog passes `max_backlog` (8 MiB) when another
  frame is due is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING

from hostvisor.api.rpc.dispatch import Origin
from hostvisor.api.stomp.frames import (
    CLIENT_COMMANDS,
    DETECT_BYTES,
    EOL,
    Frame,
    FrameError,
    FrameParser,
    encode,
    looks_like_stomp,
)

if TYPE_CHECKING:
    from hostvisor.api.stomp.server import StompServer

log = logging.getLogger(__name__)

READ_SIZE = 65536
PAUSE_BACKLOG = 1024 * 1024
"""Unsent bytes past which the connection stops reading until the peer catches up."""


class StompConnection:
    """Serves one peer until it leaves, misbehaves or the server closes."""

    def __init__(
        self, server: StompServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Wrap an accepted stream."""
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        local = writer.get_extra_info("sockname") or ("?", 0)
        self.local = f"{local[0]}:{local[1]}"
        self.parser = FrameParser(server.settings.limits)
        self.sub_ids: set[str] = set()
        self.pending = 0
        self.send_interval = server.settings.idle_heartbeat
        self.expect_interval: float | None = None
        self.last_received = time.monotonic()
        self._frame_since: float | None = None
        """When the buffered partial frame started (or the last frame completed)."""
        self._closed = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- life -----------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Detect STOMP, then handle frames until the end."""
        self._restart_heartbeat()
        try:
            if await self._detect():
                await self._read_loop()
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as error:
            log.debug("connection %s ended: %s", self.peer, error)
        finally:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()
            self.close()

    def _restart_heartbeat(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        self._heartbeat_task = asyncio.create_task(self._heartbeat())

    async def _detect(self) -> bool:
        """Read the first bytes; anything that is not STOMP is closed quietly."""
        data = b""
        deadline = self.server.settings.detect_timeout
        try:
            async with asyncio.timeout(deadline):
                while len(data) < DETECT_BYTES and b"\n" not in data:
                    chunk = await self.reader.read(READ_SIZE)
                    if not chunk:
                        return False
                    data += chunk
        except TimeoutError:
            log.info("connection %s sent no STOMP in %s s; closed", self.peer, deadline)
            return False
        if not looks_like_stomp(data):
            log.info("connection %s is not STOMP (%r); closed", self.peer, data[:16])
            return False
        self.parser.feed(data)
        return await self._process()

    async def _read_loop(self) -> None:
        while not self._closed:
            if self._backlog() > PAUSE_BACKLOG and not await self._catch_up():
                return
            if self._frame_since is None:
                chunk = await self.reader.read(READ_SIZE)
            else:
                chunk = await self._read_more_of_frame(self._frame_since)
            if not chunk:
                return
            self.parser.feed(chunk)
            if not await self._process():
                return

    async def _read_more_of_frame(self, since: float) -> bytes:
        """Read the rest of a started frame; b"" (after an ERROR) once its time is up."""
        timeout = self.server.settings.frame_timeout
        try:
            async with asyncio.timeout(max(since + timeout - time.monotonic(), 0.0)):
                return await self.reader.read(READ_SIZE)
        except TimeoutError:
            log.info("connection %s sent no complete frame in %s s; closed", self.peer, timeout)
            self.send_error(f"no complete frame in {timeout:g} s")
            return b""

    async def _catch_up(self) -> bool:
        """Wait (reading nothing) until the peer has read its backlog; False: closed."""
        try:
            async with asyncio.timeout(self.server.settings.frame_timeout):
                await self.writer.drain()
        except TimeoutError:
            log.warning("connection %s does not read its replies; closed", self.peer)
            self._abort()
            return False
        return True

    async def _process(self) -> bool:
        """Handle every complete frame received; False once the connection must end."""
        now = self.last_received = time.monotonic()
        completed = False
        try:
            for frame in self.parser.frames():
                completed = True
                if not self._handle(frame):
                    return False
        except FrameError as error:
            log.info("connection %s: %s; closed", self.peer, error.reason)
            self.send_error(error.reason)
            return False
        if not self.parser.partial:
            self._frame_since = None
        elif completed or self._frame_since is None:
            self._frame_since = now
        return True

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self.writer.close()

    # -- frames in ------------------------------------------------------------------------------

    def _handle(self, frame: Frame) -> bool:
        if frame.command not in CLIENT_COMMANDS:
            self.send_error(f"unsupported command {frame.command}")
            return False
        if frame.command == "DISCONNECT":
            self._receipt(frame)
            return False
        handler = {
            "CONNECT": self._on_connect,
            "SUBSCRIBE": self._on_subscribe,
            "UNSUBSCRIBE": self._on_unsubscribe,
            "SEND": self._on_send,
        }[frame.command]
        handler(frame)
        if frame.command != "CONNECT":
            self._receipt(frame)
        return True

    def _on_connect(self, frame: Frame) -> None:
        if frame.headers.get("accept-version") != "1.2":
            self.send_error("Version unsupported")
            return
        client_send, client_want = _heartbeat_pair(frame.headers.get("heart-beat", "0,0"))
        floor = self.server.settings.min_heartbeat_ms
        sx = max(client_want, floor) if client_want else 0
        sy = max(client_send, floor) if client_send else 0
        if sx:
            self.send_interval = min(self.send_interval, sx / 1000)
        self.expect_interval = sy / 1000 if sy else None
        self._restart_heartbeat()
        self.send_raw(encode("CONNECTED", {"version": "1.2", "heart-beat": f"{sx},{sy}"}))

    def _on_subscribe(self, frame: Frame) -> None:
        destination = frame.headers.get("destination")
        sub_id = frame.headers.get("id")
        if not destination or not sub_id:
            self.send_error("SUBSCRIBE needs destination and id headers")
            return
        if sub_id in self.sub_ids:
            self.send_error(f"subscription id {sub_id} is already in use")
            return
        from hostvisor.api.stomp.server import Subscription  # noqa: PLC0415 - import cycle

        self.sub_ids.add(sub_id)
        self.server.subscribe(Subscription(self, sub_id, destination))

    def _on_unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.headers.get("id", "")
        self.sub_ids.discard(sub_id)
        self.server.unsubscribe(self, sub_id)

    def _on_send(self, frame: Frame) -> None:
        destination = frame.headers.get("destination", "")
        copied = self.server.deliver(destination, frame.body, prefixes=True)
        if self.server.is_request_queue(destination):
            self._request(frame)
        elif not copied:
            self.send_error(f"Subscription not available: {destination}")

    def _request(self, frame: Frame) -> None:
        """Charge the body's requests to the budget, then answer it in a task."""
        reply_to = frame.headers.get("reply-to")
        handler = self.server.handler
        body = handler.decode(frame.body)
        cost, limit = body.cost, self.server.settings.max_pending
        if self.pending and self.pending + cost > limit:
            dropped = f"batch of {cost} requests" if cost > 1 else "request"
            self.send_error(
                f"too many pending requests ({self.pending} in flight, limit {limit}); "
                f"{dropped} dropped"
            )
            return
        self.pending += cost
        origin = Origin(self.peer, self.local, frame.headers.get("ovirtCorrelationId"))
        task = asyncio.create_task(handler.answer(body, origin))
        task.add_done_callback(lambda done: self._answered(done, reply_to, cost))

    def _answered(self, task: asyncio.Task[bytes | None], reply_to: str | None, cost: int) -> None:
        self.pending -= cost
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # a bug: the handler never raises; still, the peer hears
            log.error("request from %s failed unexpectedly", self.peer, exc_info=error)
            self.send_error("internal error: a request could not be answered")
            return
        body = task.result()
        if body is not None and reply_to:
            self.server.deliver(reply_to, body, prefixes=False)

    def _receipt(self, frame: Frame) -> None:
        receipt = frame.headers.get("receipt")
        if receipt:
            self.send_raw(encode("RECEIPT", {"receipt-id": receipt}))

    # -- frames out -----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Queue bytes for the peer; each frame is written whole, in order.

        A peer whose unsent backlog already passes `max_backlog` is closed rather
        than allowed to grow the agent's memory without bound.
        """
        if self._closed:
            return
        if self._backlog() > self.server.settings.max_backlog:
            log.warning("connection %s does not read its replies; closed", self.peer)
            self._abort()
            return
        self.writer.write(data)

    def _backlog(self) -> int:
        transport = self.writer.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def _abort(self) -> None:
        self._closed = True
        self.writer.transport.abort()

    def send_error(self, message: str) -> None:
        """Send an ERROR frame with `message` as its header and body."""
        self.send_raw(
            encode("ERROR", {"message": message, "content-type": "text/plain"}, message.encode())
        )

    async def _heartbeat(self) -> None:
        """Send EOLs when idle; drop a peer that promised heart-beats and went silent."""
        last_sent = time.monotonic()
        while not self._closed:
            expect = self.expect_interval
            tick = self.send_interval if expect is None else min(self.send_interval, expect / 2)
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - last_sent >= self.send_interval - 0.001:
                self.send_raw(EOL)
                last_sent = now
            if expect is not None and now - self.last_received > expect * 1.5:
                log.info("connection %s silent past its heart-beat; closed", self.peer)
                self.close()


def _heartbeat_pair(text: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in text.split(",", 1))
    except ValueError:
        return 0, 0
    return max(first, 0), max(second, 0)
