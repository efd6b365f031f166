"""What the API edge records per request and per connection, for the metrics.

The dispatcher calls `ApiRecorder.request` once per answered request and the
connection code calls `connection_opened`/`connection_closed`. Every method is a
few dict and list operations, no lock: the writers run on the API's event loop
thread (one thread), and the metrics endpoint's scrape copies the figures under
the GIL (a copy may miss the request being counted at that instant, never more).

Call site (api/rpc/dispatch.py, once a request's response is built, errors
included): `recorder.request(request.method, code, time.monotonic() - received)`
where `code` is the response's error code, or None for a result, and `received`
the body's `Body.received`.

A client can send any method name; past `MAX_METHODS` distinct names the rest are
counted as `OTHER`, so a fuzzing client cannot grow the metrics without bound.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass
from typing import final

API_BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of the API request latency histogram."""
MAX_METHODS = 512
"""Distinct method names counted; VDSM's API has about 250 verbs."""
OTHER = "<other>"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiFigures:
    """A copy of the recorder's figures (for one scrape)."""

    calls: dict[str, int]
    """Requests answered, by method (`Host.ping`)."""
    errors: dict[tuple[str, int], int]
    """Error answers, by (method, VDSM/JSON-RPC code)."""
    latency_counts: tuple[int, ...]
    """Requests per latency bucket (`API_BOUNDS`; the last: longer)."""
    latency_sum: float
    connections_open: int
    connections_total: int


@final
class ApiRecorder:
    """Counters of the API edge. Writers: the API's loop thread; readers: any thread."""

    def __init__(self) -> None:
        """Start with everything at zero."""
        self._calls: dict[str, int] = {}
        self._errors: dict[tuple[str, int], int] = {}
        self._latency = [0] * (len(API_BOUNDS) + 1)
        self._latency_sum = 0.0
        self._open = 0
        self._total = 0
        self._lock = threading.Lock()  # connections may open on other threads (rare path)

    def request(self, method: str, code: int | None, seconds: float) -> None:
        """Count one answered request of `method` that took `seconds`.

        `code` is the error code it was answered with, or None for a result. Call it
        from the API's event loop thread; never blocks, never raises.
        """
        calls = self._calls
        if method not in calls and len(calls) >= MAX_METHODS:
            method = OTHER
        calls[method] = calls.get(method, 0) + 1
        if code is not None:
            key = (method, code)
            self._errors[key] = self._errors.get(key, 0) + 1
        self._latency[bisect_left(API_BOUNDS, seconds)] += 1
        self._latency_sum += seconds

    def connection_opened(self) -> None:
        """Count a client connection that was accepted (any thread; never blocks long)."""
        with self._lock:
            self._open += 1
            self._total += 1

    def connection_closed(self) -> None:
        """Count a client connection that ended (any thread; never blocks long)."""
        with self._lock:
            self._open -= 1

    def figures(self) -> ApiFigures:
        """Return a copy of the figures (any thread)."""
        return ApiFigures(
            calls=dict(self._calls),
            errors=dict(self._errors),
            latency_counts=tuple(self._latency),
            latency_sum=self._latency_sum,
            connections_open=self._open,
            connections_total=self._total,
        )
