"""Prometheus' text exposition format (0.0.4), written straight from our figures.

Why not prometheus_client's `generate_latest`: it validates and escapes every label
of every sample through several Python calls (about 13 us a line). A host with a
thousand VMs exposes some 15,000 lines; at that rate each scrape would hold the GIL
for a quarter of a second, long enough to slow the API it shares the process with.
Here a family is a list of lines built with one f-string each, from label strings
escaped once per scrape: a few milliseconds for the same host. The collector keeps
each actor's and VM's lines between scrapes (`rows.RowCache`) and hands them back
with `Family.extend`, so a scrape formats only what changed; the endpoint writes
the families one at a time (`chunks`), never one megabyte-long string.

Format: `# HELP` and `# TYPE` once per family, then its samples, each
`name{label="value",...} number`. Label values escape backslash, double quote and
newline; numbers are Go-style floats (`+Inf`, `NaN`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, final

Kind = Literal["counter", "gauge", "histogram"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def labels(**pairs: str) -> str:
    """`a="x",b="y"`: label pairs, escaped, for `Family.add` (build once per scrape)."""
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs.items())


def number(value: float) -> str:
    """A sample value: integers without a fraction, +Inf/-Inf/NaN spelt as Go does."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


@final
class Family:
    """One metric family: its header and its samples. Not thread-safe (one scrape)."""

    __slots__ = ("_lines", "kind", "name")

    def __init__(self, name: str, kind: Kind, help_text: str) -> None:
        """Start a family; `name` carries `_total` for a counter."""
        self.name = name
        self.kind = kind
        self._lines = [f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"]

    def add(self, label_text: str, value: float) -> None:
        """Add one sample with pre-built labels (`labels(...)`; "" for none)."""
        if label_text:
            self._lines.append(f"{self.name}{{{label_text}}} {number(value)}\n")
        else:
            self._lines.append(f"{self.name} {number(value)}\n")

    def add_histogram(
        self,
        label_text: str,
        bounds: Sequence[str],
        counts: Sequence[int],
        total: float,
    ) -> None:
        """Add a histogram's series from per-bucket counts (not cumulative).

        `bounds` are the `le` values already spelt (`"0.001"`), without `+Inf`;
        `counts` has one more item than `bounds`, the overflow bucket.
        """
        name = self.name
        prefix = f"{label_text}," if label_text else ""
        lines = self._lines
        running = 0
        for bound, count in zip(bounds, counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{{prefix}le="{bound}"}} {running}\n')
        running += counts[-1] if len(counts) > len(bounds) else 0
        lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {running}\n')
        braces = f"{{{label_text}}}" if label_text else ""
        lines.append(f"{name}_sum{braces} {number(total)}\n")
        lines.append(f"{name}_count{braces} {running}\n")

    def extend(self, cells: Iterable[str]) -> None:
        """Add pre-rendered samples: each cell is zero or more whole lines ("" for none)."""
        self._lines.extend(cells)

    @property
    def samples(self) -> int:
        """How many lines besides the header."""
        return sum(line.count("\n") for line in self._lines) - 2

    def text(self) -> str:
        """The family as text."""
        return "".join(self._lines)


def spelt(bounds: Iterable[float]) -> tuple[str, ...]:
    """Bucket bounds as `le` label values (once, at import)."""
    return tuple(repr(float(bound)) for bound in bounds)


def chunks(families: Iterable[Family]) -> list[bytes]:
    """The exposition as one UTF-8 chunk per family (to write one after the other)."""
    return [family.text().encode() for family in families]


def render(families: Iterable[Family]) -> bytes:
    """The whole exposition, UTF-8, as one string (tests; the endpoint uses `chunks`)."""
    return b"".join(chunks(families))
