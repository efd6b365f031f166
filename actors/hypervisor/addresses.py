"""Where the shared infrastructure's actors live in the supervision tree.

    infra (rest_for_one)
    ├── hypervisor   HypervisorActor: the libvirt connection and its event pump
    ├── events       the event bus (hostvisor.actors.events_proxy)
    └── docker       the docker engine's actor (hostvisor.actors.container.addresses)

supervision/ and api/ import these names; nothing else writes an infra path.
"""

from __future__ import annotations

from typing import Final

INFRA: Final = "infra"
"""The infrastructure branch, started first and stopped last."""
HYPERVISOR_ID: Final = "hypervisor"
HYPERVISOR: Final = f"{INFRA}/{HYPERVISOR_ID}"
"""The HypervisorActor."""
