"""Addresses live actors by path and takes `status()` snapshots of them.

A path names an actor by its place in the tree: the root supervisor is `/`, its
children `vms`, `infra`, theirs `vms/<uuid>`, `infra/hypervisor`. Supervisors keep
the registry up to date as children start, restart and stop; anyone may read it.
The registry is shared between threads and is not an actor, so it has a lock: a
lookup on the API's hot path must not queue behind a busy mailbox.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import LATENCY_BOUNDS, ActorStats
from hostvisor.actors.errors import NotFound

ROOT = "/"


def child_path(parent: str, child_id: str) -> str:
    """Return the path of child `child_id` under `parent`."""
    return child_id if parent == ROOT else f"{parent}/{child_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartInfo:
    """How often a child slot was restarted, and the last time why."""

    count: int = 0
    last_reason: str | None = None
    last_at: float | None = None
    """Wall-clock time (`time.time()`) of the last restart."""


NO_RESTARTS = RestartInfo()
"""A child slot that was never restarted (shared: it is frozen)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorStatus:
    """A point-in-time view of one actor or supervisor, for the console and metrics."""

    path: str
    actor_class: str
    state: str
    mailbox_depth: int
    messages_handled: int
    last_handling_seconds: float
    busy_seconds: float | None
    """How long the message being handled has run; None when idle."""
    restarts: RestartInfo
    parent: str | None
    children: tuple[str, ...]
    skipped: int = 0
    """Asks dropped unhandled because their asker had given up."""
    busy_total_seconds: float = 0.0
    """Time spent handling messages since this incarnation started."""
    latency_counts: tuple[int, ...] = ()
    """Messages handled per latency bucket (`LATENCY_BOUNDS`; the last: longer)."""

    @property
    def latency_p50(self) -> float | None:
        """Median handling time (seconds, from the buckets); None before any message."""
        return latency_quantile(self.latency_counts, 0.5)

    @property
    def latency_p99(self) -> float | None:
        """99th percentile handling time (seconds, from the buckets); None before any."""
        return latency_quantile(self.latency_counts, 0.99)


def latency_quantile(counts: Sequence[int], q: float) -> float | None:
    """Estimate the `q` quantile from bucket counts, as Prometheus' histogram_quantile.

    Interpolates linearly inside the bucket the quantile falls in (its lower bound is
    the previous bucket's upper bound, 0 for the first); a quantile in the overflow
    bucket is reported as the last bound. None when nothing was counted.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for index, count in enumerate(counts):
        if index >= len(LATENCY_BOUNDS):
            return LATENCY_BOUNDS[-1]
        upper = LATENCY_BOUNDS[index]
        if count and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper
    return LATENCY_BOUNDS[-1]


@dataclass(frozen=True, slots=True)
class _Entry:
    ref: pykka.ActorRef[Any]
    stats: ActorStats
    parent: str | None
    restarts: RestartInfo


class Registry:
    """Paths of the live actors of one host. Thread-safe; methods never block long."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._entries: dict[str, _Entry] = {}

    def register(
        self,
        path: str,
        ref: pykka.ActorRef[Any],
        *,
        stats: ActorStats,
        parent: str | None,
        restarts: RestartInfo,
    ) -> None:
        """Record that `ref` now lives at `path`, replacing any earlier incarnation."""
        with self._changed:
            self._entries[path] = _Entry(ref, stats, parent, restarts)
            self._changed.notify_all()

    def unregister(self, path: str, ref: pykka.ActorRef[Any] | None = None) -> None:
        """Forget `path`; with `ref`, only if that is still the actor registered there."""
        with self._changed:
            entry = self._entries.get(path)
            if entry is not None and (ref is None or entry.ref is ref):
                del self._entries[path]
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Registry], bool], timeout: float) -> bool:
        """Block until `predicate(self)` holds after a change, or `timeout` passes.

        The predicate runs with the registry's lock held: it may call `get` and
        `paths` but not `register`/`unregister`. Returns whether it held.
        """
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def get(self, path: str) -> pykka.ActorRef[Any] | None:
        """Return the actor at `path`, or None."""
        entry = self._entries.get(path)
        return None if entry is None else entry.ref

    def lookup(self, path: str) -> pykka.ActorRef[Any]:
        """Return the actor at `path`.

        Raises:
            NotFound: nothing lives there.
        """
        entry = self._entries.get(path)
        if entry is None:
            raise NotFound(actor=path)
        return entry.ref

    def entries(self) -> list[tuple[str, _Entry]]:
        """Return every (path, registration), in registration order, without statuses.

        For readers that poll every actor each second (the metrics, the console's
        snapshots): a registration's `stats` is the actor's own live `ActorStats`,
        written only by the actor's thread; read it field by field, never write it.
        One list copy under the lock, where `snapshot` builds a status per actor.
        """
        with self._lock:
            return list(self._entries.items())

    def paths(self) -> tuple[str, ...]:
        """Return every registered path."""
        return tuple(self._entries)

    def status(self, path: str) -> ActorStatus:
        """Return a snapshot of the actor at `path`, without asking the actor.

        Raises:
            NotFound: nothing lives there.
        """
        entry = self._entries.get(path)
        if entry is None:
            raise NotFound(actor=path)
        stats = entry.stats
        busy_since = stats.busy_since
        return ActorStatus(
            path=path,
            actor_class=entry.ref.actor_class.__name__,
            state=stats.state.value,
            mailbox_depth=entry.ref.actor_inbox.qsize(),  # type: ignore[attr-defined]
            messages_handled=stats.handled,
            last_handling_seconds=stats.last_handling_seconds,
            busy_seconds=None if busy_since is None else time.perf_counter() - busy_since,
            restarts=entry.restarts,
            parent=entry.parent,
            children=stats.children,
            skipped=stats.skipped,
            busy_total_seconds=stats.busy_total_seconds,
            latency_counts=tuple(stats.latency_counts),
        )

    def snapshot(self, root: str = ROOT) -> tuple[ActorStatus, ...]:
        """Return the statuses of `root` and everything below it, depth first, in start order.

        Actors that stop while the snapshot is taken are left out.
        """
        result: list[ActorStatus] = []
        pending = [root]
        while pending:
            path = pending.pop()
            try:
                status = self.status(path)
            except NotFound:
                continue
            result.append(status)
            pending.extend(reversed(status.children))
        return tuple(result)
