"""The actor families of a scrape, each actor's lines kept while its figures hold.

Per actor: mailbox depth, messages handled, asks skipped, restarts, busy time, up
(with a state label), and for the tree's fixed actors the handling-latency
histogram; per actor class, the histogram summed over all its actors. A thousand
VM actors would otherwise cost 23 series each, so guests have only the class sum.

An actor's row is rebuilt when any figure it shows changed (the signature holds
them all, the latency buckets included for a histogrammed actor: the actor bumps
`handled` before its bucket, so `handled` alone could keep a stale histogram), and
its lines are made from the signature itself, so they show exactly what was read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import partial

from hostvisor.actors.actor import LATENCY_BOUNDS
from hostvisor.actors.container.addresses import CONTAINER_GUESTS
from hostvisor.actors.vm.addresses import VM_GUESTS
from hostvisor.api.metrics.live import Entry, class_name, mailbox_depth
from hostvisor.api.metrics.rows import Row, RowCache
from hostvisor.api.metrics.text import Family, labels, number, spelt

_ACTOR_LE = spelt(LATENCY_BOUNDS)
_GUESTS = (f"{VM_GUESTS}/", f"{CONTAINER_GUESTS}/")
_NAMES = (
    "hostvisor_actor_mailbox_depth",
    "hostvisor_actor_messages_handled_total",
    "hostvisor_actor_asks_skipped_total",
    "hostvisor_actor_restarts_total",
    "hostvisor_actor_busy_seconds_total",
    "hostvisor_actor_up",
    "hostvisor_actor_handling_seconds",
)


def actor_families_empty() -> list[Family]:
    """The per-actor families, headers only, in exposition order."""
    return [
        Family(_NAMES[0], "gauge", "Messages waiting"),
        Family(_NAMES[1], "counter", "Messages handled (this incarnation)"),
        Family(_NAMES[2], "counter", "Asks dropped: their asker gave up"),
        Family(_NAMES[3], "counter", "Restarts of the child slot"),
        Family(_NAMES[4], "counter", "Time spent handling messages"),
        Family(_NAMES[5], "gauge", "1 when the actor runs, else 0 (state label)"),
        Family(_NAMES[6], "histogram", "Time to handle one message"),
    ]


class ActorRows:
    """Builds the actor families from the registry's entries, reusing unchanged rows.

    One scrape at a time: `families` takes the instance's lock (a second scrape
    waits for the first, which takes a few milliseconds).
    """

    def __init__(self) -> None:
        """Start with nothing kept."""
        self.cache = RowCache()
        self._lock = threading.Lock()

    def families(self, entries: Iterable[tuple[str, Entry]]) -> list[Family]:
        """The per-actor families and the per-class histogram (the caller's thread).

        `entries` are the registry's (`live.live_entries`); each actor's figures are
        read once into its signature, and its lines are made from that signature.
        """
        families = actor_families_empty()
        rows: list[Row] = []
        by_class: dict[str, list[Sequence[int]]] = {}
        busy_by_class: dict[str, list[float]] = {}
        with self._lock:
            cache = self.cache
            for path, entry in entries:
                stats = entry.stats
                counts = stats.latency_counts
                actor_class = class_name(entry)
                busy = stats.busy_total_seconds
                fixed = not path.startswith(_GUESTS)
                signature = (
                    actor_class,
                    stats.state.value,
                    mailbox_depth(entry),
                    stats.handled,
                    stats.skipped,
                    entry.restarts.count,
                    busy,
                    tuple(counts) if fixed else None,
                )
                rows.append(cache.row(path, signature, partial(_row, path, signature)))
                if counts:
                    by_class.setdefault(actor_class, []).append(counts)
                    busy_by_class.setdefault(actor_class, []).append(busy)
            cache.end_scrape()
        for index, family in enumerate(families):
            family.extend(row[index] for row in rows)
        per_class = Family(
            "hostvisor_actor_class_handling_seconds",
            "histogram",
            "Time to handle one message, over all actors of a class",
        )
        for name, counts_list in sorted(by_class.items()):
            summed = [sum(column) for column in zip(*counts_list, strict=False)]
            per_class.add_histogram(
                labels(actor_class=name), _ACTOR_LE, summed, sum(busy_by_class[name])
            )
        families.append(per_class)
        return families


Signature = tuple[str, str, int, int, int, int, float, "tuple[int, ...] | None"]
"""An actor's figures as shown: class, state, mailbox, handled, skipped, restarts,
busy time, and the latency buckets (tree actors only: guests have the class sum)."""


def _row(path: str, signature: Signature) -> Row:
    """One actor's cells, one per family of `actor_families_empty`, from its signature."""
    actor_class, state, mailbox, handled, skipped, restarts, busy, counts = signature
    key = labels(path=path, actor_class=actor_class)
    up = 1 if state == "running" else 0
    histogram = ""
    if counts:
        family = Family(_NAMES[6], "histogram", "")
        family.add_histogram(key, _ACTOR_LE, counts, busy)
        histogram = family.text().split("\n", 2)[2]  # without the header
    return (
        f"{_NAMES[0]}{{{key}}} {mailbox}\n",
        f"{_NAMES[1]}{{{key}}} {handled}\n",
        f"{_NAMES[2]}{{{key}}} {skipped}\n",
        f"{_NAMES[3]}{{{key}}} {restarts}\n",
        f"{_NAMES[4]}{{{key}}} {number(busy)}\n",
        f'{_NAMES[5]}{{{key},state="{state}"}} {up}\n',
        histogram,
    )
