"""ConnectionsActor: owns this host's storage mounts and their store (connections.json).

    caller ──connect(conns)──────▶ actor ──Serial──▶ worker: mount/link each, persist each
    caller ──disconnect(conns)───▶ actor ──Serial──▶ worker: stop its domains' actors,
                                                      unmount/unlink, forget each
    caller ──adopt(sd)───────────▶ actor ──Serial──▶ worker: find it on a mount, start its actor
    caller ──create_domain(req)──▶ actor ──Serial──▶ worker: lay it out, start its actor
    caller ──scan()──────────────▶ actor ──run_off─▶ worker: every domain on the mounts

Every change of the mounts and of `connections.json` runs on one queue, in the
order asked, off the actor's thread (mount(8) can hang on a dead server): two
storms of connects and disconnects leave the store exactly as the last answer
says, and a domain is never adopted from a mount being taken away. The store is
read once in `on_start` (the source of truth of what to reconnect) and then kept
in memory, written through on each change.

The statuses are VDSM's (see actors/storage/connections.py): 0 connected, else the
storage error's code, one per connection, never an exception for a storage failure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.storage.connections import (
    GLUSTER_DIR,
    ConnectionStore,
    ServerConnection,
    connect,
    connected_roots,
    disconnect,
    normalize_spec,
)
from hostvisor.actors.storage.domain_ops import pool_of
from hostvisor.actors.storage.errors import StorageDomainFSNotMounted, StorageDomainTypeError
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import FILE_DOMAIN_TYPES, DomainType, mount_point
from hostvisor.actors.storage.pool_model import CreateDomain
from hostvisor.actors.storage.serial import SerialActor, done, settle

log = logging.getLogger(__name__)

Status = dict[str, Any]
"""{id, status}: one connection's answer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainChildren:
    """How the connections actor starts and stops domain actors (under `storage/domains`).

    Attributes:
        running: the ids of the domains that have an actor (a registry read; any thread).
        start: start an actor for each domain that has none; return how many have
            one now (blocks: call it from a worker).
        stop: stop and forget one domain's actor (blocks: call it from a worker).
    """

    running: Callable[[], set[str]]
    start: Callable[[Sequence[FileDomain]], int]
    stop: Callable[[str], None]


class ConnectionsActor(SerialActor):
    """Owns the storage server connections, their mounts and their store.

    Args:
        store: the persisted connections.
        mount_root: where connections appear (the data-center mount root).
        domains: how domain actors are started and stopped.
    """

    def __init__(
        self, *, store: ConnectionStore, mount_root: Path, domains: DomainChildren
    ) -> None:
        """Remember the collaborators; read the store in `on_start`."""
        super().__init__()
        self._store = store
        self._mount_root = mount_root
        self._domains = domains
        self._conns: list[ServerConnection] = []
        self._scans: list[_Scan] = []
        self._stuck: set[Path] = set()
        """Connections whose last scan has not ended (skipped by new scans)."""

    def on_start(self) -> None:
        """Read the store (a local file in the state directory) and make the queue."""
        self._conns = self._store.all()
        self._start_serial()

    stopped = "the storage connections actor stopped"

    # -- connections ----------------------------------------------------------------------

    def connections(self) -> list[ServerConnection]:
        """The stored connections, in the order they were made (from memory)."""
        return list(self._conns)

    def connect(self, conns: tuple[ServerConnection, ...]) -> CallbackFuture:
        """connectStorageServer: mount or link each, in order; [{id, status}] (0 = connected).

        Each connection that connects is stored before the next one is tried.
        """
        work = functools.partial(_connect_all, conns, self._mount_root, self._store)
        return self._serial.add(work, op="connect storage servers", after=self._reread)

    def disconnect(self, conns: tuple[ServerConnection, ...]) -> CallbackFuture:
        """disconnectStorageServer: stop the domains on each, unmount or unlink, forget it."""
        work = functools.partial(
            _disconnect_all, conns, self._mount_root, self._store, self._domains
        )
        return self._serial.add(work, op="disconnect storage servers", after=self._reread)

    def reconnect(self) -> CallbackFuture:
        """Connect every stored connection again (after a host boot the mounts are gone).

        The future settles with the statuses; a failure is logged, never raised.
        """
        return self.connect(tuple(self._conns))

    def _reread(self, _outcome: Any) -> None:
        self._conns = self._store.all()

    # -- domains --------------------------------------------------------------------------

    def adopt(self, sd_uuid: str) -> CallbackFuture:
        """Start the actor of a domain found on a connected mount. Idempotent.

        Fails with StorageDomainDoesNotExist when no connected mount holds it.
        """
        if sd_uuid in self._domains.running():
            return done(None)
        work = functools.partial(_adopt, self._mount_root, sd_uuid, self._domains)
        return self._serial.add(work, op=f"adopt domain {sd_uuid}")

    def forget(self, sd_uuid: str) -> CallbackFuture:
        """Stop and forget a domain's actor (the domain was formatted)."""
        work = functools.partial(self._domains.stop, sd_uuid)
        return self._serial.add(work, op=f"forget domain {sd_uuid}")

    def adopt_all(self) -> CallbackFuture:
        """Start an actor for every domain on the connected mounts; settle with how many run."""
        work = functools.partial(_adopt_all, self._mount_root, self._domains)
        return self._serial.add(work, op="adopt every domain")

    def create_domain(self, request: CreateDomain) -> CallbackFuture:
        """StorageDomain.create: a v5 file domain on a connected server, and its actor."""
        if request.domain_type not in FILE_DOMAIN_TYPES:
            raise StorageDomainTypeError(
                domainType=request.domain_type.name, reason="only file domains here"
            )
        work = functools.partial(_create_domain, request, self._mount_root, self._domains)
        return self._serial.add(work, op=f"create domain {request.sd_uuid}")

    def scan(self) -> CallbackFuture:
        """Host.getStorageDomains: [(sdUUID, poolUUID, metadata)] of every domain on the mounts.

        The metadata is {} where it cannot be read (the domain is still listed). Each
        connection is scanned on its own worker; one that has not answered within
        `SCAN_WAIT` s (a hung mount) is left out of this answer, and out of the next
        ones without waiting again until its scan ends, so a hung server costs one
        worker and never the verb. Never blocks.
        """
        reply = CallbackFuture()
        self.run_off(
            functools.partial(connected_roots, self._mount_root),
            functools.partial(self._scan_roots, reply),
            name="list connections",
        )
        return reply

    def _scan_roots(self, reply: CallbackFuture, roots: list[Path] | BaseException) -> None:
        if isinstance(roots, BaseException):
            settle(reply, roots, "scan the storage domains")
            return
        scan = _Scan(reply=reply, pending={r for r in roots if r not in self._stuck})
        self._scans.append(scan)
        for root in scan.pending:
            self._stuck.add(root)
            self.run_off(
                functools.partial(_scan, root),
                functools.partial(self._root_scanned, root),
                name=f"scan {root.name}",
            )
        self.tell_later(SCAN_WAIT, _ScanDeadline(scan_id=id(scan)))
        self._settle_scans()

    def _root_scanned(self, root: Path, outcome: Any) -> None:
        self._stuck.discard(root)
        found = [] if isinstance(outcome, BaseException) else outcome
        for scan in self._scans:
            if root in scan.pending:
                scan.pending.discard(root)
                scan.found.extend(found)
        self._settle_scans()

    def _settle_scans(self, *, expired: int | None = None) -> None:
        for scan in list(self._scans):
            if not scan.pending or id(scan) == expired:
                self._scans.remove(scan)
                if scan.pending:
                    log.warning("storage scan: no answer from %s", sorted(map(str, scan.pending)))
                found = sorted(scan.found, key=lambda entry: entry[0])
                settle(scan.reply, found, "scan the storage domains")

    def on_receive(self, message: Any) -> Any:
        """The scan deadline (a timer); anything else is a bug (see SerialActor)."""
        if isinstance(message, _ScanDeadline):
            self._settle_scans(expired=message.scan_id)
            return None
        return super().on_receive(message)


SCAN_WAIT = 5.0
"""Seconds a connection's scan may take before Host.getStorageDomains answers without it."""


@dataclass(slots=True)
class _Scan:
    """One Host.getStorageDomains scan waiting for its connections (the actor's thread)."""

    reply: CallbackFuture
    pending: set[Path]
    found: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _ScanDeadline:
    """Tell (timer): answer scan `scan_id` with what it has."""

    scan_id: int


# -- the works (a worker thread; each blocks) -----------------------------------------------


def _connect_all(
    conns: Sequence[ServerConnection], mount_root: Path, store: ConnectionStore
) -> list[Status]:
    statuses = []
    for conn in conns:
        status = connect(conn, mount_root)
        if status == 0:
            store.add(conn)
        statuses.append({"id": conn.id, "status": status})
    return statuses


def _disconnect_all(
    conns: Sequence[ServerConnection],
    mount_root: Path,
    store: ConnectionStore,
    domains: DomainChildren,
) -> list[Status]:
    statuses = []
    for conn in conns:
        root = conn.mount_point(mount_root)
        running = domains.running()
        if running and root.is_dir():
            for domain in FileDomain.scan([root]):
                if domain.sd_uuid in running:
                    domains.stop(domain.sd_uuid)
        status = disconnect(conn, mount_root)
        store.remove(conn.id)
        statuses.append({"id": conn.id, "status": status})
    return statuses


def _adopt(mount_root: Path, sd_uuid: str, domains: DomainChildren) -> None:
    domains.start([FileDomain.find(connected_roots(mount_root), sd_uuid)])


def _adopt_all(mount_root: Path, domains: DomainChildren) -> int:
    return domains.start(FileDomain.scan(connected_roots(mount_root)))


def _create_domain(request: CreateDomain, mount_root: Path, domains: DomainChildren) -> None:
    where = request.type_args
    if request.domain_type is DomainType.LOCALFS:
        root = mount_point(mount_root, where)
    elif request.domain_type is DomainType.GLUSTERFS:
        root = mount_point(mount_root / GLUSTER_DIR, normalize_spec(where))
    else:
        root = mount_point(mount_root, normalize_spec(where))
    if not root.is_dir():
        raise StorageDomainFSNotMounted(path=str(root), typeArgs=where)
    domain = FileDomain.create(
        root,
        request.sd_uuid,
        name=request.name,
        domain_type=request.domain_type,
        domain_class=request.domain_class,
        remote_path=where,
        version=request.version,
        block_size=request.block_size,
        max_hosts=request.max_hosts,
    )
    domains.start([domain])


def _scan(root: Path) -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for domain in FileDomain.scan([root]):
        try:
            meta = domain.metadata()
        except (OSError, HostvisorError):
            meta = {}
        found.append((domain.sd_uuid, pool_of(meta), meta))
    return found
