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

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.events import Event
from hostvisor.actors.guest.status import Exit, ExitReason, VmStatus
from hostvisor.actors.hooks import HookError, HookFailed
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
    make_transient,
    perform,
    prepare_destination,
)
from hostvisor.actors.vm.migration import Action, MigrationRequest, Progress, outgoing

if TYPE_CHECKING:
    from hostvisor.actors.clock import Clock
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.hooks import VmHooks
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


@dataclass(frozen=True, slots=True)
class FoundJobTick:
    """Tell (the timer service): look again at a migration found running after a restart."""


@dataclass(frozen=True, slots=True)
class FoundJob:
    """What libvirt says of an adopted domain's job (read off the turn).

    Attributes:
        direction: "outgoing" or "incoming" while a migration runs, else None.
        state: the domain's state, read when asked for (else None).
    """

    direction: str | None
    state: int | None = None


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
    hooks: VmHooks
    _notify_hook: Callable[..., None]

    _migration: OutgoingMigration | None = None
    _incoming_ready: CallbackFuture | None = None  # before_vm_migrate_destination's outcome
    _migration_serial: int = 0
    _monitor: Timer | None = None
    _incoming: bool = False
    _found_outgoing: bool = False  # a migration libvirt ran on while the agent was down

    def _migration_receive(self, message: Any) -> bool:
        """Handle the migration's own timer messages; say whether `message` was one."""
        match message:
            case MigrationTick():
                self._on_migration_tick(message)
            case IncomingTimedOut():
                self._incoming_timed_out()
            case FoundJobTick():
                self._on_found_job_tick()
            case _:
                return False
        return True

    # -- source: the verbs ----------------------------------------------------------------

    def migrate(self, params: Mapping[str, Any]) -> None:
        """Start migrating this VM as `params` say (VM.migrate). Returns at once.

        Raises:
            InvalidArgument: bad params. MigrationInProgress: already migrating.
            VmIsDown: the VM does not run. MigrationLimitExceeded: no outgoing slot.
        """
        if (self._migration is not None and self._migration.active) or self._found_outgoing:
            raise MigrationInProgress(vmId=self.vm_id)
        self.guest.require_running("migrate")
        request = MigrationRequest.from_params(self.vm_id, params)
        request.check_pinning(self.guest.xml)
        settings = self._migration_settings
        settings.slots.take("outgoing", request.outgoing_limit)
        self._migration = migration = OutgoingMigration(request)
        self._migration_serial += 1
        self.guest.set_status(VmStatus.MIGRATION_SOURCE)
        machine = self._machine_params(request)
        log.info("VM %s: migrating to %s", self.vm_id, request.dst_host)

        hooks, xml = self.hooks, self.guest.xml

        def prepare() -> Any:
            try:
                hooks.run("before_vm_migrate_source", xml)
            except HookError as error:  # the migration fails, as VDSM's: migrateErr
                raise MigrationError(reason=str(error)) from None
            return prepare_destination(settings.peers, request, machine)

        self.run_off(
            prepare, lambda o: self._destination_ready(migration, o), name="migration:prepare"
        )

    def migrate_cancel(self) -> None:
        """Cancel the outgoing migration (VM.migrateCancel). Returns at once.

        Raises:
            MigrationCancelFailed: no migration is under way.
        """
        if self._found_outgoing:  # started before a restart: libvirt's job is all there is
            self._on_domain(lambda domain: domain.abortJob(), "migration:cancel")
            return
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

    def _migration_fields(self) -> dict[str, Any]:
        """What VM stats add while this VM migrates out: VDSM's `migrationProgress`.

        The Engine's VdsBrokerObjectsBuilder reads it into the VM's dynamic data (the
        progress bar beside "Migrating From"); absent, it shows 0. Refreshed with each
        stats sample, as VDSM's is.
        """
        migration = self._migration
        if migration is None or not migration.active:
            return {}
        return {"migrationProgress": migration.progress}

    # -- source: the steps ------------------------------------------------------------------

    def _machine_params(self, request: MigrationRequest) -> dict[str, Any]:
        """What the destination agent needs to make the VM (VDSM's migration_parameters).

        Its XML is pinned as it will run there (VDSM's `_setupRemoteMachineParams`).
        """
        started = self.guest.started
        now = self.guest.now()
        xml = request.destination_xml(self.guest.xml)
        return {
            "vmId": self.vm_id,
            "_srcDomXML": xml,
            "xml": xml,
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
        self._notify_hook("after_vm_migrate_source", self.guest.xml)
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
        if migration.left:  # the guest is gone from here all the same: it moved
            log.warning("VM %s: migrated, though libvirt's call said: %s", self.vm_id, error)
            migration.succeeded()
            self._publish_migration(migration)
            if not self.guest.down:
                self.guest.go_down(Exit.of(ExitReason.MIGRATION_SUCCEEDED, "Migration succeeded"))
            return
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
        self._incoming_ready = ready = CallbackFuture()
        hooks, xml = self.hooks, self.spec.xml
        if not hooks.enabled:
            ready.set(None)
            return
        self.run_off(
            lambda: hooks.run("before_vm_migrate_destination", xml),
            self._incoming_hooked,
            name="hook:before_vm_migrate_destination",
        )

    def incoming_ready(self) -> CallbackFuture:
        """A future that settles once this destination may receive its guest.

        It fails with `HookFailed` (VDSM's code 78: "Destination hook failed") when a
        before_vm_migrate_destination hook failed; the VM is then Down
        (MIGRATION_FAILED). VM.migrationCreate awaits it before answering the source,
        as VDSM's `waitForMigrationDestinationPrepare`. Actor thread; returns at once.
        """
        if self._incoming_ready is None:
            done = CallbackFuture()
            done.set(None)
            return done
        return self._incoming_ready

    def _incoming_hooked(self, outcome: Any) -> None:
        ready = self._incoming_ready
        if ready is None:
            return
        if not isinstance(outcome, BaseException):
            ready.set(None)
            return
        if isinstance(outcome, HookError):
            error = HookFailed.of(outcome)
        else:
            error = HookFailed(hook="before_vm_migrate_destination", err=str(outcome))
        log.warning("VM %s: destination hook failed: %s", self.vm_id, error)
        if self._incoming and not self.guest.down:
            self._incoming = False
            self._migration_settings.slots.give_back("incoming")
            message = f"Destination hook failed: {error}"
            self.guest.go_down(Exit.of(ExitReason.MIGRATION_FAILED, message))
        ready.set_exception(exc_info=(type(error), error, None))

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
        if self._found_outgoing:
            self._found_outgoing = False
            self._stop_monitor()
            slots.give_back("outgoing")
        migration = self._migration
        if migration is not None and migration.active:
            self._stop_monitor()
            migration.phase = Phase.FAILED
            slots.give_back("outgoing")

    # -- after a restart: a migration libvirt ran on ---------------------------------------

    def _find_migration(self) -> None:
        """Ask libvirt, off the turn, whether the adopted domain is migrating (VmActor._adopt).

        libvirt migrates peer to peer: a migration goes on while the agent that asked
        for it is dead. Found outgoing, the VM is "Migration Source" until libvirt's
        job ends (Down when the guest has left, Up again when it failed); found
        incoming, "Migration Destination" until the guest arrives. A domain that was
        Paused when recovery read it is read again: its guest may have arrived since.
        """
        vm_id, paused = self.vm_id, self.guest.status is VmStatus.PAUSED

        def read() -> FoundJob:
            domain = self._connection().lookupByUUIDString(vm_id)
            return _found_job(domain, state=paused)

        self.run_off(read, self._found_migration, name="migration:recover")

    def _found_migration(self, outcome: FoundJob | BaseException) -> None:
        if isinstance(outcome, BaseException) or self.guest.down:
            return  # the domain is gone: its STOPPED event says how
        slots = self._migration_settings.slots
        if outcome.direction == "outgoing" and not self._found_outgoing:
            log.info("VM %s: found migrating away; following libvirt's job", self.vm_id)
            slots.hold("outgoing")
            self._found_outgoing = True
            self.guest.set_status(VmStatus.MIGRATION_SOURCE)
            interval = self._migration_settings.monitor_interval
            self._monitor = self.tick_every(interval, FoundJobTick())
        elif outcome.direction == "incoming" and not self._incoming:
            log.info("VM %s: found arriving by migration", self.vm_id)
            slots.hold("incoming")
            self._incoming = True
            self.guest.set_status(VmStatus.MIGRATION_DESTINATION)
        elif outcome.state == libvirt.VIR_DOMAIN_RUNNING and self.guest.status is VmStatus.PAUSED:
            # It arrived between recovery's read and now (its RESUMED looked like a
            # migration's own): Up, and transient as every VM here.
            self.guest.set_status(VmStatus.UP)
            self._on_domain(make_transient, "migration:transient")

    def _on_found_job_tick(self) -> None:
        if not self._found_outgoing:
            return
        vm_id = self.vm_id

        def read() -> FoundJob:
            return _found_job(self._connection().lookupByUUIDString(vm_id), state=True)

        self.run_off(read, self._found_job_read, name="migration:monitor")

    def _found_job_read(self, outcome: FoundJob | BaseException) -> None:
        if not self._found_outgoing or (
            not isinstance(outcome, BaseException) and outcome.direction == "outgoing"
        ):
            return  # still migrating (or a failed read: look again at the next tick)
        if isinstance(outcome, BaseException):
            return
        self._found_outgoing = False
        self._stop_monitor()
        self._migration_settings.slots.give_back("outgoing")
        if self.guest.down:
            return
        if outcome.state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
            log.warning("VM %s: the migration found after a restart did not finish", self.vm_id)
            self.guest.set_status(
                VmStatus.UP if outcome.state == libvirt.VIR_DOMAIN_RUNNING else VmStatus.PAUSED
            )

    # -- lifecycle events (from VmActor._on_lifecycle) -------------------------------------

    def _migration_event(self, kind: int, detail: int) -> bool:
        """Handle a lifecycle event that belongs to a migration; False if it does not."""
        if self._incoming:
            if kind == libvirt.VIR_DOMAIN_EVENT_RESUMED:
                self._incoming = False
                self._migration_settings.slots.give_back("incoming")
                self._notify_hook("after_vm_migrate_destination", self.guest.xml)
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
                self._on_domain(make_transient, "migration:transient")
                return True
            if kind in (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED):
                return True  # the guest is arriving: still Migration Destination
            if kind == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self._incoming = False
                self._migration_settings.slots.give_back("incoming")
                return False  # the migration failed there: Down as any stop says
        migration = self._migration
        if (
            kind == libvirt.VIR_DOMAIN_EVENT_STOPPED
            and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED
            and migration is not None
            and migration.active
        ):
            # The guest left; libvirt's call returns a moment later with the downtime.
            # `_moved` reports Down then, so that whoever sees Down also sees the
            # migration done (progress 100, the downtime), as the Engine reads it.
            migration.left = True
            return True
        return detail in _MIGRATION_DETAILS.get(kind, ())


def _found_job(domain: Any, *, state: bool) -> FoundJob:
    """Read the domain's migration job, and its state if asked (blocks briefly).

    libvirt refuses job statistics for an incoming migration ("available only on the
    source host", VIR_ERR_OPERATION_UNSUPPORTED): that refusal for a paused domain is
    how a destination's arriving guest is told from one paused by its user.
    """
    direction = None
    try:
        stats = job_stats(domain) or {}
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
            raise
        if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            return FoundJob("incoming", libvirt.VIR_DOMAIN_PAUSED)
        stats = {}
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
        direction = _DIRECTIONS.get(stats.get("operation"))
    return FoundJob(direction, domain.state()[0] if state or direction is None else None)


_DIRECTIONS = {
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: "outgoing",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: "incoming",
}


def _apply_to(action: Action, domain: Any) -> None:
    apply(domain, action)


def _try_apply(domain: Any, action: Action, vm_id: str) -> None:
    try:
        apply(domain, action)
    except libvirt.libvirtError as error:
        log.warning("VM %s: migration step %s failed: %s", vm_id, action.name, error)
