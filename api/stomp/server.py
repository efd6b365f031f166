"""The STOMP server: one asyncio loop serving every connection.

VDSM's broker semantics (reference/vdsm-wire.md §1.2, §10): frames are accepted
before CONNECT; a SEND is copied to the subscribers of its destination and of
every dotted prefix of it; a SEND to a request queue goes to the JSON-RPC
dispatcher and the answer goes to every subscription of the request's
`reply-to`; subscriptions are shared by all connections. Each connection gets an
EOL heart-beat at least every 15 s whether or not it asked, and is dropped only
if it promised heart-beats and then fell silent.

Threads: everything here runs on the loop's thread; `publish` may be called from
any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from hostvisor.api.http.detect import HttpHandler
from hostvisor.api.rpc.dispatch import Body, Origin
from hostvisor.api.stomp.connection import StompConnection
from hostvisor.api.stomp.frames import Limits, encode_head
from hostvisor.api.tls import RefusalLog, alert_of, refusal_reason

log = logging.getLogger(__name__)

REQUEST_QUEUES = ("jms.topic.vdsm_requests", "jms.topic.vdsm_irs_requests")
EVENT_QUEUE = "jms.queue.events"


class RequestHandler(Protocol):
    """Answers request bodies in two steps (the agent's is `Dispatcher`).

    `decode` lets the connection charge the body's requests to its budget before
    anything runs; `answer` runs them.
    """

    def decode(self, body: bytes) -> Body:
        """Decode a body (loop thread; never blocks, never raises)."""

    async def answer(self, body: Body, origin: Origin) -> bytes | None:
        """Answer a decoded body (loop thread); None when nothing is owed. Never raises."""

    def refuse(self, body: Body, reason: str) -> bytes | None:
        """Answer every request of a body with an error, running none. Never raises."""


class ConnectionCounter(Protocol):
    """Counts connections (the metrics' `ApiRecorder`). Never blocks long, never raises."""

    def connection_opened(self) -> None:
        """A connection was accepted (and its TLS handshake done)."""

    def connection_closed(self) -> None:
        """That connection ended."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """Tunables of the STOMP server."""

    limits: Limits = field(default_factory=Limits)
    max_pending: int = 64
    """Requests one connection may have in flight, each element of a batch counting
    one. A body that would pass it is refused — each of its requests answered code 40
    at once, none run — unless
    nothing of the connection is in flight (so one batch up to the batch cap always
    runs): a connection has at most max(max_pending, batch cap) requests in flight."""
    frame_timeout: float = 60.0
    """Seconds a started frame has to complete after protocol detection; past it the
    connection gets an ERROR frame and is closed (a frame dripped forever)."""
    max_backlog: int = 8 * 1024 * 1024
    """Bytes of unsent replies and events one connection may hold: a peer whose
    backlog already passes it when another frame is due is closed. With one frame
    (at most one reply) on top, that bounds a connection's write memory."""
    connection_budget: int = 32 * 1024 * 1024
    """Bytes one connection may hold — its partial frame, the bodies of its requests
    being answered (as JSON text) and its unsent bytes — before it reads nothing more
    (until it holds less than half). At least one frame (`limits.max_body`) fits."""
    memory_budget: int = 96 * 1024 * 1024
    """Bytes all connections together may hold (as above): while the total is past
    it, a connection that receives anything reads nothing more until the total is
    back under three quarters of it."""
    detect_timeout: float = 10.0
    """Seconds a new connection has to send its first frame (and finish TLS)."""
    idle_heartbeat: float = 15.0
    """Send an EOL at least this often on every connection (the Engine needs it)."""
    min_heartbeat_ms: int = 1000
    request_queues: tuple[str, ...] = REQUEST_QUEUES


@dataclass(slots=True)
class Subscription:
    """One SUBSCRIBE of one connection."""

    connection: StompConnection
    id: str
    destination: str
    heads: dict[str, bytes] = field(default_factory=dict)
    """The encoded head of a MESSAGE to it, by destination (at most `_HEADS` kept)."""

    def message(self, destination: str, body: bytes) -> bytes:
        """Return the MESSAGE frame carrying `body` from `destination` to this subscriber."""
        head = self.heads.get(destination)
        if head is None:
            head = encode_head(
                "MESSAGE",
                {
                    "destination": destination,
                    "subscription": self.id,
                    "content-type": "application/json",
                },
            )
            if len(self.heads) < _HEADS:
                self.heads[destination] = head
        return b"%scontent-length:%d\n\n%s\x00" % (head, len(body), body)


_HEADS = 8
"""Encoded MESSAGE heads kept per subscription: a reply subscription needs one, a
prefix subscription one per destination seen (bounded, as a peer picks those)."""
_ROUTES = 256
"""Destinations whose routing (request queue? which prefixes?) is remembered."""


class StompServer:
    """Accepts STOMP connections on one or more sockets and routes their frames."""

    def __init__(
        self,
        handler: RequestHandler,
        *,
        settings: ServerSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        refusals: RefusalLog | None = None,
        http: HttpHandler | None = None,
        connections: ConnectionCounter | None = None,
    ) -> None:
        """Serve request bodies with `handler`; TLS when `ssl_context` is given.

        `refusals` logs refused TLS handshakes (default: 10 lines per 10 s).
        `http` serves connections that open with an HTTP request (VDSM's image
        transfers); without it they are closed like any other non-STOMP peer.
        `connections` counts the connections served (the metrics), if given.
        """
        self.counter = connections
        self.handler = handler
        self.settings = settings or ServerSettings()
        self.ssl_context = ssl_context
        self.refusals = refusals or RefusalLog()
        self.http = http
        self.connections: set[StompConnection] = set()
        self.held = 0
        """Bytes all connections hold (see `ServerSettings.memory_budget`)."""
        self.peak_held = 0
        """The most `held` has been since the server started (a statistic)."""
        self.working = 0
        """Of `held`, the bodies of requests being answered and the unsent bytes: what
        the edge frees by itself, without reading more."""
        self.waiting: set[StompConnection] = set()
        """Connections paused until `held` falls under three quarters of the budget."""
        self.runner: StompConnection | None = None
        """The one connection that may finish its partial frame while `held` is past
        the budget (partial frames are freed only by finishing them)."""
        self._waking = False
        self._wake_again = False
        self._over = False
        """`held` passed the budget and has not yet fallen under three quarters of it."""
        self.subscriptions: dict[str, list[Subscription]] = defaultdict(list)
        self.generation = 0
        """Counts changes to `subscriptions` (what was framed for them may be kept until then)."""
        self._servers: list[asyncio.base_events.Server] = []
        self._routes: dict[str, tuple[bool, tuple[str, ...]]] = {}
        """By destination: whether it is a request queue, and it and its dotted prefixes."""
        self._loop: asyncio.AbstractEventLoop | None = None

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Start listening; return the bound address (port 0 picks a free one)."""
        self._loop = asyncio.get_running_loop()
        # TLS is started per connection in `_accept`, so a refusal is seen (and logged) here.
        server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        self._servers.append(server)
        address = server.sockets[0].getsockname()
        log.info(
            "STOMP listening on %s:%s (%s)",
            address[0],
            address[1],
            "TLS" if self.ssl_context else "plain",
        )
        return address[0], address[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # No await before the handshake: start_tls must pause reading before the
        # first bytes of the ClientHello can land in the plain reader.
        if self.ssl_context is not None and not await self._handshake(writer, self.ssl_context):
            return
        connection = StompConnection(self, reader, writer)
        self.connections.add(connection)
        counter = self.counter
        if counter is not None:
            counter.connection_opened()
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)
            self.forget(connection)
            if counter is not None:
                counter.connection_closed()

    async def _handshake(self, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> bool:
        """Run the server side of TLS on an accepted stream (loop thread).

        Returns:
            True when the stream now speaks TLS; False when the handshake was refused
            (logged with the peer and reason, OpenSSL's alert sent) or the peer left
            (debug log); the stream is then closed.
        """
        name = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{name[0]}:{name[1]}"
        # A second descriptor keeps the socket open after asyncio aborts a failed
        # handshake, so the alert OpenSSL wrote can still be sent.
        spare = _dup(writer.get_extra_info("socket"))
        try:
            await writer.start_tls(context, ssl_handshake_timeout=self.settings.detect_timeout)
        except (ssl.SSLError, ConnectionAbortedError, TimeoutError) as error:
            self._refused(peer, error, spare)
            writer.close()
            return False
        except OSError as error:
            log.debug("connection %s left during the TLS handshake: %r", peer, error)
            writer.close()
            return False
        finally:
            if spare is not None:
                os.close(spare)
        if writer.transport is None or writer.transport.is_closing():
            log.debug("connection %s left during the TLS handshake", peer)
            return False
        return True

    def _refused(self, peer: str, error: BaseException, spare: int | None) -> None:
        """Log a refused handshake (rate-limited) and send the peer OpenSSL's alert."""
        alert = alert_of(error)
        if alert and spare is not None:
            with contextlib.suppress(OSError):  # the peer may be gone; best effort
                os.write(spare, alert)
        flush_after = self.refusals.refused(peer, refusal_reason(error))
        if flush_after is not None:
            asyncio.get_running_loop().call_later(flush_after, self.refusals.flush)

    # -- routing (loop thread) --------------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """Add a subscription."""
        self.subscriptions[subscription.destination].append(subscription)
        self.generation += 1

    def unsubscribe(self, connection: StompConnection, sub_id: str) -> None:
        """Remove a connection's subscription by id."""
        self.generation += 1
        for destination, subs in list(self.subscriptions.items()):
            subs[:] = [s for s in subs if not (s.connection is connection and s.id == sub_id)]
            if not subs:
                del self.subscriptions[destination]

    def forget(self, connection: StompConnection) -> None:
        """Remove every subscription of a closed connection."""
        self.generation += 1
        for destination, subs in list(self.subscriptions.items()):
            subs[:] = [s for s in subs if s.connection is not connection]
            if not subs:
                del self.subscriptions[destination]

    def hold(self, change: int) -> None:
        """Count `change` more bytes held by the connections (loop thread).

        When the total falls back under three quarters of the budget, or the runner
        slot is free and may be taken, every connection waiting on the total checks
        its budgets again (and reads again, or becomes the runner).
        """
        held = self.held = self.held + change
        self.peak_held = max(self.peak_held, held)
        budget = self.settings.memory_budget
        if not self._over and held > budget:
            self._over = True
            log.warning("the edge holds %d bytes, past its budget: readers pause", held)
        elif self._over and held <= budget * 3 // 4:
            self._over = False
            log.info("the edge holds %d bytes, back under its budget: readers go on", held)
        if change >= 0 or not self.waiting:
            return
        if held <= self.settings.memory_budget * 3 // 4 or (self.runner is None and self.may_run()):
            self.wake()

    def may_run(self) -> bool:
        """Whether a connection may finish its partial frame past the budget (loop thread).

        Only while what the edge frees by itself is small: otherwise its answers and
        its peers' reads will bring the total down first.
        """
        return self.working <= self.settings.memory_budget // 4

    def wake(self) -> None:
        """Let every connection waiting on the total check its budgets again (loop thread).

        A wake asked for while one runs (a check freed the runner slot) makes it go
        round once more instead of nesting.
        """
        if self._waking:
            self._wake_again = True
            return
        self._waking = True
        try:
            again = True
            while again:
                self._wake_again = False
                waiting, self.waiting = self.waiting, set()
                for connection in waiting:
                    connection.check_budgets()
                again = self._wake_again and bool(self.waiting)
        finally:
            self._waking = False

    def forget_held(self, connection: StompConnection) -> None:
        """A connection ended: it holds nothing any more (loop thread)."""
        self.waiting.discard(connection)
        self.working -= connection.working
        if self.runner is connection:
            self.runner = None
            self.wake()
        self.hold(-connection.held)

    def is_request_queue(self, destination: str) -> bool:
        """Whether SENDs to `destination` are JSON-RPC requests."""
        return self.route(destination)[0]

    def route(self, destination: str) -> tuple[bool, tuple[str, ...]]:
        """Return where a SEND to `destination` goes (loop thread; remembered).

        Returns:
            Whether it is a request queue, and the destinations whose subscribers get
            a copy: it, then its dotted prefixes.
        """
        route = self._routes.get(destination)
        if route is None:
            request = any(
                destination == queue or destination.startswith(queue + ".")
                for queue in self.settings.request_queues
            )
            parts = destination.split(".")
            prefixes = [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
            route = (request, (destination, *prefixes))
            if len(self._routes) >= _ROUTES:
                self._routes.clear()  # peers pick destinations: keep the memory bounded
            self._routes[destination] = route
        return route

    def deliver(self, destination: str, body: bytes, *, prefixes: bool) -> int:
        """Send `body` as MESSAGE to the subscribers of `destination`; return how many.

        With `prefixes`, subscribers of every dotted prefix get it too (a
        subscriber to `jms.queue` gets `jms.queue.events`).
        """
        if not self.subscriptions:
            return 0
        targets = self.route(destination)[1] if prefixes else (destination,)
        return self.deliver_to(targets, destination, body)

    def deliver_to(self, targets: tuple[str, ...], destination: str, body: bytes) -> int:
        """Send `body` from `destination` to the subscribers of `targets`; return how many."""
        subscriptions = self.subscriptions
        sent = 0
        for target in targets:
            for sub in subscriptions.get(target, ()):
                sub.connection.send_raw(sub.message(destination, body))
                sent += 1
        return sent

    def publish(self, destination: str, body: bytes) -> None:
        """Deliver `body` to `destination`'s subscribers. Any thread; never blocks."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(
                functools.partial(self.deliver, destination, body, prefixes=True)
            )
        except RuntimeError:
            log.debug("publish after the loop closed; dropped")


def _dup(sock: Any) -> int | None:
    """Return a duplicate descriptor of `sock` (None if there is none)."""
    if sock is None:
        return None
    try:
        return os.dup(sock.fileno())
    except OSError:
        return None
