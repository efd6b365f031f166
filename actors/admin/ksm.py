"""KSM through /sys/kernel/mm/ksm: read its state, write its knobs (blocking file I/O).

The knobs and their bounds are those VDSM's supervdsm `ksmTune` accepts:
`run` (0 stop, 1 merge, 2 unmerge), `merge_across_nodes` (0 or 1 — the kernel
refuses a change while pages are shared: EBUSY), `sleep_millisecs` and
`pages_to_scan` (below 2**32). Every value is checked before any is written, so a
bad request changes nothing.

Plain blocking code with no thread of its own; the memory actor runs it off its
turn (`Actor.run_off`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hostvisor.actors.admin.mompolicy import KsmState

KSM_ROOT = Path("/sys/kernel/mm/ksm")

LIMITS = {
    "run": 3,
    "merge_across_nodes": 2,
    "sleep_millisecs": 2**32,
    "pages_to_scan": 2**32,
}
"""Each knob's values are 0 <= value < limit."""

WRITE_ORDER = ("run", "merge_across_nodes", "sleep_millisecs", "pages_to_scan")
"""Stop/unmerge first: the kernel takes merge_across_nodes only with no page shared."""


def available(root: Path = KSM_ROOT) -> bool:
    """Whether this kernel has KSM (blocking: one stat)."""
    return (root / "run").exists()


def read_state(root: Path = KSM_ROOT) -> KsmState:
    """Return KSM's knobs and page counts (blocking: reads sysfs).

    Raises:
        OSError: the kernel has no KSM.
    """

    def read(name: str) -> int:
        return int((root / name).read_text().strip() or 0)

    return KsmState(
        run=read("run"),
        pages_to_scan=read("pages_to_scan"),
        sleep_millisecs=read("sleep_millisecs"),
        merge_across_nodes=read("merge_across_nodes"),
        pages_shared=read("pages_shared"),
        pages_sharing=read("pages_sharing"),
    )


def checked(tuning: Mapping[str, Any]) -> dict[str, int]:
    """Return `tuning` as knob -> int, checked against `LIMITS` (pure).

    Integers are taken as they are, and so are strings spelling one (supervdsm's
    `int(value)`); booleans are refused.

    Raises:
        ValueError: an unknown knob, a value that is not an integer, or one out of range.
    """
    values: dict[str, int] = {}
    for key, value in tuning.items():
        if key not in LIMITS:
            raise ValueError(f"invalid KSM parameter {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"invalid value of KSM parameter {key!r}: {value!r}")  # noqa: TRY004 - one error for every bad value
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"invalid value of KSM parameter {key!r}: {value!r}") from None
        if not 0 <= number < LIMITS[key]:
            raise ValueError(f"KSM parameter {key!r} out of range: {number}")
        values[key] = number
    return values


def write(tuning: Mapping[str, int], root: Path = KSM_ROOT) -> None:
    """Write checked knobs (see `checked`) to sysfs, in `WRITE_ORDER` (blocking).

    Raises:
        OSError: the kernel refused a value (EBUSY for merge_across_nodes while
            pages are shared) or has no KSM; knobs before it are written.
    """
    for key in WRITE_ORDER:
        if key in tuning:
            (root / key).write_text(str(tuning[key]))
