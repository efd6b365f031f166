"""Changes to a running VM's devices and policies: consoles, NICs, I/O tune.

`DeviceEditor` is mixed into `VmActor` (a seam: filled in by its owner).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DeviceEditor:
    """Device changes for a VM actor (mixed into VmActor; runs on its turn only)."""

    NOT_YET: ClassVar[frozenset[str]] = frozenset()
    """Methods the API calls that this part does not implement yet: code 75."""

    vm_id: str

    def _device_receive(self, message: Any) -> bool:  # noqa: ARG002 - a seam
        """Handle `message` if it is one of this part's; say whether it was."""
        return False
