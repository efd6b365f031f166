"""Where the storage actors live in the supervision tree: the only place these are spelt.

    storage (rest_for_one)
    ├── connections     ConnectionsActor: mounts, the connection store, domain adoption
    ├── domains         the dynamic supervisor of one StorageDomainActor per domain
    ├── pool            StoragePoolActor: create/connect/disconnect, SPM, membership
    ├── tasks           TaskManager: every SPM task and SDM job
    └── recoverer       re-adopts every domain whenever the branch (re)starts

supervision/ and api/ import these names; nothing else writes a storage path.
"""

from __future__ import annotations

from typing import Final

STORAGE: Final = "storage"
"""The storage branch."""

CONNECTIONS_ID: Final = "connections"
DOMAINS_ID: Final = "domains"
POOL_ID: Final = "pool"
TASKS_ID: Final = "tasks"
RECOVERER_ID: Final = "recoverer"

CONNECTIONS: Final = f"{STORAGE}/{CONNECTIONS_ID}"
STORAGE_DOMAINS: Final = f"{STORAGE}/{DOMAINS_ID}"
POOL: Final = f"{STORAGE}/{POOL_ID}"
TASKS: Final = f"{STORAGE}/{TASKS_ID}"
RECOVERER: Final = f"{STORAGE}/{RECOVERER_ID}"


def domain_path(sd_uuid: str) -> str:
    """The path of one storage domain's actor."""
    return f"{STORAGE_DOMAINS}/{sd_uuid}"
