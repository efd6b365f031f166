"""Sample lines kept between scrapes, per actor or VM, while what they show holds.

A thousand idle VMs look the same from one scrape to the next: formatting their
fifteen thousand lines again each second is the whole cost of a scrape. A
`RowCache` keeps, per key (an actor's path, a VM's id), the row of cells it last
built (one cell per family: zero or more whole lines) with the *signature* they
were built from: every value the lines show, or an immutable object they were
made from (a frozen `VmEntry`). A scrape passes the signature it reads now; the
row is rebuilt when it differs (`==`, which checks identity first) and reused when
it is equal, so a cached row is never staler than the figures read by the same
scrape. Keys not seen in a scrape are dropped by `end_scrape`: a VM that went away
leaves no line behind, and one that comes back is built afresh.

Not thread-safe: one scrape at a time (the collector holds its lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

Row = tuple[str, ...]
"""One cell per family; a cell is zero or more whole sample lines."""


@final
class RowCache:
    """Rows by key, each with the signature it was built from. One scrape at a time."""

    __slots__ = ("_rows", "_seen", "built", "reused")

    def __init__(self) -> None:
        """Start empty."""
        self._rows: dict[str, tuple[object, Row]] = {}
        self._seen: set[str] = set()
        self.built = 0
        """Rows built (first seen or changed), over the cache's life."""
        self.reused = 0
        """Rows served unchanged, over the cache's life."""

    def row(self, key: str, signature: object, build: Callable[[], Row]) -> Row:
        """The row of `key`: the kept one if built from an equal `signature`, else `build()`.

        `build` must depend only on what `signature` holds (or on objects it holds
        that never change). Raises whatever `build` raises (the row is then not kept).
        """
        self._seen.add(key)
        held = self._rows.get(key)
        if held is not None and held[0] == signature:
            self.reused += 1
            return held[1]
        cells = build()
        self._rows[key] = (signature, cells)
        self.built += 1
        return cells

    def end_scrape(self) -> None:
        """Forget every key this scrape did not ask for (gone actors and VMs)."""
        seen = self._seen
        rows = self._rows
        if len(seen) != len(rows):
            for key in [k for k in rows if k not in seen]:
                del rows[key]
        self._seen = set()

    def forget(self) -> None:
        """Drop every row (a scrape part that failed: rebuild it all next time)."""
        self._rows.clear()
        self._seen = set()

    def __len__(self) -> int:
        """How many rows are kept."""
        return len(self._rows)
