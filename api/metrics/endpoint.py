"""The metrics endpoint: Prometheus' text format over HTTP at `/metrics`.

Off unless `[hostvisor] metrics_address` is set (`127.0.0.1:9102`; a bare port
means loopback). A non-loopback address is the operator's explicit choice: the
figures name VMs and actors but carry no secret, and scraping changes nothing.

Threads: `MetricsEndpoint` is an actor of the api branch; its turn only opens and
closes the listener. The HTTP server (the standard library's) runs its accept loop
on a thread of its own and each scrape on a short-lived thread
(`Collector.collect`, written out by `hostvisor.api.metrics.text` family by family).
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.errors import InvalidArgument
from hostvisor.api.metrics.collector import Collector
from hostvisor.api.metrics.recorder import ApiRecorder
from hostvisor.api.metrics.text import CONTENT_TYPE, chunks
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

METRICS_ID = "metrics"
"""The endpoint's child id in the api branch (its path: `api/metrics`)."""


def parse_address(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a bare port (loopback) as (host, port).

    Raises:
        InvalidArgument: not an address with a port in 0..65535.
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text.strip()
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise InvalidArgument(metrics_address=text, reason="needs host:port") from None
    if not 0 <= number < 65536:  # noqa: PLR2004
        raise InvalidArgument(metrics_address=text, reason="port out of range")
    return host, number


class MetricsEndpoint(Actor):
    """Serves `/metrics` while it runs.

    Args:
        registry: the tree's registry.
        address: where to listen (`parse_address`); port 0 picks a free one.
        api: the API edge's recorder (None: no API metrics).
    """

    def __init__(self, *, registry: Registry, address: str, api: ApiRecorder | None) -> None:
        """Prepare the endpoint; it listens from `on_start`."""
        super().__init__()
        self._registry = registry
        self._address = parse_address(address)
        self._api = api
        self._server: _Server | None = None

    def on_start(self) -> None:
        """Bind and serve (actor's turn; raises OSError when the address is taken)."""
        collector = Collector(registry=self._registry, runtime=self.runtime, api=self._api)
        self._server = server = _Server(self._address, collector)
        # owns a thread: the metrics endpoint's accept loop (blocking accept)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        log.info("metrics on http://%s:%d/metrics", *self.address())

    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on (ask; answers at once)."""
        if self._server is None:
            raise InvalidArgument(reason="the metrics endpoint is not listening")
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def on_stop(self) -> None:
        """Stop listening (actor's turn)."""
        self._close()

    def on_failure(self, *_exc_info: Any) -> None:
        """Stop listening as the actor crashes."""
        self._close()

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class _Server(ThreadingHTTPServer):
    """Serves `/metrics` from one collector; a thread per request."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], collector: Collector) -> None:
        self.collector = collector
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is here")
            return
        body = chunks(self.server.collector.collect())  # one per family, never one 1 MiB string
        try:
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(sum(map(len, body))))
            self.end_headers()
            for chunk in body:  # each write lets the GIL go while the socket drains
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError) as error:  # the scraper went away
            log.debug("metrics: %s left before its answer: %s", self.address_string(), error)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("metrics: %s %s", self.address_string(), format % args)
