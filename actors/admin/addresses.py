"""Where the host administration actors live in the supervision tree.

    admin (one_for_one)
    ├── memory    MemoryActor: MOM's policy (balloons, KSM), setKsmTune
    ├── devices   DevicesActor: hostdevListByCaps, hostdevChangeNumvfs, getLldp
    └── fencer    FenceActor: fenceNode, one fence agent process per call

supervision/ and api/ import these names; nothing else writes an admin path.
"""

from __future__ import annotations

from typing import Final

ADMIN: Final = "admin"
"""The admin branch."""
MEMORY_ID: Final = "memory"
MEMORY: Final = f"{ADMIN}/{MEMORY_ID}"
DEVICES_ID: Final = "devices"
DEVICES: Final = f"{ADMIN}/{DEVICES_ID}"
FENCER_ID: Final = "fencer"
FENCER: Final = f"{ADMIN}/{FENCER_ID}"
