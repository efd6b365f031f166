"""Snapshots of a running VM (VM.snapshot, freeze, thaw) and hibernation.

`Snapshotter` is mixed into `VmActor` (a seam: filled in by its owner).
"""

from __future__ import annotations

from typing import Any, ClassVar


class Snapshotter:
    """Snapshots for a VM actor (mixed into VmActor; runs on its turn only)."""

    NOT_YET: ClassVar[frozenset[str]] = frozenset({"snapshot"})
    """Methods the API calls that this part does not implement yet: code 75."""

    vm_id: str

    def _snapshot_receive(self, message: Any) -> bool:  # noqa: ARG002 - a seam
        """Handle `message` if it is one of this part's; say whether it was."""
        return False
