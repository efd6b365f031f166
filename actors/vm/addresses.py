"""Where VM actors live in the supervision tree.

vms (rest_for_one)
├── guests (one_for_one, dynamic)   a VmActor per VM id: vms/guests/<vmId>
└── recoverer                       re-adopts every running domain on each start
"""

from __future__ import annotations

VMS = "vms"
"""The VM branch."""
GUESTS_ID = "guests"
VM_GUESTS = f"{VMS}/{GUESTS_ID}"
"""The dynamic supervisor of VmActors."""
VM_BOARD = "hosts/vmboard"
"""The VM board: every VM's last entry, for listings."""
VM_STATS = "hosts/vmstats"
"""The bulk VM stats sampler."""


def vm_path(vm_id: str) -> str:
    """The path of one VM's actor."""
    return f"{VM_GUESTS}/{vm_id}"
