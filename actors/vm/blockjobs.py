"""Block jobs of a running VM: live merge (VM.merge), disk replication, `vmJobs`.

`BlockJobs` is mixed into `VmActor` (a seam: filled in by its owner).
"""

from __future__ import annotations

from typing import Any, ClassVar


class BlockJobs:
    """Block jobs for a VM actor (mixed into VmActor; runs on its turn only)."""

    NOT_YET: ClassVar[frozenset[str]] = frozenset()
    """Methods the API calls that this part does not implement yet: code 75."""

    vm_id: str

    def _blockjob_receive(self, message: Any) -> bool:  # noqa: ARG002 - a seam
        """Handle `message` if it is one of this part's; say whether it was."""
        return False

    def _vm_jobs(self) -> dict[str, Any]:
        """The `vmJobs` stats field: the block jobs running, by job id."""
        return {}
