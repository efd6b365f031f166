"""Where the host's own actors live in the supervision tree.

    hosts (one_for_one)
    ├── host             HostActor: capabilities, host stats, hardware info
    ├── vmstats          the bulk VM stats sampler   (hostvisor.actors.vm.addresses)
    ├── vmboard          the VM board                (hostvisor.actors.vm.addresses)
    └── containerstats   the container stats sampler (hostvisor.actors.container.addresses)

supervision/ and api/ import these names; nothing else writes a host path.
"""

from __future__ import annotations

from typing import Final

HOSTS: Final = "hosts"
"""The hosts branch."""
HOST_ID: Final = "host"
HOST: Final = f"{HOSTS}/{HOST_ID}"
"""The HostActor."""
