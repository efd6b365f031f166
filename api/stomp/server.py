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
import functools
import logging
import ssl
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from hostvisor.api.rpc.dispatch import Origin
from hostvisor.api.stomp.connection import StompConnection
from hostvisor.api.stomp.frames import Limits, encode

log = logging.getLogger(__name__)

REQUEST_QUEUES = ("jms.topic.vdsm_requests", "jms.topic.vdsm_irs_requests")
EVENT_QUEUE = "jms.queue.events"

BodyHandler = Callable[[bytes, Origin], Coroutine[Any, Any, bytes | None]]
"""Answers a request body (None: nothing to answer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """Tunables of the STOMP server."""

    limits: Limits = field(default_factory=Limits)
    max_pending: int = 64
    """Requests one connection may have in flight; more are refused with an error."""
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


class StompServer:
    """Accepts STOMP connections on one or more sockets and routes their frames."""

    def __init__(
        self,
        handler: BodyHandler,
        *,
        settings: ServerSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Serve request bodies with `handler`; TLS when `ssl_context` is given."""
        self.handler = handler
        self.settings = settings or ServerSettings()
        self.ssl_context = ssl_context
        self.connections: set[StompConnection] = set()
        self.subscriptions: dict[str, list[Subscription]] = defaultdict(list)
        self._servers: list[asyncio.base_events.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Start listening; return the bound address (port 0 picks a free one)."""
        self._loop = asyncio.get_running_loop()
        server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.settings.detect_timeout if self.ssl_context else None,
            reuse_address=True,
        )
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
        connection = StompConnection(self, reader, writer)
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)
            self.forget(connection)

    # -- routing (loop thread) --------------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """Add a subscription."""
        self.subscriptions[subscription.destination].append(subscription)

    def unsubscribe(self, connection: StompConnection, sub_id: str) -> None:
        """Remove a connection's subscription by id."""
        for destination, subs in list(self.subscriptions.items()):
            subs[:] = [s for s in subs if not (s.connection is connection and s.id == sub_id)]
            if not subs:
                del self.subscriptions[destination]

    def forget(self, connection: StompConnection) -> None:
        """Remove every subscription of a closed connection."""
        for destination, subs in list(self.subscriptions.items()):
            subs[:] = [s for s in subs if s.connection is not connection]
            if not subs:
                del self.subscriptions[destination]

    def is_request_queue(self, destination: str) -> bool:
        """Whether SENDs to `destination` are JSON-RPC requests."""
        return any(
            destination == queue or destination.startswith(queue + ".")
            for queue in self.settings.request_queues
        )

    def deliver(self, destination: str, body: bytes, *, prefixes: bool) -> int:
        """Send `body` as MESSAGE to the subscribers of `destination`; return how many.

        With `prefixes`, subscribers of every dotted prefix get it too (a
        subscriber to `jms.queue` gets `jms.queue.events`).
        """
        targets = [destination]
        if prefixes:
            parts = destination.split(".")
            targets += [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
        sent = 0
        for target in targets:
            for sub in self.subscriptions.get(target, ()):
                headers = {
                    "destination": destination,
                    "subscription": sub.id,
                    "content-type": "application/json",
                }
                sub.connection.send_raw(encode("MESSAGE", headers, body))
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
