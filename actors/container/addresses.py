"""Where container-VM actors live in the supervision tree.

containers (rest_for_one)
├── guests (one_for_one, dynamic)   a ContainerActor per VM id: containers/guests/<vmId>
└── recoverer                       re-adopts every labelled container on each start
"""

from __future__ import annotations

CONTAINERS = "containers"
"""The container branch."""
GUESTS_ID = "guests"
CONTAINER_GUESTS = f"{CONTAINERS}/{GUESTS_ID}"
"""The dynamic supervisor of ContainerActors."""
DOCKER = "infra/docker"
"""The docker engine's actor (connection and event watcher)."""
CONTAINER_STATS = "hosts/containerstats"
"""The container stats sampler."""


def container_path(vm_id: str) -> str:
    """The path of one container VM's actor."""
    return f"{CONTAINER_GUESTS}/{vm_id}"
