"""The HTTP image server: VDSM's OVF-store upload (PUT) and download (GET) on the API port.

The Engine (ovirt-engine vdsbroker/irsbroker/HttpImageTaskVDSCommand.java and its
subclasses UploadStreamVDSCommand, RetrieveImageDataVDSCommand) sends to the SPM,
on port 54321 with the same TLS as STOMP, a request to "/" with the fields
`Storage-Pool-Id`, `Storage-Domain-Id`, `Image-Id`, `Volume-Id` and
`Connection: close`:

    PUT  Content-Length: n, the body   → 200, `Task-Id`          (the volume now holds it)
    GET  Range: bytes=0-<size - 1>     → 206, `Task-Id`, `Content-Length: size`, the bytes

and then polls the task `Task-Id` names, as it polls any SPM task, and clears it.
On any other status it reads a JSON body `{"status": {"code", "message"}}` (with
`Content-Type: application/json`) as VDSM's error. This server answers the same
(VDSM: lib/vdsm/rpc/http.py), with these choices:

- Keep-alive as VDSM's `BaseHTTPRequestHandler` (HTTP/1.1): a connection serves
  requests until the peer asks `Connection: close` (the Engine always does), waits
  60 s idle, or a request fails; every error answer closes the connection.
- Errors found before the task starts get their own status (VDSM answers most of
  them through the task, or as 500): a missing id field 400, an unknown pool,
  domain, image or volume 404, this host not SPM or the volume busy 409, a write
  past the volume's capacity 413, a read past its data 416 (with
  `Content-Range: bytes */<size>`), the host still recovering 503, another method
  405 (`Allow: GET, PUT`), and the parser's own (parser.py).
- Once a task exists, as VDSM: a PUT is answered 200 with its id when the copy
  ends, however it ended (the task's status says how); a GET's head goes out
  before the bytes, so a copy that fails halfway ends the connection short.

Threads: `serve` and everything it awaits run on the API's loop; the copy itself
runs on the domain's writer (a worker; actors/storage/streams.py), never here nor
on an actor's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from hostvisor.actors.errors import (
    CallerError,
    Conflict,
    HostvisorError,
    InvalidArgument,
    NotFound,
    Recovering,
    Timeout,
    Unavailable,
)
from hostvisor.actors.storage.proxy import StorageClient
from hostvisor.actors.storage.streams import OutsideVolume, ReadVolume, WriteVolume
from hostvisor.api.http.bridge import BodyStream, DoneSignal, LoopSink, LoopSource
from hostvisor.api.http.parser import (
    INVALID_PARAMETER,
    HttpError,
    Limits,
    Request,
    byte_range,
    content_length,
    error_response,
    read_head,
    response,
)
from hostvisor.api.rpc.bridge import settled

log = logging.getLogger(__name__)

POOL: Final = "Storage-Pool-Id"
DOMAIN: Final = "Storage-Domain-Id"
IMAGE: Final = "Image-Id"
VOLUME: Final = "Volume-Id"
TASK_ID: Final = "Task-Id"
ALLOW: Final = (("Allow", "GET, PUT"),)
CHUNK_TIMEOUT: Final = 60.0
"""Seconds a body chunk may take to arrive, or the peer to take a sent one (VDSM: 60 s)."""
ASK_TIMEOUT: Final = 30.0
"""Seconds to wait for the storage actors to start a copy (or say how its task is)."""
TASK_POLL: Final = 5.0
"""While waiting for a copy: how often to ask whether its task ended without running."""
DRAIN_BYTES: Final = 16 * 1024 * 1024
DRAIN_SECONDS: Final = 5.0


class ImageTransfers:
    """Serves HTTP image transfers over the storage actors (an `HttpHandler`).

    Args:
        client: the storage actors' client (the pool starts the tasks).
        limits: the request parser's limits.
        is_ready: whether the host has recovered; until then every request is 503.
        chunk_timeout: seconds a chunk of body may take, either way.
    """

    def __init__(
        self,
        client: StorageClient,
        *,
        limits: Limits | None = None,
        is_ready: Callable[[], bool] = lambda: True,
        chunk_timeout: float = CHUNK_TIMEOUT,
    ) -> None:
        """Serve through `client`."""
        self._client = client
        self._limits = limits or Limits()
        self._is_ready = is_ready
        self._chunk_timeout = chunk_timeout

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, peer: str
    ) -> None:
        """Serve one connection's requests in turn (the loop); never raises for the peer."""
        buffer = bytearray(head)
        try:
            while True:
                try:
                    request = await read_head(reader, buffer, self._limits)
                except HttpError as error:
                    log.info("HTTP from %s refused: %s", peer, error)
                    await _send(writer, error_response(error))
                    return
                if request is None:
                    return
                if not await self._one(request, reader, writer, buffer, peer):
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as error:
            log.debug("HTTP connection %s ended: %s", peer, error)

    async def _one(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buffer: bytearray,
        peer: str,
    ) -> bool:
        """Answer one request; whether the connection may carry another."""
        log.info("HTTP %s %s from %s", request.method, request.target, peer)
        try:
            if request.method == "PUT":
                return await self._put(request, reader, writer, buffer, peer)
            if request.method == "GET":
                return await self._get(request, writer, peer)
            raise _not_allowed(request.method)
        except HttpError as error:
            log.info("HTTP %s from %s refused: %s", request.method, peer, error)
            await _send(writer, error_response(error))
            return False

    # -- the ids --------------------------------------------------------------------------------

    def _ids(self, request: Request) -> tuple[str, str, str, str | None]:
        """(pool, domain, image, volume or None) from the fields. Raises HttpError."""
        if not self._is_ready():
            raise _refusal(Recovering())
        sp, sd, img = (request.get(name) or "" for name in (POOL, DOMAIN, IMAGE))
        if not (sp and sd and img):
            missing = ", ".join(
                name for name, value in ((POOL, sp), (DOMAIN, sd), (IMAGE, img)) if not value
            )
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f"missing or empty required header(s): {missing}",
                code=INVALID_PARAMETER,
            )
        return sp, sd, img, request.get(VOLUME) or None

    async def _start(self, sp: str, sd: str, op: WriteVolume | ReadVolume) -> str:
        """Start the copy as an SPM task; its id. Raises HttpError with the refusal."""
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                task_id = await settled(self._client.pool().member_task(sp, sd, op))
        except HostvisorError as error:
            raise _refusal(error) from None
        except TimeoutError:
            raise _refusal(Timeout(actor="storage/pool", timeout=ASK_TIMEOUT)) from None
        return str(task_id)

    # -- PUT ------------------------------------------------------------------------------------

    async def _put(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buffer: bytearray,
        peer: str,
    ) -> bool:
        """Write the body into the volume; 200 with the task's id once copied."""
        length = content_length(request, self._limits)
        body = BodyStream(reader, buffer, length, self._chunk_timeout)
        try:
            sp, sd, img, vol = self._ids(request)
            loop = asyncio.get_running_loop()
            done = DoneSignal(loop)
            source = LoopSource(loop, body, self._chunk_timeout)
            op = WriteVolume(img=img, vol=vol, length=length, source=source, done=done)
            task_id = await self._start(sp, sd, op)
        except HttpError as error:
            await _refuse_put(writer, error, body, request, peer)
            return False
        if request.expects_continue:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        failure = await self._finished(done, task_id)
        if failure is not None:
            log.info("HTTP PUT from %s: task %s failed: %s", peer, task_id, failure)
        keep = request.keep_alive and body.remaining == 0
        await _send(writer, response(HTTPStatus.OK, [(TASK_ID, task_id)], close=not keep))
        if body.remaining:  # the copy failed early: let the peer finish sending, then close
            await body.discard(DRAIN_BYTES, DRAIN_SECONDS)
        return keep

    # -- GET ------------------------------------------------------------------------------------

    async def _get(self, request: Request, writer: asyncio.StreamWriter, peer: str) -> bool:
        """Send the range's bytes; 206 with the task's id, then the data."""
        sp, sd, img, vol = self._ids(request)
        offset, length = byte_range(request)
        loop = asyncio.get_running_loop()
        done = DoneSignal(loop)
        sink = LoopSink(loop, writer, self._chunk_timeout)
        op = ReadVolume(img=img, vol=vol, offset=offset, length=length, sink=sink, done=done)
        task_id = await self._start(sp, sd, op)
        keep = request.keep_alive
        fields = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", f"bytes {offset}-{offset + length - 1}/*"),
            (TASK_ID, task_id),
        ]
        writer.write(response(HTTPStatus.PARTIAL_CONTENT, fields, length=length, close=not keep))
        sink.open()
        failure = await self._finished(done, task_id)
        if failure is not None:
            log.info("HTTP GET from %s: task %s failed: %s; closed", peer, task_id, failure)
            writer.transport.abort()
            return False
        await writer.drain()
        return keep

    # -- waiting ---------------------------------------------------------------------------------

    async def _finished(self, done: DoneSignal, task_id: str) -> BaseException | None:
        """Wait until the copy's work ended; its error, if any.

        A task can end without its work ever running (its domain's actor stopped
        first): so every TASK_POLL seconds the task's status is read too.
        """
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(done.future), TASK_POLL)
            except TimeoutError:
                pass
            ended = await self._task_ended(task_id)
            if ended is not None and not done.future.done():
                return ended

    async def _task_ended(self, task_id: str) -> BaseException | None:
        """Why the task ended, if it has; None while it runs."""
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                status: dict[str, Any] = await settled(self._client.tasks().status(task_id))
        except HostvisorError as error:  # unknown (cleared) task, tasks actor gone
            return error
        except TimeoutError:
            return None  # the task manager is busy: ask again later
        if status.get("taskState") != "finished":
            return None
        return Unavailable(reason=f"task ended: {status.get('message', '')}")


def _not_allowed(method: str) -> HttpError:
    return HttpError(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"method {method} is not served; only GET and PUT",
        headers=ALLOW,
    )


def _refusal(error: HostvisorError) -> HttpError:
    """The HTTP answer to a storage error raised before the task started."""
    if isinstance(error, OutsideVolume):
        if "offset" not in error.context:  # a write past the capacity
            return HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error), code=error.code)
        size = error.context.get("size", "*")
        return HttpError(
            HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
            str(error),
            code=error.code,
            headers=(("Content-Range", f"bytes */{size}"),),
        )
    if isinstance(error, NotFound):
        status = HTTPStatus.NOT_FOUND
    elif isinstance(error, InvalidArgument):
        status = HTTPStatus.BAD_REQUEST
    elif isinstance(error, (Conflict, CallerError)):
        status = HTTPStatus.CONFLICT
    elif isinstance(error, Unavailable):
        status = HTTPStatus.SERVICE_UNAVAILABLE
    else:
        status = HTTPStatus.INTERNAL_SERVER_ERROR
    return HttpError(status, str(error), code=error.code)


async def _refuse_put(
    writer: asyncio.StreamWriter, error: HttpError, body: BodyStream, request: Request, peer: str
) -> None:
    """Answer a refused PUT, then drop a little of its body so the peer reads the answer."""
    log.info("HTTP PUT from %s refused: %s", peer, error)
    await _send(writer, error_response(error))
    if not request.expects_continue:
        await body.discard(DRAIN_BYTES, DRAIN_SECONDS)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write `data` and wait until it is out (bounded: the connection closes after)."""
    writer.write(data)
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(CHUNK_TIMEOUT):
            await writer.drain()
