"""Each actor's live counters, read without building a status per actor.

A scrape and a console refresh read every actor each second. `Registry.snapshot()`
builds a frozen `ActorStatus` per actor (its fields set one by one, its latency
buckets copied): about 1.5 ms at a thousand VMs, most of a scrape once lines are
kept. `Registry.entries()` — one list copy under the registry's lock — hands out
each actor's registration instead: its ref, its own `ActorStats` (written only by
the actor's thread; read here field by field, as `Registry.status` does), its
parent and its restarts. Readers compare what they read with what they showed last
and build text or JSON only for what changed.

Until the registry has `entries()` (a change asked of the lead), `live_entries`
makes the same rows from `snapshot()`, at the old cost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import pykka

from hostvisor.actors.actor import ActorState
from hostvisor.supervision.registry import ActorStatus, Registry, RestartInfo


class Counters(Protocol):
    """What readers read of an actor's `ActorStats` (which has these and more)."""

    @property
    def state(self) -> ActorState:  # noqa: D102
        ...

    @property
    def handled(self) -> int:  # noqa: D102
        ...

    @property
    def skipped(self) -> int:  # noqa: D102
        ...

    @property
    def last_handling_seconds(self) -> float:  # noqa: D102
        ...

    @property
    def busy_since(self) -> float | None:  # noqa: D102
        ...

    @property
    def children(self) -> tuple[str, ...]:  # noqa: D102
        ...

    @property
    def busy_total_seconds(self) -> float:  # noqa: D102
        ...

    @property
    def latency_counts(self) -> Sequence[int]:  # noqa: D102
        ...


class Entry(Protocol):
    """One registration: what `Registry.entries()` hands out per path."""

    @property
    def ref(self) -> pykka.ActorRef[Any]:
        """The actor (its class, its mailbox)."""

    @property
    def stats(self) -> Counters:
        """The actor's own counters (`ActorStats`): read them, never write them."""

    @property
    def parent(self) -> str | None:
        """Its supervisor's path."""

    @property
    def restarts(self) -> RestartInfo:
        """Its child slot's restarts."""


class _FromStatus:
    """A registration and its counters, from a status: one object, no copy.

    Built a thousand times a scrape: a plain slotted class, holding the status's
    own tuples, so that the garbage collector has little more to walk than the
    statuses themselves.
    """

    __slots__ = (
        "busy_since",
        "busy_total_seconds",
        "children",
        "handled",
        "last_handling_seconds",
        "latency_counts",
        "parent",
        "ref",
        "restarts",
        "skipped",
        "state",
    )

    def __init__(self, ref: pykka.ActorRef[Any], status: ActorStatus) -> None:
        busy = status.busy_seconds
        self.ref = ref
        self.parent = status.parent
        self.restarts = status.restarts
        self.state = _STATES[status.state]
        self.handled = status.messages_handled
        self.skipped = status.skipped
        self.last_handling_seconds = status.last_handling_seconds
        self.busy_since = None if busy is None else time.perf_counter() - busy
        self.children = status.children
        self.busy_total_seconds = status.busy_total_seconds
        self.latency_counts = status.latency_counts

    @property
    def stats(self) -> _FromStatus:
        """Itself: it holds the counters too."""
        return self


_STATES = {state.value: state for state in ActorState}


def live_entries(registry: Registry) -> Sequence[tuple[str, Entry]]:
    """Every (path, registration): `Registry.entries()`, or rows made from a snapshot.

    Any thread; never blocks on an actor (the registry's lock, briefly).
    """
    entries = getattr(registry, "entries", None)
    if callable(entries):
        rows: Sequence[tuple[str, Entry]] = entries()
        return rows
    return [
        (status.path, _FromStatus(ref, status))
        for status in registry.snapshot()
        if (ref := registry.get(status.path)) is not None
    ]


def class_name(entry: Entry) -> str:
    """The actor's class name, as `ActorStatus.actor_class` spells it."""
    return entry.ref.actor_class.__name__


def mailbox_depth(entry: Entry) -> int:
    """Messages waiting in the actor's mailbox now."""
    depth: int = entry.ref.actor_inbox.qsize()  # type: ignore[attr-defined]
    return depth
