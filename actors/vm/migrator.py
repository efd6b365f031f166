"""The VM actor's migration half: outgoing (source) and incoming (destination).

`Migrator` is mixed into `VmActor`; everything here runs on the VM actor's turn
and never blocks it: each libvirt or network step runs on the work facility
(`run_off`) and comes back as a message (see `actors/vm/migrating.py`).

Source: `migrate(params)` checks the Engine's params, takes an outgoing slot, says
"Migration Source", asks the destination agent to prepare, then has libvirt move
the guest while a monitor tick follows libvirt's job, runs the convergence
schedule and publishes `|virt|VM_migration_status|<id>`. Success: Down with
MIGRATION_SUCCEEDED (the Engine reaps it with destroy). Failure or cancel: Up again
on the source, the destination told to drop its VM.

Destination: a VM actor made by `VM.migrationCreate` starts "incoming": it says
"Migration Destination" and waits for libvirt to report the domain arriving
(STARTED/MIGRATED, then RESUMED/MIGRATED → Up), then drops the persistent
definition libvirt made there, so that the Engine's destroy leaves nothing. If
nothing arrives in time it goes Down with MIGRATION_FAILED.

libvirt's own suspend and resume around a migration (detail MIGRATED or
POSTCOPY) are not the guest being paused, and are not reported as such.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libvirt

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.events import Event
from hostvisor.actors.guest.status import Exit, ExitReason, VmStatus
from hostvisor.actors.timers import Timer
from hostvisor.actors.vm.migrating import (
    MigrationCancelFailed,
    MigrationError,
    MigrationInProgress,
    MigrationSlots,
    OutgoingMigration,
    PeerConnect,
    Phase,
    abandon_destination,
    apply,
    graphics_of,
    job_stats,
    perform,
    prepare_destination,
)
from hostvisor.actors.vm.migration import Action, MigrationRequest, Progress, outgoing

if TYPE_CHECKING:
    from hostvisor.actors.clock import Clock
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.vm.domxml import DomainSpec

log = logging.getLogger(__name__)

MONITOR_INTERVAL = 1.0
"""Seconds between two looks at libvirt's migration job (VDSM's default: 10)."""
INCOMING_TIMEOUT = 21600.0
"""Seconds a destination VM waits for its guest (VDSM's migration_destination_timeout)."""

_MIGRATION_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: {
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
        getattr(libvirt, "VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY", 7),
    },
    libvirt.VIR_DOMAIN_EVENT_RESUMED: {
        libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
        getattr(libvirt, "VIR_DOMAIN_EVENT_RESUMED_POSTCOPY", 3),
    },
}
"""Lifecycle details that belong to a migration, not to the guest's own life."""


@dataclass(frozen=True, slots=True)
class MigrationSettings:
    """What every VM actor of a host needs to migrate.

    Attributes:
        peers: opens a connection to another host's agent.
        slots: the host's bounds on concurrent migrations.
        libvirt_tls: reach the destination's libvirtd with TLS (`qemu+tls`), else TCP.
        allow_unsafe: migrate disks libvirt cannot tell are shared (test hosts).
        monitor_interval: seconds between two looks at the migration job.
        incoming_timeout: seconds a destination VM waits for its guest.
    """

    peers: PeerConnect
    slots: MigrationSlots
    libvirt_tls: bool = True
    allow_unsafe: bool = False
    monitor_interval: float = MONITOR_INTERVAL
    incoming_timeout: float = INCOMING_TIMEOUT


@dataclass(frozen=True, slots=True)
class MigrationTick:
    """Tell (the timer service): look at the migration job now."""

    serial: int


@dataclass(frozen=True, slots=True)
class IncomingTimedOut:
    """Tell (the timer service): the awaited guest has not arrived."""


class Migrator:
    """Migration for a VM actor (mixed into VmActor; its turn only)."""

    # Provided by VmActor / GuestActor / Actor:
    guest: GuestModel
    vm_id: str
    spec: DomainSpec

    @property
    def clock(self) -> Clock:
        """The actor's clock (Actor's)."""
        raise NotImplementedError

    _connection: Callable[[], Any]
    _publish_event: Callable[[Event], None]
    _migration_settings: MigrationSettings
    run_off: Callable[..., Any]
    tick_every: Callable[..., Timer]
    tell_later: Callable[..., Timer]
    mark_started: Callable[[float], None]

    _migration: OutgoingMigration | None = None
    _migration_serial: int = 0
    _monitor: Timer | None = None
    _incoming: bool = False

    # -- source: the verbs ----------------------------------------------------------------

    def migrate(self, params: Mapping[str, Any]) -> None:
        """Start migrating this VM as `params` say (VM.migrate). Returns at once.

        Raises:
            InvalidArgument: bad params. MigrationInProgress: already migrating.
            VmIsDown: the VM does not run. MigrationLimitExceeded: no outgoing slot.
        """
        if self._migration is not None and self._migration.active:
            raise MigrationInProgress(vmId=self.vm_id)
        self.guest.require_running("migrate")
        request = MigrationRequest.from_params(self.vm_id, params)
        settings = self._migration_settings
        settings.slots.take("outgoing", request.outgoing_limit)
        self._migration = migration = OutgoingMigration(request)
        self._migration_serial += 1
        self.guest.set_status(VmStatus.MIGRATION_SOURCE)
        machine = self._machine_params(request)
        log.info("VM %s: migrating to %s", self.vm_id, request.dst_host)

        def prepare() -> Any:
            return prepare_destination(settings.peers, request, machine)

        self.run_off(
            prepare, lambda o: self._destination_ready(migration, o), name="migration:prepare"
        )

    def migrate_cancel(self) -> None:
        """Cancel the outgoing migration (VM.migrateCancel). Returns at once.

        Raises:
            MigrationCancelFailed: no migration is under way.
        """
        migration = self._migration
        if migration is None or not migration.active:
            raise MigrationCancelFailed(vmId=self.vm_id)
        migration.cancel_requested = True
        migration.message = "Migration process cancelled"
        if migration.phase is Phase.MIGRATING:
            self._on_domain(lambda domain: domain.abortJob(), "migration:cancel")

    def migration_status(self) -> dict[str, Any]:
        """VM.getMigrationStatus' `migrationStats` (VDSM's answer when none ran: code 0, 0 %)."""
        if self._migration is None:
            return {"status": {"code": 0, "message": "Migration in progress"}, "progress": 0}
        return self._migration.stats()

    # -- source: the steps ------------------------------------------------------------------

    def _machine_params(self, request: MigrationRequest) -> dict[str, Any]:
        """What the destination agent needs to make the VM (VDSM's migration_parameters)."""
        started = self.guest.started
        now = self.guest.now()
        return {
            "vmId": self.vm_id,
            "_srcDomXML": self.guest.xml,
            "xml": self.guest.xml,
            "elapsedTimeOffset": 0.0 if started is None else max(0.0, now - started),
            "enableGuestEvents": request.enable_guest_events,
            "migrationDest": "libvirt",
        }

    def _destination_ready(self, migration: OutgoingMigration, outcome: Any) -> None:
        if migration is not self._migration:
            return
        if isinstance(outcome, BaseException):
            self._migration_failed(migration, outcome, destination_made=False)
            return
        if migration.cancel_requested:
            self._migration_failed(
                migration, MigrationError(reason="cancelled"), destination_made=True
            )
            return
        migration.phase = Phase.MIGRATING
        request = migration.request
        settings = self._migration_settings
        vm_id = self.vm_id
        init = migration.runner.start()
        graphics = graphics_of(self.guest.xml)

        def move() -> int | None:
            domain = self._connection().lookupByUUIDString(vm_id)
            for action in init:
                _try_apply(domain, action, vm_id)
            if migration.cancel_requested:  # cancelled before libvirt's job could be aborted
                raise MigrationError(reason="cancelled")
            return perform(
                domain,
                request,
                tls=settings.libvirt_tls,
                graphics=graphics,
                unsafe=settings.allow_unsafe,
            )

        self._monitor = self.tick_every(
            settings.monitor_interval, MigrationTick(self._migration_serial)
        )
        self.run_off(move, lambda o: self._moved(migration, o), name="migration:perform")

    def _on_migration_tick(self, tick: MigrationTick) -> None:
        migration = self._migration
        if migration is None or tick.serial != self._migration_serial or not migration.active:
            return
        vm_id = self.vm_id

        def sample() -> Mapping[str, Any] | None:
            return job_stats(self._connection().lookupByUUIDString(vm_id))

        self.run_off(sample, lambda o: self._job_sampled(migration, o), name="migration:monitor")

    def _job_sampled(self, migration: OutgoingMigration, outcome: Any) -> None:
        if migration is not self._migration or migration.phase is not Phase.MIGRATING:
            return
        if isinstance(outcome, BaseException) or outcome is None or not outgoing(outcome):
            return
        if migration.cancel_requested:
            # The cancel's abortJob may have come before libvirt's job started (it then
            # fails): abort the job now that it runs.
            self._on_domain(lambda domain: domain.abortJob(), "migration:cancel")
            return
        due = migration.sampled(Progress.from_job_stats(outcome))
        self._publish_migration(migration)
        for action in due:
            log.info("VM %s: migration stalls; %s %s", self.vm_id, action.name, list(action.params))
            if action.name == "postcopy":
                migration.postcopy = True
            self._on_domain(functools.partial(_apply_to, action), f"migration:{action.name}")

    def _moved(self, migration: OutgoingMigration, outcome: Any) -> None:
        self._stop_monitor()
        self._migration_settings.slots.give_back("outgoing")
        if isinstance(outcome, BaseException):
            self._migration_failed(migration, outcome, destination_made=True, slot=False)
            return
        migration.succeeded(outcome)
        self._publish_migration(migration)
        log.info("VM %s: migrated to %s", self.vm_id, migration.request.dst_host)
        if not self.guest.down:
            self.guest.go_down(Exit.of(ExitReason.MIGRATION_SUCCEEDED, "Migration succeeded"))

    def _migration_failed(
        self,
        migration: OutgoingMigration,
        error: BaseException,
        *,
        destination_made: bool,
        slot: bool = True,
    ) -> None:
        self._stop_monitor()
        if slot:
            self._migration_settings.slots.give_back("outgoing")
        failure = error if isinstance(error, HostvisorError) else MigrationError(reason=str(error))
        migration.failed(failure)
        log.warning("VM %s: migration failed: %s", self.vm_id, failure)
        if not self.guest.down and self.guest.status is VmStatus.MIGRATION_SOURCE:
            self.guest.set_status(VmStatus.UP)
        if destination_made:
            settings, request = self._migration_settings, migration.request
            self.run_off(
                lambda: abandon_destination(settings.peers, request),
                lambda _o: None,
                name="migration:cleanup",
            )

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None

    def _publish_migration(self, migration: OutgoingMigration) -> None:
        self._publish_event(
            Event(
                method=f"|virt|VM_migration_status|{self.vm_id}",
                params={self.vm_id: migration.event()},
            )
        )

    def _on_domain(self, action: Callable[[Any], Any], name: str) -> None:
        """Run `action(domain)` off the turn; log a failure (a best-effort step)."""
        vm_id = self.vm_id

        def run() -> None:
            action(self._connection().lookupByUUIDString(vm_id))

        def done(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                log.warning("VM %s: %s failed: %s", vm_id, name, outcome)

        self.run_off(run, done, name=name)

    # -- destination -------------------------------------------------------------------------

    def _await_incoming(self) -> None:
        """Start as a migration's destination: wait for libvirt to bring the guest in."""
        self._incoming = True
        self.guest.set_status(VmStatus.MIGRATION_DESTINATION, publish=False)
        self.tell_later(self._migration_settings.incoming_timeout, IncomingTimedOut())

    def _incoming_timed_out(self) -> None:
        if not self._incoming or self.guest.down:
            return
        self._incoming = False
        self._migration_settings.slots.give_back("incoming")
        log.warning("VM %s: the incoming migration never arrived", self.vm_id)
        self.guest.go_down(Exit.of(ExitReason.MIGRATION_FAILED, "Migration failed"))

    def _release_migration_slots(self) -> None:
        """Give back the slots an ending actor holds (VmActor's on_stop and on_failure)."""
        slots = self._migration_settings.slots
        if self._incoming:
            self._incoming = False
            slots.give_back("incoming")
        migration = self._migration
        if migration is not None and migration.active:
            self._stop_monitor()
            migration.phase = Phase.FAILED
            slots.give_back("outgoing")

    # -- lifecycle events (from VmActor._on_lifecycle) -------------------------------------

    def _migration_event(self, kind: int, detail: int) -> bool:
        """Handle a lifecycle event that belongs to a migration; False if it does not."""
        if self._incoming:
            if kind == libvirt.VIR_DOMAIN_EVENT_RESUMED:
                self._incoming = False
                self._migration_settings.slots.give_back("incoming")
                if self.guest.started is None:
                    # The source's start time travels in the XML's metadata: the guest
                    # keeps its age, and is not "Powering up" again on this host.
                    clock, started = self.clock, self.spec.start_time
                    age = clock.time() - started if started else 0.0
                    self.mark_started(clock.monotonic() - max(0.0, age))
                self.guest.set_status(VmStatus.UP)
                # libvirt defined it here (VIR_MIGRATE_PERSIST_DEST): keep it running
                # but transient, as every VM this agent starts, so that the Engine's
                # destroy leaves no shut-off definition behind.
                self._on_domain(_make_transient, "migration:transient")
                return True
            if kind in (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED):
                return True  # the guest is arriving: still Migration Destination
            if kind == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self._incoming = False
                self._migration_settings.slots.give_back("incoming")
                return False  # the migration failed there: Down as any stop says
        return detail in _MIGRATION_DETAILS.get(kind, ())


def _apply_to(action: Action, domain: Any) -> None:
    apply(domain, action)


def _make_transient(domain: Any) -> None:
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


def _try_apply(domain: Any, action: Action, vm_id: str) -> None:
    try:
        apply(domain, action)
    except libvirt.libvirtError as error:
        log.warning("VM %s: migration step %s failed: %s", vm_id, action.name, error)
