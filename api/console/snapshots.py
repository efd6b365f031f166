"""Incremental supervision snapshots: the console fetches only what changed.

A console refreshing every second on a host with a thousand VMs used to receive
every actor's status each time (half a megabyte of JSON, built, encoded and parsed
anew, though nearly every actor was idle). Here both ends keep the last view:

- the agent's `SnapshotCache` keeps each actor's JSON with the signature it was
  built from (every figure it shows, read off the actor's live counters without
  building a status: `hostvisor.api.metrics.live`) and the version at which it
  last changed, and
  a tombstone per actor that went away. A request that names the version it last
  saw (`since`) is answered with the actors changed after it and the paths removed
  after it (`delta: true`); a request without one, or with a version from another
  incarnation of the agent (`version` is `EPOCH:N`) or older than the oldest
  tombstone kept, gets every actor (`delta: false`). Either way the answer carries
  the tree's `version`, the time, the latency bounds and the pools' statistics, as
  the full snapshot always did;
- the console's `SnapshotView` merges answers into its copy and hands the console
  the same full snapshot as before (actors depth first, in start order, rebuilt
  from each actor's `children` as `Registry.snapshot` walks them).

An agent that does not know `since` answers full snapshots, which the view takes as
they are: either side may be upgraded first.

Threads: `SnapshotCache.snapshot` runs on an admin connection's thread and takes
the cache's lock for the time of one pass over the registry (a couple of
milliseconds at a thousand actors); `SnapshotView` belongs to one client thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, final

from hostvisor.actors.actor import LATENCY_BOUNDS
from hostvisor.actors.errors import NotFound
from hostvisor.actors.runtime import Runtime
from hostvisor.api.admin.ops import status_json
from hostvisor.api.metrics.live import Entry, class_name, live_entries, mailbox_depth
from hostvisor.supervision.registry import Registry

TOMBSTONE_SECONDS = 600.0
"""How long a removed actor is remembered for deltas; an older `since` gets everything."""


def _signature(entry: Entry) -> tuple[object, ...]:
    """Every figure `status_json` shows, read off the actor's live counters.

    The latency buckets stand for p50 and p99 (copied: the actor bumps them after
    `handled`). A busy actor's busy time grows by the instant: its signature is new
    each pass, so it is sent each time.
    """
    stats = entry.stats
    return (
        class_name(entry),
        stats.state,
        entry.parent,
        stats.children,
        mailbox_depth(entry),
        stats.handled,
        stats.skipped,
        stats.last_handling_seconds,
        None if stats.busy_since is None else object(),
        stats.busy_total_seconds,
        tuple(stats.latency_counts),
        entry.restarts,
    )


@final
class SnapshotCache:
    """The agent's side: each actor's JSON kept, versioned, answered as deltas.

    Thread-safe (a lock around each pass); never blocks on an actor.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Start empty, with an epoch of its own (a restarted agent answers in full)."""
        self._epoch = uuid.uuid4().hex[:12]
        self._version = 0
        self._rows: dict[str, tuple[tuple[object, ...], dict[str, Any], int]] = {}
        self._tombstones: dict[str, tuple[int, float]] = {}
        """Removed path → (version it went at, monotonic time)."""
        self._floor = 0
        """Deltas since a version below this would miss a forgotten tombstone."""
        self._clock = clock
        self._lock = threading.Lock()

    def snapshot(
        self, registry: Registry, runtime: Runtime, since: object = None
    ) -> dict[str, Any]:
        """The tree now: full, or the changes after `since` (a `version` it answered).

        Runs on the caller's thread and never blocks on an actor. A `since` that is
        not one of this cache's versions (another agent's, malformed, too old) gets
        the full snapshot, never an error.
        """
        with self._lock:
            version = self._update(registry)
            after = self._since(since)
            if after is None:  # in the registry's order: depth first, in start order
                actors = depth_first({path: row[1] for path, row in self._rows.items()})
                removed: list[str] = []
            else:
                actors = [row[1] for row in self._rows.values() if row[2] > after]
                removed = [p for p, (gone, _) in self._tombstones.items() if gone > after]
        return {
            "time": time.time(),
            "version": f"{self._epoch}:{version}",
            "delta": after is not None,
            "latency_bounds": list(LATENCY_BOUNDS),
            "actors": actors,
            "removed": removed,
            "scheduler": asdict(runtime.scheduler.statistics()),
            "work": asdict(runtime.work.statistics()),
        }

    def _update(self, registry: Registry) -> int:
        """One pass over the registry: rows changed get the next version. Lock held."""
        self._version += 1
        version = self._version
        rows = self._rows
        now = self._clock()
        fresh: dict[str, tuple[tuple[object, ...], dict[str, Any], int]] = {}
        for path, entry in live_entries(registry):
            signature = _signature(entry)
            held = rows.get(path)
            if held is not None and held[0] == signature:
                fresh[path] = held
                continue
            try:
                shown = status_json(registry.status(path))
            except NotFound:  # gone since the entries were read: absent from this pass
                continue
            fresh[path] = (signature, shown, version)
            self._tombstones.pop(path, None)
        for path in rows.keys() - fresh.keys():
            self._tombstones[path] = (version, now)
        self._rows = fresh
        old = [p for p, (_, at) in self._tombstones.items() if now - at > TOMBSTONE_SECONDS]
        for path in old:
            self._floor = max(self._floor, self._tombstones.pop(path)[0])
        return version

    def _since(self, since: object) -> int | None:
        """The version number `since` names in this epoch, if deltas from it are whole."""
        if not isinstance(since, str):
            return None
        epoch, _, number = since.partition(":")
        if epoch != self._epoch or not number.isdigit():
            return None
        after = int(number)
        if after < self._floor or after > self._version:
            return None
        return after


@final
class SnapshotView:
    """The console's side: the last full view, brought up to date by each answer.

    One client thread. `params` goes with the next `snapshot` request; `merge` takes
    its answer and returns the full snapshot (today's shape: `time`,
    `latency_bounds`, `actors` depth first, `scheduler`, `work`).
    """

    def __init__(self) -> None:
        """Start with nothing seen: the first request asks for everything."""
        self._actors: dict[str, dict[str, Any]] = {}
        self._version: str | None = None

    def params(self) -> dict[str, Any]:
        """The request's parameters: `since` once a versioned answer was merged."""
        return {} if self._version is None else {"since": self._version}

    def reset(self) -> None:
        """Forget the view (a new connection, perhaps to a restarted agent)."""
        self._actors = {}
        self._version = None

    def merge(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Fold `answer` (full or delta) into the view; return the full snapshot.

        Raises KeyError/TypeError on an answer that is not a snapshot (the view is
        then reset, so the next request asks for everything).
        """
        try:
            if answer.get("delta"):
                actors = self._actors
                for path in answer.get("removed", ()):
                    actors.pop(path, None)
            else:
                actors = {}
            for actor in answer["actors"]:
                actors[actor["path"]] = actor
            self._actors = actors
            self._version = answer.get("version")
        except (KeyError, TypeError):
            self.reset()
            raise
        full = {k: v for k, v in answer.items() if k not in {"delta", "removed", "version"}}
        full["actors"] = depth_first(self._actors)
        return full


def depth_first(actors: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The actors from each root (no parent) down, children in their start order.

    The order `Registry.snapshot` gives; a child named by its parent but absent is
    skipped, and an actor no root reaches is left out, as the registry does.
    """
    result: list[dict[str, Any]] = []
    pending = [a["path"] for a in reversed(actors.values()) if a.get("parent") is None]
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        actor = actors.get(path)
        if actor is None or path in seen:
            continue
        seen.add(path)
        result.append(actor)
        pending.extend(reversed(actor.get("children") or ()))
    return result
