"""The pool's persisted record, the SPM lock, and the typed requests of the pool verbs.

A modern Engine connects a pool with a `domainDict`, so the pool's state lives in
memory on each host (reference/vdsm-wire.md §8). Hostvisor also writes it to the
state directory, atomically, so an agent restarted after `kill -9` is connected to
the same pool with the same domains before its API opens; the master domain's
metadata keeps the pool's name and master version, as VDSM's does.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hostvisor.actors.storage.errors import AcquireLockFailure
from hostvisor.actors.storage.metadata import atomic_write
from hostvisor.actors.storage.model import DomainClass, DomainType

MAX_HOST_ID = 250


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """What this host knows of its pool; persisted as JSON."""

    sp_uuid: str
    host_id: int
    master_uuid: str
    master_version: int
    domains: dict[str, str] = field(default_factory=dict)
    """Domain id -> status ("Active", "Attached")."""
    lver: int = -1
    """The SPM lease version: grows at every spmStart."""

    @classmethod
    def load(cls, path: Path) -> PoolRecord | None:
        """Read the record at `path`; None when there is none (blocking, local)."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(**data)

    def save(self, path: Path) -> None:
        """Write the record atomically (blocking, local)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(asdict(self), indent=1, sort_keys=True).encode())


def take_spm_lock(lease_file: Path) -> int:
    """Open `lease_file` and lock it exclusively without waiting; return the descriptor.

    Blocking I/O on the domain's mount: call it from a worker, never an actor.

    Raises:
        AcquireLockFailure: another process holds the lock.
    """
    fd = os.open(lease_file, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AcquireLockFailure(lease=str(lease_file), reason="held by another host") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePool:
    """StoragePool.create's parameters, checked."""

    sp_uuid: str
    name: str
    master_uuid: str
    master_version: int
    domains: tuple[str, ...]
    """Every domain of the pool, the master last if it was not listed."""
    lock_renewal_interval: int = 5
    lease_time: int = 60
    io_op_timeout: int = 10
    lease_retries: int = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectPool:
    """StoragePool.connect's parameters, checked."""

    sp_uuid: str
    host_id: int
    master_uuid: str
    master_version: int
    domains: tuple[tuple[str, str], ...] = ()
    """(sdUUID, status) from `domainDict`; empty: read POOL_DOMAINS from the master."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateDomain:
    """StorageDomain.create's parameters, checked."""

    sd_uuid: str
    name: str
    domain_type: DomainType
    domain_class: DomainClass
    type_args: str
    version: int = 5
    block_size: int = 512
    max_hosts: int = 2000
