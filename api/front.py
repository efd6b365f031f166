"""RpcFront: the actor that owns the API edge.

It runs the STOMP server on an asyncio loop in a thread of its own and serves
requests with the dispatcher. Routing a request does not pass through this
actor's mailbox: the dispatcher runs on the loop and sends each call straight
to the owning actor by message, with the verb's timeout, so one slow verb never
queues the others behind it. The actor's own mailbox carries what the edge is
told: events to publish.

Why one actor for the front and the listener: the loop, the server and the
dispatcher live and die together; splitting them would add a hop to every call
and a restart order to keep, for no isolation gained.

The front lives at `FRONT` (`api/front`), the one place that path is written; the
API layer hands it to the tree as the event bus's subscriber, so nothing below api/
names an API address. `FrontProxy` is its typed client.

The loop is uvloop's for plain STOMP when uvloop is installed (it cuts the edge's
CPU per call), else asyncio's; `HOSTVISOR_EVENT_LOOP=asyncio` forces asyncio's. With
TLS the loop is asyncio's: under uvloop 0.23 a refused TLS handshake sometimes
leaves the next connection's handshake unanswered (tests/api/test_tls.py shows it).
The log says which loop runs and why.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any, Final, final

import pykka

from hostvisor.actors.actor import Actor, call
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.events import Publish
from hostvisor.api.http.detect import HttpHandler
from hostvisor.api.metrics.recorder import ApiRecorder
from hostvisor.api.rpc import codec
from hostvisor.api.rpc.dispatch import Dispatcher
from hostvisor.api.rpc.verbs import VerbTable
from hostvisor.api.stomp.frames import Limits
from hostvisor.api.stomp.server import EVENT_QUEUE, ServerSettings, StompServer
from hostvisor.api.tls import server_context
from hostvisor.supervision.config import Config

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
API: Final = "api"
"""The API branch, started last and stopped first."""
FRONT_ID: Final = "front"
FRONT: Final = f"{API}/{FRONT_ID}"
"""The RpcFront."""


class RpcFront(Actor):
    """Serves JSON-RPC over STOMP for one host.

    Args:
        config: where to listen, TLS files and limits.
        table: the verbs served.
        is_ready: whether the host has recovered (until then: code 99).
        http: serves HTTP image transfers on the same port (api/http/), if given.
        recorder: counts requests and connections for the metrics, if given.
    """

    def __init__(
        self,
        *,
        config: Config,
        table: VerbTable,
        is_ready: Callable[[], bool],
        http: HttpHandler | None = None,
        recorder: ApiRecorder | None = None,
    ) -> None:
        """Prepare; bind in `on_start`."""
        super().__init__()
        self._config = config
        self._http = http
        self._recorder = recorder
        self._is_ready = is_ready
        self._dispatcher = Dispatcher(table, is_ready=is_ready, recorder=recorder)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: StompServer | None = None
        self._address: tuple[str, int] | None = None

    def on_start(self) -> None:
        """Start the loop thread and listen (blocks at most START_TIMEOUT s).

        Raises:
            InvalidArgument: plain STOMP on a non-loopback address not forced.
            OSError: the address cannot be bound.
        """
        config = self._config
        _check_plain_is_local(config)
        context = _ssl_context(config)
        loop = new_event_loop(tls=context is not None)
        self._loop = loop
        # owns a thread: the API's asyncio event loop (sockets, STOMP, JSON-RPC)
        self._thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
        self._thread.start()
        self._server = StompServer(
            self._dispatcher,
            settings=ServerSettings(
                max_pending=config.max_pending_requests,
                limits=Limits(max_body=config.max_frame_bytes),
                detect_timeout=config.detect_timeout,
                frame_timeout=config.frame_timeout,
                connection_budget=max(config.connection_memory_bytes, config.max_frame_bytes),
                memory_budget=config.api_memory_bytes,
            ),
            ssl_context=context,
            http=self._http,
            connections=self._recorder,
        )
        listening = asyncio.run_coroutine_threadsafe(
            self._server.listen(config.management_ip, config.management_port), loop
        )
        self._address = listening.result(timeout=START_TIMEOUT)

    def on_stop(self) -> None:
        """Close every connection and the loop."""
        self._shutdown()

    def on_failure(self, *_exc_info: object) -> None:
        """Release the port before the restart binds it again."""
        self._shutdown()

    def _shutdown(self) -> None:
        loop, server = self._loop, self._server
        if loop is None:
            return
        if server is not None and loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(_close(server), loop)
            try:
                closing.result(timeout=START_TIMEOUT)
            except TimeoutError:
                log.warning("API connections did not close in time")
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT)
        loop.close()
        self._loop = None

    def on_receive(self, message: Any) -> Any:
        """Publish events told by the event bus (dropped while recovering)."""
        if isinstance(message, Publish):
            if self._server is not None and self._is_ready():
                event = message.event
                self._server.publish(EVENT_QUEUE, codec.notification(event.method, event.params))
            return None
        return super().on_receive(message)

    def address(self) -> tuple[str, int]:
        """Return the bound (host, port)."""
        assert self._address is not None  # noqa: S101 - set by on_start
        return self._address


@final
class FrontProxy:
    """Calls to the RpcFront (see `hostvisor.actors.vm.proxy` for the conventions)."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the front behind `ref`."""
        self.ref = ref

    def address(self) -> pykka.Future[tuple[str, int]]:
        """The (host, port) the API listens on."""
        return call(self.ref, "address")


async def _close(server: StompServer) -> None:
    """Close the server, then end every task left on the loop before it is closed.

    Connection handlers outlive `server.close()` (on Python 3.11 `wait_closed` does
    not wait for them, and a TLS close waits for the peer's close_notify); a task
    still pending when the loop closes fails later, at garbage collection, with
    "Event loop is closed".
    """
    await server.close()
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


EVENT_LOOP_VARIABLE: Final = "HOSTVISOR_EVENT_LOOP"
"""Environment variable: `asyncio` forces asyncio's own loop; anything else, uvloop if
installed."""


def new_event_loop(*, tls: bool = False) -> asyncio.AbstractEventLoop:
    """Return a new loop for the API (any thread; logs which loop it made and why).

    uvloop's for plain STOMP if it is installed and not refused, else asyncio's (see
    the module's docstring).
    """
    if tls:
        log.info("API event loop: asyncio (TLS is served on asyncio's loop)")
    elif os.environ.get(EVENT_LOOP_VARIABLE, "").strip().lower() == "asyncio":
        log.info("API event loop: asyncio (%s=asyncio)", EVENT_LOOP_VARIABLE)
    else:
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            log.info("API event loop: asyncio (uvloop is not installed)")
        else:
            log.info("API event loop: uvloop %s", uvloop.__version__)
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def _check_plain_is_local(config: Config) -> None:
    if config.ssl or config.allow_plain_remote:
        return
    try:
        loopback = ipaddress.ip_address(config.management_ip).is_loopback
    except ValueError:
        loopback = config.management_ip == "localhost"
    if not loopback:
        raise InvalidArgument(
            management_ip=config.management_ip,
            reason="plain STOMP only on loopback; set [vars] ssl=true or "
            "[hostvisor] allow_plain_remote=true",
        )


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.ssl:
        return None
    return server_context(cert=config.cert_file, key=config.key_file, ca=config.ca_file)
