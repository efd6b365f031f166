"""A connection's protocol once STOMP is detected: received bytes straight to it.

Until STOMP is detected a connection reads through its `asyncio.StreamReader`;
then `Receiver` replaces the stream's protocol on the transport, so that each read
is handed to the connection's `_received` within the transport's callback (no task
step, no future, no copy into the stream's buffer), and `take_buffered` hands over
what the stream had received but nobody read. Everything here runs on the loop's
thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hostvisor.api.stomp.connection import StompConnection


class Receiver(asyncio.Protocol):
    """The transport's protocol once STOMP is detected: bytes go straight to the connection.

    It replaces the stream's own protocol and hands flow control and the end of the
    connection on to it, so `writer.drain()`, `writer.close()` and
    `writer.wait_closed()` work as before. Runs on the loop's thread.
    """

    def __init__(self, connection: StompConnection, stream: asyncio.BaseProtocol) -> None:
        """Feed `connection`; keep `stream` (the replaced protocol) informed."""
        self.connection = connection
        self.stream = stream
        # Received bytes go to the connection with no call in between (the transport
        # looks this attribute up when the protocol is set).
        self.data_received = connection._received  # type: ignore[method-assign]  # noqa: SLF001
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def end(self) -> None:
        """Let the connection's `serve` return (idempotent)."""
        if not self.ended.done():
            self.ended.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Hand received bytes to the connection."""
        self.connection._received(data)  # noqa: SLF001 - the connection's own receiver

    def eof_received(self) -> bool:
        """The peer sent everything it will: end (what it sent is already answered).

        Returns False: the transport closes once its last writes are sent (asking
        to keep a TLS transport open only draws a warning from asyncio).
        """
        self.end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the stream (it wakes `drain` and `wait_closed`), then end."""
        self.stream.connection_lost(exc)
        self.end()

    def pause_writing(self) -> None:
        """The transport's write buffer is full: `writer.drain()` waits."""
        self.stream.pause_writing()

    def resume_writing(self) -> None:
        """The transport's write buffer drained: `writer.drain()` returns."""
        self.stream.resume_writing()
        self.connection.check_budgets()


def take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Take the bytes the stream received but nobody read yet (loop thread).

    StreamReader has no public non-blocking read; its buffer is read directly, once,
    when the connection stops using the stream for reading.
    """
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]  # noqa: SLF001 - see above
    data = bytes(buffer)
    buffer.clear()
    return data
