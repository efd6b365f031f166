"""One STOMP connection: detection, frames in, frames out, heart-beats.

The usual frame — a SEND to a request queue whose head, but for its length, the
peer sent before — takes the quick path (`quick.py`): no parser, no `Frame`, the
answer written within the read callback. Anything else, or anything the quick
path is unsure of, goes through the parser and `_handle`, so both paths accept,
refuse and answer the same bytes alike.

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
  frame is due is closed at once;
- memory: the bytes a connection holds — its partial frame (at most
  `limits.max_body`), the bodies of its requests being answered (counted as their
  JSON text) and its unsent bytes — are counted, per connection and for the
  server. When the last two pass `connection_budget` (32 MiB) the connection reads
  nothing more until they are under half of it (answers and the peer's reads bring
  them down). While the server's total is past `memory_budget` (96 MiB), a
  connection that receives anything reads nothing more until the total is back
  under three quarters of it — except one at a time (the server's runner), which
  may finish the frame it started while the bytes being answered and unsent are
  under a quarter of the budget, so that partial frames alone never stall the
  edge. TCP holds the rest at the peer: nothing is refused and nothing
  changes on the wire. A paused peer is not held to its heart-beats; its frame
  deadline still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, cast

from hostvisor.api.http.detect import looks_like_http
from hostvisor.api.rpc.dispatch import Body, Origin
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
from hostvisor.api.stomp.quick import Quick, QuickPath
from hostvisor.api.stomp.receiver import Receiver, take_buffered

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
        self._transport = cast("asyncio.Transport", writer.transport)
        """The transport as it is once TLS (if any) is started: the connection's own."""
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
        self.closed = False
        """Closed (or aborted) by us: nothing more is read, handled or sent."""
        self._refused = False  # an ERROR frame was sent: STOMP 1.2 says close right after
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._receiver: Receiver | None = None
        self._deadline: asyncio.TimerHandle | None = None
        """Fires when the started frame's time is up (armed while one is partial)."""
        self._catching_up: asyncio.Task[None] | None = None
        """While reading is paused for the backlog to drain."""
        self._inflight = 0
        """Bytes of the bodies of this connection's requests answered in tasks."""
        self.held = 0
        """Bytes this connection holds (see the budgets above), as last counted."""
        self.working = 0
        """Of which bodies of requests being answered and unsent bytes."""
        self._over_budget = False
        """Reading is paused for a memory budget: its own or the server's."""
        self._paused_own = False
        """Its requests being answered and unsent bytes passed `connection_budget`."""
        self._paused_total = False
        """The server's total passed `memory_budget`; waiting for it to fall."""
        self._reading_paused = False
        self._answer_now = getattr(server.handler, "answer_now", None)
        self._quick_answer: Quick | None = getattr(server.handler, "quick", None)
        settings = server.settings  # read on every frame: kept at hand
        self._max_pending, self._max_backlog, self._memory_budget = (
            settings.max_pending,
            settings.max_backlog,
            settings.memory_budget,
        )
        self._origin = Origin(self.peer, self.local)
        self._quick = self._quick_path()
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _quick_path(self) -> QuickPath | None:
        """The quick path for this connection, if the handler has one (`quick.py`)."""
        handler = self.server.handler
        quick = self._quick_answer
        if quick is None:
            return None
        plain, run_plain = getattr(handler, "plain", None), getattr(handler, "run_plain", None)
        return QuickPath(self, quick, plain, run_plain)

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
            if self._deadline is not None:
                self._deadline.cancel()
            if self._catching_up is not None:
                self._catching_up.cancel()
            self.close()
            self.server.forget_held(self)
            self.held = self.working = 0

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
        http = self.server.http
        if http is not None and looks_like_http(data):  # VDSM's image transfers: api/http/
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()
            await http.serve(self.reader, self.writer, data, self.peer)
            return False
        if not looks_like_stomp(data):
            log.info("connection %s is not STOMP (%r); closed", self.peer, data[:16])
            return False
        self.parser.feed(data)
        return await self._process()

    async def _read_loop(self) -> None:
        """Serve frames as their bytes arrive until the connection ends (loop thread).

        From here on the transport hands each read straight to `_received` through a
        `Receiver`, which replaces the stream's protocol: no task step, no future and
        no copy into the stream's buffer per read, and a request whose answer needs no
        waiting is answered within the same callback.
        """
        transport = self.writer.transport
        if self.closed or transport is None or transport.is_closing():
            return
        receiver = Receiver(self, transport.get_protocol())
        left = take_buffered(self.reader)
        transport.set_protocol(receiver)
        self._receiver = receiver
        if left:
            self._received(left)
        elif self._frame_since is not None:
            self._arm_deadline(self._frame_since)
        if self.reader.at_eof():
            receiver.end()
        await receiver.ended

    def _received(self, data: bytes) -> None:
        """Handle bytes from the peer (loop thread, from the transport). Never raises."""
        if self.closed:
            return
        try:
            quick = self._quick
            if quick is not None and not self.parser.buffer:
                data = quick.serve(data)
                if not data:
                    self._frame_since = None
            if data:
                self.parser.feed(data)
                if not self._consume():
                    self._end()
                    return
        except Exception:  # a bug: the connection ends, the server carries on
            log.exception("connection %s: unexpected error; closed", self.peer)
            self._end()
            return
        if self._frame_since is not None and self._deadline is None:
            self._arm_deadline(self._frame_since)
        backlog = self._transport.get_write_buffer_size()
        if backlog > PAUSE_BACKLOG and self._catching_up is None:
            self._pause_reading()
        server = self.server
        if (
            self.held
            or backlog
            or self._inflight
            or self.parser.buffer
            or self._over_budget
            or server.held > self._memory_budget
        ):  # else it held nothing before or now, and reads on: nothing to count
            self.check_budgets()

    def check_budgets(self) -> None:
        """Count what the connection holds; pause or resume reading to match (loop thread).

        Called whenever that may have changed: after a read, after an answer, when
        the peer has read its backlog, and by the server when its total fell or its
        runner slot (see `StompServer.runner`) came free. A closed connection counts
        nothing more: `serve` takes what it held off the server's total as it ends.
        """
        if self.closed:
            return
        partial = self.parser.buffered
        working = self._inflight + self._transport.get_write_buffer_size()
        held = partial + working
        server = self.server
        if working != self.working:
            server.working += working - self.working
            self.working = working
        if held != self.held:
            change, self.held = held - self.held, held
            server.hold(change)
        settings = server.settings
        budget = settings.connection_budget
        self._paused_own = working > (budget // 2 if self._paused_own else budget)
        budget = settings.memory_budget
        over = server.held > (budget * 3 // 4 if self._paused_total else budget)
        if partial and over:
            if server.runner is self or (server.runner is None and server.may_run()):
                server.runner = self  # finishes its frame, so that the edge moves on
                over = False
        elif server.runner is self:
            server.runner = None
            server.wake()
        if over:
            server.waiting.add(self)
        paused = self._paused_own or over
        if paused and not self._over_budget:
            log.debug(
                "connection %s paused: holds %d bytes, the edge %d", self.peer, held, server.held
            )
        self._paused_total = over
        self._over_budget = paused
        self._set_reading()

    def _set_reading(self) -> None:
        """Pause or resume reading as the budgets and the backlog say (loop thread)."""
        pause = self._over_budget or self._catching_up is not None
        transport = self._transport
        if pause == self._reading_paused or self.closed or transport.is_closing():
            return
        self._reading_paused = pause
        if pause:
            transport.pause_reading()
        else:
            self.last_received = time.monotonic()  # not held to heart-beats while paused
            transport.resume_reading()

    def _end(self) -> None:
        """Stop serving (loop thread): `serve` returns and closes the connection."""
        if self._receiver is not None:
            self._receiver.end()

    def _arm_deadline(self, since: float) -> None:
        timeout = self.server.settings.frame_timeout
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_at(
            loop.time() + max(since + timeout - time.monotonic(), 0.0), self._frame_due
        )

    def _frame_due(self) -> None:
        """The deadline of a started frame came (loop thread): re-arm, or end it."""
        self._deadline = None
        since = self._frame_since
        if since is None or self.closed:
            return
        timeout = self.server.settings.frame_timeout
        if time.monotonic() < since + timeout:  # a newer frame started since
            self._arm_deadline(since)
            return
        log.info("connection %s sent no complete frame in %s s; closed", self.peer, timeout)
        self.send_error(f"no complete frame in {timeout:g} s")
        self._end()

    def _pause_reading(self) -> None:
        """Read nothing more until the peer has read its backlog (loop thread)."""
        if self._transport.is_closing():
            return
        self._catching_up = asyncio.create_task(self._catch_up())
        self._set_reading()

    async def _catch_up(self) -> None:
        """Wait until the peer has read its backlog, then read again; else close it."""
        try:
            async with asyncio.timeout(self.server.settings.frame_timeout):
                await self.writer.drain()
        except TimeoutError:
            log.warning("connection %s does not read its replies; closed", self.peer)
            self._abort()
            self._end()
            return
        except (ConnectionError, OSError):
            self._end()
            return
        finally:
            self._catching_up = None
        self._set_reading()
        self.check_budgets()

    async def _process(self) -> bool:
        """Handle every complete frame received; False once the connection must end."""
        return self._consume()

    def _consume(self) -> bool:
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
        if not self.closed:
            self.closed = True
            self.writer.close()

    # -- frames in ------------------------------------------------------------------------------

    def _handle(self, frame: Frame) -> bool:
        if frame.command == "SEND":  # nearly every frame
            self._on_send(frame)
            if "receipt" in frame.headers and not self._refused:
                self._receipt(frame)
            return not self._refused
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
        if self._refused:
            return False
        if frame.command != "CONNECT":
            self._receipt(frame)
        return True

    def _on_connect(self, frame: Frame) -> None:
        if frame.headers.get("accept-version") != "1.2":
            self.send_error("Version unsupported", close=True)
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
        server = self.server
        request, targets = server.route(destination)
        copied = server.deliver_to(targets, destination, frame.body) if server.subscriptions else 0
        if request:
            self._request(frame)
        elif not copied:
            self.send_error(f"Subscription not available: {destination}")

    def _request(self, frame: Frame) -> None:
        """Answer the body of a SEND to a request queue (see `serve_body`)."""
        headers = frame.headers
        self.serve_body(
            frame.body, headers.get("reply-to"), self.origin_of(headers), self.last_received
        )

    def origin_of(self, headers: Mapping[str, str]) -> Origin:
        """The origin of the requests in a SEND with `headers` (its flow id, if any)."""
        flow_id = headers.get("ovirtCorrelationId")
        return self._origin if flow_id is None else Origin(self.peer, self.local, flow_id)

    def serve_body(self, raw: bytes, reply_to: str | None, origin: Origin, received: float) -> None:
        """Charge the body's requests to the budget, then answer it.

        A body the handler can answer at once (`quick` or `answer_now`: a lone
        request whose verb needs no actor) is answered here; any other runs in a
        task. `received` is when the body arrived (deadlines run from there).
        """
        quick = self._quick_answer
        if quick is not None and self.pending < self._max_pending:  # room for one request
            self.carry_on(quick(raw, origin, received), raw, reply_to, origin)
        else:
            self._charge(self.server.handler.decode(raw), raw, reply_to, origin)

    def carry_on(
        self,
        answering: bytes | Body | Coroutine[Any, Any, bytes | None] | None,
        raw: bytes,
        reply_to: str | None,
        origin: Origin,
    ) -> None:
        """Carry on with what the handler's `quick` returned for the body `raw`."""
        if type(answering) is bytes:
            if reply_to:
                self.server.deliver(reply_to, answering, prefixes=False)
        elif type(answering) is Body:
            self._charge(answering, raw, reply_to, origin)
        elif answering is not None:
            self._await(answering, reply_to, 1, len(raw))  # type: ignore[arg-type]

    def _charge(self, body: Body, raw: bytes, reply_to: str | None, origin: Origin) -> None:
        """Charge the body's requests to the budget, then answer it (see `serve_body`)."""
        server = self.server
        handler = server.handler
        limit = self._max_pending
        cost = body.cost
        if self.pending and self.pending + cost > limit:
            # Refused, not dropped: each request is answered code 40 at once (the
            # caller may retry), and the connection and its requests in flight go on.
            reason = f"too many pending requests ({self.pending} in flight, limit {limit})"
            log.info("connection %s: %s; %d refused", self.peer, reason, cost)
            refused = handler.refuse(body, reason)
            if refused is not None and reply_to:
                server.deliver(reply_to, refused, prefixes=False)
            return
        answer_now = self._answer_now
        if answer_now is None:
            answering = handler.answer(body, origin)
        else:
            answering = answer_now(body, origin)
            if answering is None or isinstance(answering, bytes):
                if answering is not None and reply_to:
                    server.deliver(reply_to, answering, prefixes=False)
                return
        self._await(answering, reply_to, cost, len(raw))

    def _await(
        self,
        answering: Coroutine[Any, Any, bytes | None],
        reply_to: str | None,
        cost: int,
        size: int,
    ) -> None:
        """Answer in a task; the body counts `cost` requests and `size` bytes until then."""
        self.pending += cost
        self._inflight += size
        task = asyncio.create_task(answering)
        task.add_done_callback(lambda done: self._answered(done, reply_to, cost, size))

    def _answered(
        self, task: asyncio.Task[bytes | None], reply_to: str | None, cost: int, size: int
    ) -> None:
        self.pending -= cost
        self._inflight -= size
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # a bug: the handler never raises; still, the peer hears
            log.error("request from %s failed unexpectedly", self.peer, exc_info=error)
            self.send_error("internal error: a request could not be answered")
        else:
            body = task.result()
            if body is not None and reply_to:
                self.server.deliver(reply_to, body, prefixes=False)
        if not self.closed:
            self.check_budgets()

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
        if self.closed:
            return
        transport = self._transport
        backlog = transport.get_write_buffer_size()
        if backlog > self._max_backlog:
            log.warning("connection %s does not read its replies; closed", self.peer)
            self._abort()
            return
        transport.write(data)
        if backlog or self.held or transport.get_write_buffer_size():
            self.check_budgets()

    def _backlog(self) -> int:
        return self._transport.get_write_buffer_size()

    def _abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()

    def send_error(self, message: str, *, close: bool = False) -> None:
        """Send an ERROR frame with `message` as its header and body; with `close`, end.

        Errors about one frame (a bad SUBSCRIBE, a SEND nobody listens to) keep the
        connection, as VDSM's server does and the Engine expects; an error that leaves
        nothing to talk about (an unsupported version) closes it, as STOMP 1.2 says.
        Replies already queued are sent first either way.
        """
        self.send_raw(
            encode("ERROR", {"message": message, "content-type": "text/plain"}, message.encode())
        )
        if close:
            self._refused = True
            self._end()

    async def _heartbeat(self) -> None:
        """Send EOLs when idle; drop a peer that promised heart-beats and went silent."""
        last_sent = time.monotonic()
        while not self.closed:
            expect = self.expect_interval
            tick = self.send_interval if expect is None else min(self.send_interval, expect / 2)
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - last_sent >= self.send_interval - 0.001:
                self.send_raw(EOL)
                last_sent = now
            silent = now - self.last_received > expect * 1.5 if expect is not None else False
            if silent and not self._reading_paused:
                log.info("connection %s silent past its heart-beat; closed", self.peer)
                self.close()


def _heartbeat_pair(text: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in text.split(",", 1))
    except ValueError:
        return 0, 0
    return max(first, 0), max(second, 0)
