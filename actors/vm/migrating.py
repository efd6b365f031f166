"""Live migration, the doing part: the blocking steps, and where one migration stands.

A VM actor drives its outgoing migration as a chain of blocking steps, each run on
the work facility (`Actor.run_off`) so the actor keeps answering stats and status:

1. `prepare_destination`: reach the destination agent (the `Peer` the API layer
   gives the tree: JSON-RPC with this host's TLS identity), `Host.ping`, then
   `VM.migrationCreate` with the VM's definition: the destination makes its VM
   actor, which waits for the domain to arrive.
2. `perform`: libvirt's peer-to-peer live migration (`virDomainMigrateToURI3`),
   blocking until it ends (the downtime comes from libvirt's job-completed event);
   meanwhile the actor's monitor tick reads `job_stats` and applies the schedule's
   actions (`apply`).
3. On failure: `abandon_destination` (best effort `VM.destroy` there); the VM is Up
   on the source again.

`OutgoingMigration` is the actor's record of one migration: VDSM's
`migrationStats` answer, the progress (never going back), the downtime once known.
`MigrationSlots` bounds migrations per host, in and out, as VDSM's semaphores do.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import libvirt

from hostvisor.actors.errors import CallerError, HostvisorError
from hostvisor.actors.vm.errors import VmCreateError
from hostvisor.actors.vm.migration import (
    ABORT,
    POSTCOPY,
    SET_DOWNTIME,
    Action,
    MigrationRequest,
    Progress,
    ScheduleRunner,
)

log = logging.getLogger(__name__)

PEER_TIMEOUT = 60.0
"""Seconds to wait for the destination agent's answer to one call."""


# -- errors, with VDSM's codes -----------------------------------------------------------


class NoConnectionToPeer(HostvisorError):
    """The destination agent could not be reached."""

    code = 10
    message = "Could not connect to peer VDS"


class MigrationError(HostvisorError):
    """The migration failed (VDSM's migrateErr)."""

    code = 12
    message = "Fatal error during migration"


class MigrationCancelFailed(CallerError):
    """Nothing to cancel: no migration is under way (VDSM's migCancelErr)."""

    code = 47
    message = "Migration not in progress"


class MigrationInProgress(CallerError):
    """The VM is migrating: this command must wait (VDSM's migInProgress)."""

    code = 51
    message = "Command not supported during migration"


class MigrationNotInProgress(CallerError):
    """No migration to change (VDSM's migNotInProgress)."""

    code = 81
    message = "Migration not in progress"


class MigrationLimitExceeded(CallerError):
    """This host already runs as many migrations as it allows (VDSM's migrateLimit)."""

    code = 82
    message = "Incoming migration limit exceeded"


class MigrationOperationFailed(HostvisorError):
    """libvirt could not start the migration (VDSM's migOperationErr)."""

    code = 102
    message = "Error occurred during migration"


# -- the other agent -------------------------------------------------------------------


class PeerRefused(Exception):
    """The peer agent answered a call with an error."""

    def __init__(self, code: int, message: str) -> None:
        """Keep the peer's code and message."""
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Peer(Protocol):
    """A connection to another host's agent (made by the API layer's client)."""

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """Call `method` and return its result (blocks). Raises PeerRefused or OSError."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


PeerConnect = Callable[[str, int], Peer]
"""Open a `Peer` to the agent at (host, port), with this host's TLS identity (blocks)."""


def no_peers(host: str, port: int) -> Peer:
    """The `PeerConnect` of a tree that has no API layer: every migration fails to connect."""
    raise OSError(f"this host cannot reach other agents ({host}:{port})")


# -- host-wide bounds ------------------------------------------------------------------


class MigrationSlots:
    """How many migrations this host runs, out and in (VDSM's semaphores). Thread-safe."""

    def __init__(self, *, outgoing: int = 2, incoming: int = 2) -> None:
        """Allow `outgoing` and `incoming` migrations at once (VDSM's defaults: 2 and 2)."""
        self._lock = threading.Lock()
        self._limits = {"outgoing": outgoing, "incoming": incoming}
        self._taken = {"outgoing": 0, "incoming": 0}

    def take(self, direction: str, limit: int | None = None) -> None:
        """Take a slot; `limit` (the Engine's) replaces the bound from now on.

        Raises:
            MigrationLimitExceeded: every slot is taken.
        """
        with self._lock:
            if limit is not None:
                self._limits[direction] = limit
            if self._taken[direction] >= self._limits[direction]:
                raise MigrationLimitExceeded(
                    direction=direction,
                    limit=self._limits[direction],
                    running=self._taken[direction],
                )
            self._taken[direction] += 1

    def hold(self, direction: str) -> None:
        """Count a migration found already running (after a restart), whatever the bound."""
        with self._lock:
            self._taken[direction] += 1

    def give_back(self, direction: str) -> None:
        """Return a slot taken with `take`."""
        with self._lock:
            self._taken[direction] = max(0, self._taken[direction] - 1)

    def running(self, direction: str) -> int:
        """How many slots are taken now."""
        with self._lock:
            return self._taken[direction]


# -- one outgoing migration ------------------------------------------------------------


class Phase(enum.Enum):
    """Where an outgoing migration is."""

    PREPARING = "preparing"
    """Asking the destination agent to make its VM."""
    MIGRATING = "migrating"
    """libvirt moves the guest."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class OutgoingMigration:
    """The VM actor's record of its outgoing migration (its thread only)."""

    request: MigrationRequest
    runner: ScheduleRunner = field(init=False)
    phase: Phase = Phase.PREPARING
    progress: int = 0
    downtime: int | None = None
    postcopy: bool = False
    cancel_requested: bool = False
    error: HostvisorError | None = None
    message: str = "Migration in progress"
    left: bool = False
    """libvirt said the guest left this host (STOPPED, MIGRATED) before its call returned."""

    def __post_init__(self) -> None:
        """Start the schedule at its beginning."""
        self.runner = ScheduleRunner(self.request.schedule)

    @property
    def active(self) -> bool:
        """Whether the migration is still being prepared or run."""
        return self.phase in (Phase.PREPARING, Phase.MIGRATING)

    def sampled(self, progress: Progress) -> list[Action]:
        """Take a progress sample; return the schedule's actions now due."""
        self.progress = max(self.progress, progress.percentage)
        return self.runner.on_progress(progress, postcopy=self.postcopy)

    def succeeded(self, downtime: int | None = None) -> None:
        """Record the guest has moved (with the downtime libvirt measured, ms)."""
        self.phase = Phase.SUCCEEDED
        self.progress = 100
        self.downtime = downtime
        self.message = "Migration done"

    def failed(self, error: HostvisorError) -> None:
        """Record the migration failed (or was cancelled, if a cancel was asked).

        A cancelled migration's status is VDSM's migCancelErr (47, "Migration
        canceled"), whatever error ended it, as VDSM's SourceThread sets it.
        """
        if self.cancel_requested:
            self.phase = Phase.CANCELLED
            self.error = MigrationCancelFailed(reason="cancelled")
            self.message = "Migration canceled"
            return
        self.phase = Phase.FAILED
        self.error = error
        self.message = error.render()

    def stats(self) -> dict[str, Any]:
        """VDSM's `migrationStats`: the status, the progress, the downtime when known."""
        code = 0 if self.error is None else self.error.code
        stats: dict[str, Any] = {
            "status": {"code": code, "message": self.message},
            "progress": self.progress,
        }
        if self.downtime is not None:
            stats["downtime"] = self.downtime
            stats["progress"] = 100
        return stats

    def event(self) -> dict[str, Any]:
        """The body of `|virt|VM_migration_status|<vmId>` for this VM."""
        body: dict[str, Any] = {"progress": self.progress, "postcopy": self.postcopy}
        if self.downtime is not None:
            body["downtime"] = self.downtime
        return body


# -- the blocking steps (each runs on the work facility) ---------------------------------


def prepare_destination(
    connect: PeerConnect, request: MigrationRequest, machine_params: dict[str, Any]
) -> dict[str, Any]:
    """Ask the destination agent to make the VM that will receive the guest (blocks).

    Raises:
        NoConnectionToPeer: the agent cannot be reached.
        MigrationLimitExceeded: it runs as many incoming migrations as it allows.
        VmCreateError: it cannot make the VM (VDSM's createErr, passed on as VDSM does).
        MigrationError: it refused for another reason (its message included).
    """
    try:
        peer = connect(request.dst_host, request.dst_port)
    except OSError as error:
        raise NoConnectionToPeer(
            dst=f"{request.dst_host}:{request.dst_port}", reason=str(error)
        ) from None
    try:
        peer.call("Host.ping", timeout=PEER_TIMEOUT)
        params: dict[str, Any] = {"vmID": request.vm_id, "params": machine_params}
        if request.incoming_limit is not None:
            params["incomingLimit"] = request.incoming_limit
        answer: dict[str, Any] = peer.call("VM.migrationCreate", params, timeout=PEER_TIMEOUT)
    except PeerRefused as refused:
        if refused.code == MigrationLimitExceeded.code:
            raise MigrationLimitExceeded(destination=request.dst_host) from None
        if refused.code == VmCreateError.code:  # it cannot make the VM (a disk, the XML)
            raise VmCreateError(destination=request.dst_host, reason=refused.message) from None
        raise MigrationError(destination=request.dst_host, reason=refused.message) from None
    except OSError as error:
        raise NoConnectionToPeer(dst=request.dst_host, reason=str(error)) from None
    else:
        return answer
    finally:
        peer.close()


def abandon_destination(connect: PeerConnect, request: MigrationRequest) -> None:
    """Best effort: destroy the VM the destination made for a migration that failed."""
    try:
        peer = connect(request.dst_host, request.dst_port)
    except OSError as error:
        log.warning(
            "VM %s: cannot reach %s to clean up: %s", request.vm_id, request.dst_host, error
        )
        return
    try:
        peer.call("VM.destroy", {"vmID": request.vm_id}, timeout=PEER_TIMEOUT)
    except (PeerRefused, OSError) as error:
        log.warning(
            "VM %s: destination %s did not clean up: %s", request.vm_id, request.dst_host, error
        )
    finally:
        peer.close()


COMPLETED_EVENT_WAIT = 2.0
"""Seconds `perform` waits, once the guest has moved, for libvirt's job-completed event."""


def perform(
    domain: Any, request: MigrationRequest, *, tls: bool, graphics: str | None, unsafe: bool = False
) -> int | None:
    """Move the guest with libvirt; block until it has moved or the migration failed.

    Returns the downtime libvirt measured (ms), or None if it did not tell. A transient
    domain is gone from the source once it has moved, and its completed job's stats
    with it, so they are taken from libvirt's job-completed event (as VDSM's
    `onJobCompleted` does), registered for this domain while the migration runs.

    Raises:
        MigrationOperationFailed: libvirt could not start it (a name taken there...).
        MigrationError: it failed or was cancelled (the context says "cancelled").
    """
    xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    params = request.libvirt_params(domain_xml=xml, graphics=graphics)
    completed = _CompletedJob(domain)
    try:
        flags = request.flags() | (libvirt.VIR_MIGRATE_UNSAFE if unsafe else 0)
        domain.migrateToURI3(request.destination_uri(tls=tls), params, flags)
    except libvirt.libvirtError as error:
        completed.close()
        code = error.get_error_code()
        if code == libvirt.VIR_ERR_OPERATION_ABORTED:
            raise MigrationError(reason="cancelled") from None
        if code == libvirt.VIR_ERR_OPERATION_FAILED:
            raise MigrationOperationFailed(reason=str(error)) from None
        raise MigrationError(reason=str(error)) from None
    stats = completed.wait(COMPLETED_EVENT_WAIT)
    registered = completed.registered
    completed.close()
    if stats is None and registered:
        log.warning(
            "VM %s: no job-completed event %s s after the migration",
            request.vm_id,
            COMPLETED_EVENT_WAIT,
        )
    if stats is None:  # no event: a persistent source domain still has its stats
        try:
            stats = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return None
    return downtime_of(stats)


def downtime_of(stats: Mapping[str, Any]) -> int | None:
    """The downtime (ms) in a completed job's stats: the network's share when known."""
    value = stats.get("downtime_net", stats.get(libvirt.VIR_DOMAIN_JOB_DOWNTIME))
    return None if value is None else int(value)


class _CompletedJob:
    """libvirt's job-completed event of one domain, awaited from a worker thread."""

    def __init__(self, domain: Any) -> None:
        """Register for `domain`'s job-completed event (none if events cannot be had)."""
        self._done = threading.Event()
        self._stats: Mapping[str, Any] | None = None
        self._conn = domain.connect()
        self._callback: int | None = None
        try:
            self._callback = self._conn.domainEventRegisterAny(
                domain, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_completed, None
            )
        except libvirt.libvirtError as error:  # no event loop on this connection
            log.debug("no job-completed events: %s", error)

    def _on_completed(self, _conn: Any, _domain: Any, stats: Any, _opaque: Any) -> None:
        # libvirt's event thread: keep the stats, wake the waiter, nothing more.
        self._stats = dict(stats)
        self._done.set()

    @property
    def registered(self) -> bool:
        """Whether the event was registered for (and not yet deregistered)."""
        return self._callback is not None

    def wait(self, timeout: float) -> Mapping[str, Any] | None:
        """The completed job's stats, once the event came (None after `timeout`)."""
        if self._callback is None:
            return None
        self._done.wait(timeout)
        return self._stats

    def close(self) -> None:
        """Deregister (idempotent; a closed connection is fine)."""
        if self._callback is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.domainEventDeregisterAny(self._callback)
            self._callback = None


def job_stats(domain: Any) -> Mapping[str, Any] | None:
    """The domain's current job statistics, or None if it has no job (blocks briefly)."""
    try:
        stats: Mapping[str, Any] = domain.jobStats()
    except libvirt.libvirtError as error:
        if error.get_error_code() in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_DOMAIN):
            return None
        raise
    return stats


def apply(domain: Any, action: Action) -> None:
    """Carry out one schedule action on the migrating domain (blocks briefly)."""
    if action.name == SET_DOWNTIME:
        domain.migrateSetMaxDowntime(action.downtime_ms, 0)
    elif action.name == POSTCOPY:
        domain.migrateStartPostCopy(0)
    elif action.name == ABORT:
        domain.abortJob()


def graphics_of(xml: str) -> str | None:
    """Return which console a migration hands over: "spice", "vnc" or None."""
    if "<graphics type='spice'" in xml or '<graphics type="spice"' in xml:
        return "spice"
    if "<graphics type='vnc'" in xml or '<graphics type="vnc"' in xml:
        return "vnc"
    return None


def make_transient(domain: Any) -> None:
    """Drop a running domain's persistent definition (its NVRAM and TPM state stay)."""
    if not domain.isPersistent():
        return
    keep_nvram = getattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_NVRAM", 0)
    try:
        domain.undefineFlags(keep_nvram | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_TPM", 0))
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        domain.undefineFlags(keep_nvram)  # a libvirt older than KEEP_TPM (8.9)
