"""Blocking byte streams over an asyncio connection, for the storage task that copies.

A stream task's work (actors/storage/streams.py) runs on a worker thread and reads
or writes a blocking `ByteSource` / `ByteSink`; the connection lives on the API's
loop. Each read or write here is one coroutine run on the loop
(`run_coroutine_threadsafe`) that the worker waits for, so one chunk at most is
in flight and the peer's pace is the copy's pace (no buffering beyond a chunk).

Every wait is bounded: a peer that sends or reads nothing for `timeout` seconds
fails the chunk, and a loop that stops (the API closing) cancels it. Either way
the worker gets a `MiscFileReadError` / `MiscFileWriteError` and the task fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from hostvisor.actors.storage.streams import MiscFileReadError, MiscFileWriteError

T = TypeVar("T")

GRACE = 5.0
"""Seconds a worker waits past a chunk's own timeout before giving up on the loop."""


class BodyStream:
    """A request body of known length: the bytes buffered after the head, then the socket.

    Used on the loop only.
    """

    def __init__(
        self, reader: asyncio.StreamReader, buffer: bytearray, length: int, timeout: float
    ) -> None:
        """Read `length` bytes, taking them from `buffer` first."""
        self._reader = reader
        self._buffer = buffer
        self.remaining = length
        self._timeout = timeout

    async def read(self, size: int) -> bytes:
        """Return up to `size` bytes of the body (fewer only at its end); b"" when done.

        Raises:
            MiscFileReadError: the peer sent nothing for `timeout` s, or ended early.
        """
        want = min(size, self.remaining)
        out = bytearray()
        if self._buffer and want:
            taken = bytes(self._buffer[:want])
            del self._buffer[: len(taken)]
            out += taken
        while len(out) < want:
            try:
                async with asyncio.timeout(self._timeout):
                    chunk = await self._reader.read(want - len(out))
            except TimeoutError:
                raise MiscFileReadError(reason=f"no body bytes in {self._timeout:g} s") from None
            except (ConnectionError, OSError) as error:
                raise MiscFileReadError(reason=f"the connection failed: {error}") from None
            if not chunk:
                raise MiscFileReadError(reason=f"the peer ended {self.remaining - len(out)} short")
            out += chunk
        self.remaining -= len(out)
        return bytes(out)

    async def discard(self, most: int, seconds: float) -> None:
        """Read and drop up to `most` bytes of what is left, for at most `seconds`.

        Lets a peer that sends its whole body before reading see an error answer
        instead of a reset. Never raises for the peer's sake.
        """
        left = min(self.remaining, most)
        try:
            async with asyncio.timeout(seconds):
                while left > 0:
                    if self._buffer:
                        taken = min(left, len(self._buffer))
                        del self._buffer[:taken]
                    else:
                        chunk = await self._reader.read(min(left, 65536))
                        if not chunk:
                            return
                        taken = len(chunk)
                    left -= taken
                    self.remaining -= taken
        except (TimeoutError, ConnectionError, OSError):
            return


def _wait(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run `work` on `loop` and wait for it at most `timeout` s (a worker thread).

    Raises:
        RuntimeError: the loop is closed.
        concurrent.futures.TimeoutError / CancelledError: no outcome in time, or the
            loop cancelled it (the API closing).
    """
    try:
        future = asyncio.run_coroutine_threadsafe(work, loop)
    except RuntimeError:
        work.close()
        raise
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise


class LoopSource:
    """A `ByteSource` for a worker, reading a `BodyStream` on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, body: BodyStream, timeout: float) -> None:
        """Read `body` through `loop`; `timeout` is the body's own per-chunk limit."""
        self._loop = loop
        self._body = body
        self._wait = timeout + GRACE

    def read(self, size: int) -> bytes:
        """Return the next 1..`size` bytes of the body. Blocks a worker thread.

        Raises:
            MiscFileReadError: the peer stalled or ended early, or the API closed.
        """
        try:
            return _wait(self._loop, self._body.read(size), self._wait)
        except MiscFileReadError:
            raise
        except (
            concurrent.futures.TimeoutError,
            concurrent.futures.CancelledError,
            RuntimeError,
            OSError,
        ):
            raise MiscFileReadError(reason="the connection closed") from None


class LoopSink:
    """A `ByteSink` for a worker, writing to a connection on the loop.

    Nothing is written before `open()` (the loop, after it sent the response head):
    the task may start before the head is out.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        """Write to `writer` through `loop`; a chunk the peer has not taken in `timeout` s fails."""
        self._loop = loop
        self._writer = writer
        self._timeout = timeout
        self._open = asyncio.Event()

    def open(self) -> None:
        """Let the bytes flow (the loop; once the response head is written)."""
        self._open.set()

    async def _send(self, data: bytes) -> None:
        await self._open.wait()
        if self._writer.is_closing():
            raise MiscFileWriteError(reason="the connection closed")
        self._writer.write(data)
        try:
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except TimeoutError:
            raise MiscFileWriteError(
                reason=f"the peer read nothing in {self._timeout:g} s"
            ) from None
        except (ConnectionError, OSError) as error:
            raise MiscFileWriteError(reason=f"the connection failed: {error}") from None

    def write(self, data: bytes) -> None:
        """Send `data` whole. Blocks a worker thread until the peer has taken it.

        Raises:
            MiscFileWriteError: the peer stalled or left, or the API closed.
        """
        try:
            _wait(self._loop, self._send(data), self._timeout + GRACE)
        except MiscFileWriteError:
            raise
        except (
            concurrent.futures.TimeoutError,
            concurrent.futures.CancelledError,
            RuntimeError,
            OSError,
        ):
            raise MiscFileWriteError(reason="the connection closed") from None


class DoneSignal:
    """The stream task's `done` callback (any thread), awaited on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the future `wait` returns, on `loop`."""
        self._loop = loop
        self.future: asyncio.Future[BaseException | None] = loop.create_future()

    def __call__(self, error: BaseException | None) -> None:
        """Record how the work ended (a worker thread). Never blocks, never raises."""
        try:
            self._loop.call_soon_threadsafe(self._settle, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            return

    def _settle(self, error: BaseException | None) -> None:
        if not self.future.done():
            self.future.set_result(error)
