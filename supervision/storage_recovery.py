"""Recovery at start: storage connections, domains and the pool connection come back.

The sources of truth are outside the process: the connections this host made are
persisted in the state directory (reconnected here: after a host boot the mounts
are gone; after an agent restart they are still there and reconnecting is a no-op),
each domain's metadata is on its mount, and the pool connection is persisted by
the pool actor. A failure is logged and left out; it never keeps the host from
opening. The SPM role is not recovered: its lock died with the old process.
"""

from __future__ import annotations

import logging
import time

from hostvisor.actors.errors import AlreadyExists, HostvisorError
from hostvisor.actors.storage.connections import ConnectionStore, connect, connected_roots
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.pool_actor import PoolRecord
from hostvisor.supervision.config import Config
from hostvisor.supervision.supervisor import SupervisorHandle
from hostvisor.supervision.tree import STORAGE, STORAGE_DOMAINS, HostTree

log = logging.getLogger(__name__)


def connection_store(config: Config) -> ConnectionStore:
    """Where the host's storage connections are persisted."""
    return ConnectionStore(config.state_dir / "storage" / "connections.json")


def recover_storage(tree: HostTree) -> int:
    """Reconnect storage servers, start every domain's actor, reconnect the pool.

    Blocks; returns how many domains were found.
    """
    started = time.monotonic()
    mount_root = tree.config.mount_root
    for conn in connection_store(tree.config).all():
        status = connect(conn, mount_root)
        if status != 0:
            log.error(
                "storage connection %s (%s) failed: code %d", conn.id, conn.connection, status
            )
    domains = FileDomain.scan(connected_roots(mount_root))
    supervisor = SupervisorHandle(tree.registry.lookup(STORAGE_DOMAINS))
    for domain in domains:
        try:
            supervisor.start_child(tree.domain_child(domain))
        except AlreadyExists:
            continue
        except HostvisorError as error:
            log.error("storage domain %s not recovered: %s", domain.sd_uuid, error)  # noqa: TRY400
    record = PoolRecord.load(tree.pool_store)
    if record is not None:
        try:
            SupervisorHandle(tree.registry.lookup(STORAGE)).start_child(tree.pool_child(record))
        except HostvisorError as error:
            log.error("pool %s not reconnected: %s", record.sp_uuid, error)  # noqa: TRY400
    log.info(
        "recovered %d storage domains%s in %.2f s",
        len(domains),
        f" and pool {record.sp_uuid}" if record else "",
        time.monotonic() - started,
    )
    return len(domains)
