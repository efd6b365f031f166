"""StoragePoolActor: this host's connection to its pool, and the SPM role.

A modern Engine connects a pool with a `domainDict`, so the pool's state lives in
memory on each host (reference/vdsm-wire.md §8). Hostvisor also writes it to the
state directory, atomically, so an agent restarted after `kill -9` is connected to
the same pool with the same domains before its API opens; the master domain's
metadata keeps the pool's name and master version, as VDSM's does.

SPM: only the host holding the pool's lock may change metadata. File domains here
use a local lock (as VDSM's localfs domains do): an exclusive `flock` on the
master domain's `dom_md/leases`, taken by the spmStart task's worker and handed to
this actor. The kernel drops it when the process dies, so a killed agent is no
longer SPM and the Engine elects again; the lease version (lver) goes on growing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.storage.errors import AcquireLockFailure, NotSpm, StorageDomainNotInPool
from hostvisor.actors.storage.metadata import atomic_write
from hostvisor.actors.storage.model import DomainStatus

log = logging.getLogger(__name__)


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
        """Read the record at `path`; None when there is none."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(**data)

    def save(self, path: Path) -> None:
        """Write the record atomically."""
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


class StoragePoolActor(Actor):
    """Owns this host's pool connection and, while SPM, the pool's lock.

    Args:
        record: the pool as connected.
        store: where the record is persisted.
    """

    def __init__(self, *, record: PoolRecord, store: Path) -> None:
        """Remember the pool; persist it in `on_start`."""
        super().__init__()
        self._record = record
        self._store = store
        self._lock_fd: int | None = None

    def on_start(self) -> None:
        """Persist the connection: a restarted agent connects the same pool."""
        self._record.save(self._store)

    def on_stop(self) -> None:
        """Release the SPM lock, if held."""
        self._release()

    def on_failure(self, *_exc_info: Any) -> None:
        """Release the SPM lock, if held."""
        self._release()

    # -- the pool -------------------------------------------------------------------------

    def record(self) -> PoolRecord:
        """The pool as this host knows it."""
        return self._record

    def set_domain(self, sd_uuid: str, status: DomainStatus | None) -> PoolRecord:
        """Record a domain's status in the pool (None: the domain left the pool)."""
        domains = dict(self._record.domains)
        if status is None:
            if domains.pop(sd_uuid, None) is None:
                raise StorageDomainNotInPool(sdUUID=sd_uuid, spUUID=self._record.sp_uuid)
        else:
            domains[sd_uuid] = status.value
        self._update(domains=domains)
        return self._record

    def set_master(self, master_uuid: str, master_version: int) -> PoolRecord:
        """Record a new master domain and version."""
        self._update(master_uuid=master_uuid, master_version=master_version)
        return self._record

    def forget(self) -> None:
        """Disconnect: release the SPM role and remove the persisted record."""
        self._release()
        with contextlib.suppress(FileNotFoundError):
            self._store.unlink()

    # -- SPM --------------------------------------------------------------------------------

    @property
    def is_spm(self) -> bool:
        """Whether this host holds the pool's lock."""
        return self._lock_fd is not None

    def spm_status(self) -> dict[str, Any]:
        """StoragePool.getSpmStatus: {spmStatus, spmLver, spmId}."""
        record = self._record
        if self.is_spm:
            return {"spmStatus": "SPM", "spmLver": record.lver, "spmId": record.host_id}
        return {"spmStatus": "Free", "spmLver": record.lver, "spmId": -1}

    def require_spm(self) -> None:
        """Raise NotSpm unless this host is the SPM."""
        if not self.is_spm:
            raise NotSpm(spUUID=self._record.sp_uuid)

    def became_spm(self, lock_fd: int) -> dict[str, Any]:
        """Take the lock a spmStart task acquired; answer the new SPM status."""
        if self._lock_fd is not None:
            os.close(lock_fd)  # already SPM: keep the lock held, not a second one
            return self.spm_status()
        self._lock_fd = lock_fd
        self._update(lver=self._record.lver + 1)
        log.info("host %d is SPM of pool %s", self._record.host_id, self._record.sp_uuid)
        return self.spm_status()

    def spm_stop(self) -> None:
        """Give up the SPM role."""
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            log.info(
                "host %d is no longer SPM of pool %s", self._record.host_id, self._record.sp_uuid
            )

    def _update(self, **changes: Any) -> None:
        record = replace(self._record, **changes)
        record.save(self._store)
        self._record = record
