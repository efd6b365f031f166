"""VmActor: one guest, its status, its operations and its statistics.

libvirt is the source of truth. A new VmActor either launches its domain (VM.create)
or, after any restart, reads the running domain back (`recover=True`); everything
else it needs is in the domain XML's metadata. It never blocks on libvirt: every
call that reaches QEMU runs on the work facility (`GuestActor.operation`) and comes
back as a message, so a VM whose QEMU is frozen still answers status and stats, and
only its own operations time out.

Operations (`pause`, `cont`, `reset`, `shutdown`, `destroy`, `set_balloon_target`)
return at once with a future that settles when libvirt has done the work; the API
awaits that future. The memory policy tells `SetBalloonTarget` instead (it never
waits): the same operation, its failure logged. An
operation still running past its timeout makes the VM report monitorResponse -1,
as a sample that did not come back does.

Before a launch, the host paths the Engine's XML names (guest-agent channels, the
serial console) are made ready, on the launch's worker (`hostpaths.prepare`). While
the launch is in flight the VM stays WaitForLaunch, whatever libvirt's events say: its
first status event then carries the live XML's devices hash and graphics ports.
What a running VM reports besides its samples (hash, displayInfo, timeOffset,
clientIp, vmJobs) comes from its live XML (`reported`); the qemu guest agent's facts
come from polls that run on the work facility (`guestagent`, `PollGuestAgent`), and
the agent's first answer ends "Powering up", as in VDSM.

How it reports (statuses, events, the board, "Powering up", operations off its
thread) is the guest model's (`hostvisor.actors.guest`), shared with the container
VMs.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import libvirt

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.guest.actor import (
    ActorGone,
    GuestActor,
    PoweringUpOver,
    ShutdownTimedOut,
)
from hostvisor.actors.guest.entry import VmEntry
from hostvisor.actors.guest.model import Publish, TellBoard, no_board
from hostvisor.actors.guest.status import Exit, ExitReason, PauseCode, VmStatus
from hostvisor.actors.hooks import NO_HOOKS, HookError, Hooks, VmHooks
from hostvisor.actors.hypervisor.events import DomainLifecycle
from hostvisor.actors.vm import balloon, domxml, guestagent, hostpaths, reported
from hostvisor.actors.vm.blockjob_merge import Chains
from hostvisor.actors.vm.blockjobs import BlockJobs
from hostvisor.actors.vm.devices import DeviceEditor
from hostvisor.actors.vm.errors import BalloonError, NoSuchVm
from hostvisor.actors.vm.hotplug import Hotplugger
from hostvisor.actors.vm.lifecycle import pause_code, status_of_state, stopped_exit
from hostvisor.actors.vm.migrating import MigrationSlots, no_peers
from hostvisor.actors.vm.migrator import (
    MigrationSettings,
    Migrator,
)
from hostvisor.actors.vm.sampling import BulkSample
from hostvisor.actors.vm.snapshots import Snapshotter
from hostvisor.actors.vm.stats import BalloonConfig, VmSample, vm_stats

log = logging.getLogger(__name__)

__all__ = [
    "ActorGone",
    "AgentPolling",
    "PoweringUpOver",
    "SetBalloonTarget",
    "ShutdownTimedOut",
    "StatsSample",
    "VmActor",
]


@dataclass(frozen=True, slots=True)
class VmServices:
    """What every VmActor of a host reaches outside itself.

    Attributes:
        connection: returns the open libvirt connection.
        publish: sends an event up to the event bus (never blocks).
        board: tells the board a VM's entries (a `Post` or a `Forget`).
        migration: how VMs of this host migrate (peers, slots, transport).
        hooks: the host's VDSM hooks (`hostvisor.actors.hooks`).
        chains: the VMs' reach into storage for block jobs (a merge resumed after a
            restart needs it before any verb brings it); None: no storage here.
    """

    connection: Callable[[], Any]
    publish: Publish
    board: TellBoard = no_board
    migration: MigrationSettings = field(
        default_factory=lambda: MigrationSettings(peers=no_peers, slots=MigrationSlots())
    )
    hooks: Hooks = NO_HOOKS
    chains: Chains | None = None


@dataclass(frozen=True, slots=True)
class PollGuestAgent:
    """Tell (from a timer): ask the guest's qemu agent for its facts."""


@dataclass(frozen=True, slots=True)
class SetBalloonTarget:
    """Tell (from the memory policy): set the balloon target; a failure is only logged."""

    target_kib: int


@dataclass(frozen=True, slots=True)
class StatsSample:
    """Tell (from the sampler): this VM's record of a bulk sample; None if it had none."""

    sample: BulkSample
    record: dict[str, Any] | None


_RUNNING_EVENTS = frozenset(
    {
        libvirt.VIR_DOMAIN_EVENT_STARTED,
        libvirt.VIR_DOMAIN_EVENT_RESUMED,
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
    }
)
"""Lifecycle events that mean QEMU runs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentPolling:
    """How often a VM's qemu guest agent is asked for the guest's facts (VDSM [guest_agent]).

    Attributes:
        boot_interval: seconds between polls while the guest boots and the agent has
            not answered yet (VDSM `qga_polling_period`, 5 s).
        boot_window: seconds after start during which `boot_interval` applies (VDSM
            `qga_initial_info_interval`, 120 s).
        interval: seconds between polls afterwards (VDSM reads users every 10 s and
            the rest every 120 to 300 s; one poll reads all).
        timeout: seconds each agent command may take (VDSM `qga_command_timeout`: 1;
            2 here, since TCG guests answer slowly).
    """

    boot_interval: float = 5.0
    boot_window: float = 120.0
    interval: float = 60.0
    timeout: int = 2


class VmActor(GuestActor, Migrator, Snapshotter, BlockJobs, Hotplugger, DeviceEditor):
    """Owns one VM. Runs on the scheduler; its blocking calls run on the work facility.

    Args:
        spec: the VM's domain XML, parsed.
        services: the host's libvirt connection, event bus, board and migration settings.
        recover: adopt a running domain instead of launching one.
        incoming: wait for the domain to arrive by live migration (a destination).
        state: the domain's state as recovery read it with its XML; adopting then
            makes no libvirt call (None: read it in `on_start`).
        first_post: where `on_start` hands the VM's first entry instead of telling
            the board (recovery collects them and posts them all at once).
        powering_up: seconds a started VM reports "Powering up" (VDSM: 60).
        operation_timeout: seconds after which an operation still running makes the
            VM report monitorResponse -1.
        agent: how the guest's qemu agent is polled (`AgentPolling`).
    """

    UNSUPPORTED: ClassVar[frozenset[str]] = (
        Snapshotter.NOT_YET | BlockJobs.NOT_YET | Hotplugger.NOT_YET | DeviceEditor.NOT_YET
    )
    """What a libvirt VM does not do yet: each part (the mixins) says its own."""

    def __init__(  # noqa: PLR0913 - the collaborators and settings of one VM
        self,
        *,
        spec: domxml.DomainSpec,
        services: VmServices,
        recover: bool = False,
        incoming: bool = False,
        state: int | None = None,
        first_post: Callable[[VmEntry], None] | None = None,
        powering_up: float = 60.0,
        operation_timeout: float = 30.0,
        agent: AgentPolling | None = None,
    ) -> None:
        """Remember the VM; launch or recover in `on_start`."""
        super().__init__(
            vm_id=spec.vm_id,
            described=domxml.describe(spec),
            xml=spec.xml,
            publish=services.publish,
            board=services.board,
            powering_up=powering_up,
            operation_timeout=operation_timeout,
        )
        self.spec = spec
        self._connection = services.connection
        self._recover = recover
        self._incoming = incoming
        self._migration_settings = services.migration
        self._publish_event = services.publish
        self._known_state = state
        self._first_post = first_post
        self._pause_code = PauseCode.NOERR
        self._shutdown_requested = False
        self._shutdown_attempt = 0
        self._shutdown_force = False
        self._host_signalled = False  # libvirt: SHUTDOWN event, detail HOST (SIGTERM)
        self._last_sample: VmSample | None = None
        self._agent = agent or AgentPolling()
        self._agent_polling = False
        self._facts = guestagent.GuestFacts()
        self._reported = reported.Reported()  # read in on_start, off the spawner's thread
        self._launching = False  # createXML in flight: status events wait for it
        self._pending: VmStatus | None = None  # the status libvirt gave meanwhile
        # the last target set, kept in the domain's metadata (None: the current size)
        self._balloon_target: int | None = balloon.target_of(spec.xml)
        self._balloon_of: str | None = None  # the XML `_balloon_device` was read from
        self._balloon_device = False
        self._balloon_min = 0  # the guaranteed memory, KiB (balloonInfo.balloon_min)
        self.hooks: VmHooks = services.hooks.for_vm(spec.vm_id, spec.custom)
        self._blockjob_chains = services.chains

    # -- life ---------------------------------------------------------------------------

    def on_start(self) -> None:
        """Recover the running domain, or start launching it (returns at once)."""
        self._reported = reported.read(self.spec.xml)
        if self._incoming:
            self._await_incoming()
        elif self._recover:
            self._adopt()
            self._snapshot_recover()  # a snapshot the last agent died in: finish or report it
        else:
            self._launch()
        if self._first_post is not None:
            self._first_post(self.guest.entry())
        else:
            self.guest.post()
        if self._reported.agent_channel and not self.guest.down:
            self.tell_later(self._agent.boot_interval, PollGuestAgent())

    def _adopt(self) -> None:
        state, self._known_state = self._known_state, None
        domain = None
        if state is None:  # not read by recovery: a crash restart
            try:
                domain = self._connection().lookupByUUIDString(self.spec.vm_id)
                state, _reason = domain.state()
            except libvirt.libvirtError:
                self.guest.go_down(Exit.of(ExitReason.LIBVIRT_DOMAIN_MISSING), publish=False)
                return
        self.guest.set_status(status_of_state(state), publish=False)
        # A spec with a startTime was read from the running domain (recovery). One
        # without is the XML VM.create got (this actor crashed and was restarted):
        # read the live domain's XML, which has the start time and libvirt's details.
        started = self.spec.start_time
        if started is None:
            live = _live_spec(domain or self._lookup())
            if live is not None:
                self._set_xml(live.xml)
                started = live.start_time
                self._balloon_target = balloon.target_of(live.xml)
        clock = self.clock
        self.mark_started(clock.monotonic() - (clock.time() - started if started else 0.0))
        if self.guest.down:
            self.guest.go_down(Exit.of(ExitReason.LOST_QEMU_CONNECTION), publish=False)
        else:
            self._find_migration()

    def _lookup(self) -> Any:
        """The running domain, or None if libvirt no longer has it (blocks briefly)."""
        try:
            return self._connection().lookupByUUIDString(self.spec.vm_id)
        except libvirt.libvirtError:
            return None

    def _launch(self) -> None:
        self._launching = True
        xml = domxml.with_start_time(self.spec.xml, self.clock.time())
        flags = libvirt.VIR_DOMAIN_START_PAUSED if self.spec.launch_paused else 0
        hooks = self.hooks

        def launch() -> tuple[int, str]:
            conn = self._connection()
            ready = hostpaths.prepare(conn, hooks.run("before_vm_start", xml))  # may edit it
            domain = conn.createXML(ready, flags)
            try:
                state: int = domain.state()[0]
                live: str = domain.XMLDesc(0)
            except libvirt.libvirtError:
                # It started and is already gone (killed right away): the STOPPED
                # event that follows says how it went Down; the launch itself worked.
                return libvirt.VIR_DOMAIN_RUNNING, xml
            return state, live

        self.operation("launch", launch, then=self._launched, failed=self._launch_failed)

    def _launched(self, launched: tuple[int, str]) -> None:
        state, xml = launched
        self._set_xml(xml)
        self._notify_hook("after_vm_start", xml)
        if self.guest.started is None:
            self.mark_started(self.clock.monotonic())
        self._launching = False
        pending, self._pending = self._pending, None
        if self.guest.status is VmStatus.WAIT_FOR_LAUNCH:
            self.guest.set_status(pending or status_of_state(state))

    def _launch_failed(self, error: BaseException) -> None:
        self._launching = False
        pending, self._pending = self._pending, None
        if self.guest.status is not VmStatus.WAIT_FOR_LAUNCH:
            return
        if pending is not None:  # it runs: libvirt failed after starting it
            self.guest.set_status(pending)
        elif isinstance(error, HookError):  # before_vm_start vetoed it (VDSM: GENERIC_ERROR)
            self.guest.go_down(Exit.of(ExitReason.GENERIC_ERROR, str(error)))
        else:
            self.guest.go_down(Exit.of(ExitReason.LIBVIRT_START_FAILED, str(error)))

    def _set_status(self, status: VmStatus) -> None:
        """Hold `status` (announced), or keep it for `_launched` while launching.

        libvirt's STARTED and RESUMED often come before createXML has returned, so
        before the live XML (the devices, the hash, the graphics ports) is known: the
        VM stays WaitForLaunch until then, and its first status event carries them
        (as VDSM's, sent once the domain is set up).
        """
        if self._launching and self.guest.status is VmStatus.WAIT_FOR_LAUNCH:
            self._pending = status
            return
        self.guest.set_status(status)

    # -- messages -----------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle lifecycle events, finished operations, samples and timers."""
        match message:
            case DomainLifecycle(event=kind, detail=detail):
                if not self._migration_event(kind, detail):  # a migration's own events
                    self._on_lifecycle(message)
            case StatsSample(sample, record):
                self._on_sample(sample, record)
            case ShutdownTimedOut(attempt):
                self._on_shutdown_timeout(attempt)
            case PollGuestAgent():
                self._poll_guest_agent()
            case SetBalloonTarget(target):
                self._told_balloon_target(target)
            case _ if self._parts_receive(message):
                pass
            case _:
                return super().on_receive(message)
        return None

    def _parts_receive(self, message: Any) -> bool:
        """Let each part (migration, snapshots, block jobs, hotplug, devices) handle its own."""
        return (
            self._migration_receive(message)
            or self._snapshot_receive(message)
            or self._blockjob_receive(message)
            or self._hotplug_receive(message)
            or self._device_receive(message)
        )

    def on_stop(self) -> None:
        """Give back migration slots, then what every guest actor does."""
        self._release_migration_slots()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        """Give back migration slots, then what every guest actor does."""
        self._release_migration_slots()
        super().on_failure(*exc_info)

    def _on_lifecycle(self, event: DomainLifecycle) -> None:
        kind, detail = event.event, event.detail
        guest = self.guest
        self._pause_hooks(kind, detail)
        if guest.started is None and kind in _RUNNING_EVENTS:
            # At launch libvirt reports RESUMED before STARTED, and both may come before
            # createXML has returned: the first of them starts the clock.
            self.mark_started(self.clock.monotonic())
        if kind == libvirt.VIR_DOMAIN_EVENT_STARTED:
            # Only the launch itself: a late STARTED must not undo a pause seen before it.
            if guest.status is VmStatus.WAIT_FOR_LAUNCH:
                self._set_status(VmStatus.PAUSED if self.spec.launch_paused else VmStatus.UP)
        elif kind == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
            self._on_suspended(detail)
        elif kind == libvirt.VIR_DOMAIN_EVENT_RESUMED:
            self._pause_code = PauseCode.NOERR
            self._set_status(VmStatus.UP)
        elif kind == libvirt.VIR_DOMAIN_EVENT_SHUTDOWN:
            if detail == libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_HOST:
                self._host_signalled = True  # QEMU got a signal on the host (SIGTERM)
        elif kind == libvirt.VIR_DOMAIN_EVENT_STOPPED and not guest.down:
            guest.go_down(
                stopped_exit(
                    detail,
                    shutdown_requested=self._shutdown_requested,
                    host_signalled=self._host_signalled,
                )
            )
        elif kind == libvirt.VIR_DOMAIN_EVENT_CRASHED:
            guest.go_down(Exit.of(ExitReason.LOST_QEMU_CONNECTION))

    def _on_suspended(self, detail: int) -> None:
        self._pause_code = pause_code(detail)
        self.guest.changed()
        # libvirt pauses a guest it saves: VDSM keeps "Saving State", which the Engine
        # needs to see last to mark a hibernated VM Suspended when it goes Down
        # (VmAnalyzer.proceedDownVm); after "Paused" the hibernation would be lost.
        if not self._saving:
            self._set_status(VmStatus.PAUSED)

    def _pause_hooks(self, kind: int, detail: int) -> None:
        """VDSM's after_vm_pause (a pause or an I/O error) and after_vm_cont (a resume)."""
        if kind == libvirt.VIR_DOMAIN_EVENT_SUSPENDED and detail in _PAUSED_DETAILS:
            self._notify_hook("after_vm_pause", self.guest.xml)
        elif (
            kind == libvirt.VIR_DOMAIN_EVENT_RESUMED
            and detail == libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED
            and self.guest.status is VmStatus.PAUSED
        ):
            self._notify_hook("after_vm_cont", self.guest.xml)

    def _on_sample(self, sample: BulkSample, record: dict[str, Any] | None) -> None:
        if record is None:
            self.guest.unresponsive()
            return
        current = VmSample(taken_at=sample.taken_at, record=record)
        config = BalloonConfig(
            enabled=self._has_balloon(),
            minimum_kib=self._balloon_min,  # read with the device (VDSM: the guaranteed memory)
            target_kib=self._balloon_target,
        )
        figures = vm_stats(
            current,
            self._last_sample,
            balloon=config,
            nics=self._reported.nics,  # the Engine matches NIC figures by MAC
            drives=self._reported.drives,  # and disk figures by image id
        )
        # Whether the CPU figures come from two samples. VDSM's schema says a boolean;
        # VDSM's code sends it through convertToStr (vmstats.translate): "True"/"False".
        figures["cpuActual"] = str(_cpu_measured(self._last_sample, current))
        self.guest.sampled(figures)
        self._last_sample = current

    # -- operations (asked by the API; each returns a future) ----------------------------

    def pause(self) -> CallbackFuture:
        """Suspend the guest's vCPUs; the status is Paused once the future settles."""
        hooks = self.hooks  # before_vm_pause may refuse it (HookError, VDSM's 1500)
        return self._operate(
            "pause", lambda d: _vetted(hooks, "before_vm_pause", d).suspend(), then=VmStatus.PAUSED
        )

    def cont(self) -> CallbackFuture:
        """Resume a paused guest; the status is Up once the future settles."""
        hooks = self.hooks  # before_vm_cont may refuse it (HookError, VDSM's 1500)
        return self._operate(
            "cont", lambda d: _vetted(hooks, "before_vm_cont", d).resume(), then=VmStatus.UP
        )

    def reset(self) -> CallbackFuture:
        """Reset the guest, like pressing its reset button."""
        return self._operate("reset", lambda domain: domain.reset(0))

    def shutdown(
        self, *, timeout: float, reboot: bool = False, force: bool = False
    ) -> CallbackFuture:
        """Ask the guest to shut down (ACPI); after `timeout` seconds force it off, if `force`.

        As VDSM's powerdown: without `force` a guest that ignores the request keeps
        running, and is reported Up again once `timeout` has passed.
        """
        self.guest.require_running("shutdown")
        self._shutdown_requested = not reboot
        self._shutdown_force = force
        self._shutdown_attempt += 1
        attempt = self._shutdown_attempt
        self.guest.set_status(VmStatus.REBOOT_IN_PROGRESS if reboot else VmStatus.POWERING_DOWN)
        action = (lambda d: d.reboot(0)) if reboot else (lambda d: d.shutdown())
        future = self._operate("reboot" if reboot else "shutdown", action)
        if not reboot:
            self.tell_later(timeout, ShutdownTimedOut(attempt))
        return future

    def _on_shutdown_timeout(self, attempt: int) -> None:
        if attempt != self._shutdown_attempt or self.guest.status is not VmStatus.POWERING_DOWN:
            return
        if self._shutdown_force:
            log.info("VM %s did not shut down in time; forcing it off", self.spec.vm_id)
            self._operate("force off", lambda domain: domain.destroy())
            return
        log.warning("VM %s did not shut down in time; it keeps running", self.spec.vm_id)
        self._shutdown_requested = False
        self.guest.set_status(VmStatus.UP)

    def destroy(self) -> CallbackFuture:
        """Kill the guest if it runs. Its VmActor is removed by the caller afterwards.

        The before_vm_destroy and after_vm_destroy hooks run around it (never failing
        it, as VDSM's), also for a VM already Down: the future settles after them.
        """
        hooks, xml = self.hooks, self.guest.xml
        if self.guest.down:
            if not hooks.enabled:
                done = CallbackFuture()
                done.set(None)
                return done

            def released() -> None:
                hooks.notify("before_vm_destroy")
                hooks.notify("after_vm_destroy", xml)

            return self.operation("destroy", released, then=lambda _r: None)
        self._shutdown_requested = True

        def kill() -> None:
            hooks.notify("before_vm_destroy")
            try:
                self._connection().lookupByUUIDString(self.spec.vm_id).destroy()
            except libvirt.libvirtError as error:
                # Gone, or shut off and going (a guest that has just migrated away).
                if error.get_error_code() not in _ALREADY_GONE:
                    raise
            hooks.notify("after_vm_destroy", xml)

        return self.operation("destroy", kill, then=lambda _r: self._destroyed())

    def _destroyed(self) -> None:
        if not self.guest.down:
            self.guest.go_down(Exit.of(ExitReason.ADMIN_SHUTDOWN))

    # -- the balloon ----------------------------------------------------------------------

    def set_balloon_target(self, target_kib: int) -> CallbackFuture:
        """Set the guest's balloon target to `target_kib` KiB (VDSM's `setBalloonTarget`).

        As VDSM: a VM whose XML has no balloon (`<memballoon model='none'>`, or
        none at all) succeeds doing nothing; otherwise libvirt sets the live
        memory (`setMemoryFlags(..., AFFECT_LIVE)`, on a worker), the target is kept
        in the domain's `ovirt-vm` metadata (`balloonTarget`, as VDSM keeps it, so a
        restarted agent reports it too) and VM stats' `balloonInfo.balloon_target`
        reports it from the next sample on.

        Raises:
            InvalidArgument: `target_kib` is not a non-negative integer.
            BalloonError (through the future too): the VM is not running, or
                libvirt refused the target.
            NoSuchVm (through the future): libvirt has no such domain.
        """
        if not isinstance(target_kib, int) or isinstance(target_kib, bool) or target_kib < 0:
            raise InvalidArgument(
                vmId=self.spec.vm_id, target=target_kib, reason="not a whole number of KiB >= 0"
            )
        if not self._has_balloon():
            done = CallbackFuture()
            done.set(None)
            return done
        if self.guest.down or self.guest.status is VmStatus.WAIT_FOR_LAUNCH:
            raise BalloonError(vmId=self.spec.vm_id, status=self.guest.status.value)
        vm_id, connection = self.spec.vm_id, self._connection

        def set_memory() -> int:
            try:
                domain = connection().lookupByUUIDString(vm_id)
                domain.setMemoryFlags(target_kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise NoSuchVm(vmId=vm_id) from None
                raise BalloonError(vmId=vm_id, reason=str(error)) from None
            try:
                balloon.persist_target(domain, target_kib)
            except libvirt.libvirtError as error:  # set, but a restart will not know it
                log.warning("VM %s: balloon target not kept in metadata: %s", vm_id, error)
            return target_kib

        def set_target(target: int) -> None:
            self._balloon_target = target

        return self.operation("setBalloonTarget", set_memory, then=set_target)

    def _told_balloon_target(self, target_kib: int) -> None:
        vm_id = self.spec.vm_id
        try:
            future = self.set_balloon_target(target_kib)
        except HostvisorError as error:
            log.warning("VM %s: balloon target %s not set: %s", vm_id, target_kib, error)
            return

        def settled(done: CallbackFuture) -> None:
            try:
                done.get(timeout=0)
            except HostvisorError as error:
                log.warning("VM %s: balloon target %s not set: %s", vm_id, target_kib, error)

        future.add_done_callback(settled)

    def _has_balloon(self) -> bool:
        """Whether the domain XML has a balloon device (read once per XML)."""
        xml = self.guest.xml
        if self._balloon_of is not xml:
            self._balloon_of, self._balloon_device = xml, _balloon_device(xml)
            self._balloon_min = balloon.guaranteed_kib(xml)
        return self._balloon_device

    # -- the guest agent ------------------------------------------------------------------

    def _poll_guest_agent(self) -> None:
        """Read the live XML and the agent's facts off this thread; schedule the next poll."""
        if self.guest.down:
            return  # no more polls: a Down VM never runs again under this actor
        started = self.guest.started
        booting = started is None or self.clock.monotonic() - started < self._agent.boot_window
        heard = bool(self._facts.fields)
        interval = self._agent.boot_interval if booting and not heard else self._agent.interval
        self.tell_later(interval, PollGuestAgent())
        if self._agent_polling or not self.guest.running:
            return
        self._agent_polling = True
        vm_id, timeout = self.spec.vm_id, self._agent.timeout
        applied = self._facts.disk_mapping

        def poll() -> tuple[guestagent.GuestFacts | None, str]:
            domain = self._connection().lookupByUUIDString(vm_id)
            # The live XML too: reading it takes no domain job, and libvirt keeps the
            # guest's RTC offset in it (<clock adjustment>), which timeOffset reports.
            live: str = domain.XMLDesc(0)
            try:
                facts = guestagent.read_facts(domain, timeout=timeout)
            except libvirt.libvirtError as error:
                log.debug("VM %s: guest agent did not answer: %s", vm_id, error)
                return None, live
            if facts.disk_mapping and facts.disk_mapping != applied:
                live = guestagent.write_disk_mapping(domain, live, facts.disk_mapping) or live
            return facts, live

        self.run_off(poll, self._polled, name="guest-agent")

    def _polled(self, outcome: tuple[guestagent.GuestFacts | None, str] | BaseException) -> None:
        self._agent_polling = False
        if isinstance(outcome, BaseException):
            log.debug("VM %s: not polled: %s", self.spec.vm_id, outcome)
            return
        facts, live = outcome
        if live != self.guest.xml and not self.guest.down:
            self._set_xml(live)
        if facts is None:
            return
        if facts != self._facts:
            self._facts = facts
            self.guest.changed()
        self.guest.guest_is_up()  # an agent that answers ends "Powering up" (VDSM)

    # -- answers --------------------------------------------------------------------------

    def _notify_hook(self, name: str, data: Any = None) -> None:
        """Run hook point `name` for this VM on a worker, its failure only logged (at once)."""
        hooks = self.hooks
        if hooks.enabled:
            self.run_off(lambda: hooks.notify(name, data), lambda _o: None, name=f"hook:{name}")

    def _set_xml(self, xml: str) -> None:
        """The domain XML is now `xml`: report it, and what it says (hash, displayInfo)."""
        self.guest.xml = xml
        self._reported = reported.read(xml)

    def _extra(self) -> Mapping[str, Any]:
        return {
            "kvmEnable": "true" if self.spec.domain_type == "kvm" else "false",
            "acpiEnable": "true",
            "pauseCode": self._pause_code.value,
            "vmJobs": self._vm_jobs(),
            **self._reported.fields(),
            **guestagent.DEFAULTS,
            **self._facts.fields,
            **self._device_fields(),  # clientIp (the console's client), TPM/NVRAM hashes, vCPU QoS
            **self._migration_fields(),
        }

    # -- helpers --------------------------------------------------------------------------

    def _operate(
        self, op: str, action: Callable[[Any], Any], *, then: VmStatus | None = None
    ) -> CallbackFuture:
        """Run `action(domain)` off the actor's thread; on success the status is `then`.

        libvirt's lifecycle event says the same, but may come after the answer: setting
        it here means a caller that reads the status right after the verb sees it (as
        VDSM's pause and cont do).
        """
        self.guest.require_running(op)
        vm_id = self.spec.vm_id

        def run() -> None:
            action(self._connection().lookupByUUIDString(vm_id))

        def done(_result: Any) -> None:
            if then is not None and self.guest.running:
                if then is VmStatus.UP:
                    self._pause_code = PauseCode.NOERR
                self.guest.set_status(then)

        return self.operation(op, run, then=done)


_ALREADY_GONE = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
"""libvirt's errors for a destroy that finds nothing left to kill."""

_CPU_KEYS = ("cpu.time", "cpu.user", "cpu.system")
_PAUSED_DETAILS = (
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
)


def _vetted(hooks: VmHooks, name: str, domain: Any) -> Any:
    """Run vetoing hook point `name` on the domain's live XML; return the domain (blocks).

    Raises:
        HookError: a script refused.
    """
    if hooks.enabled and hooks.has(name):  # read the XML only for a script
        hooks.run(name, domain.XMLDesc(0))
    return domain


def _cpu_measured(previous: VmSample | None, current: VmSample) -> bool:
    """Whether two samples give the CPU figures (VDSM's `cpuActual`)."""
    return (
        previous is not None
        and current.taken_at > previous.taken_at
        and all(key in sample.record for sample in (previous, current) for key in _CPU_KEYS)
    )


def _balloon_device(xml: str) -> bool:
    """Whether a domain XML has a balloon device (a `<memballoon>` whose model is not none)."""
    try:
        device = ET.fromstring(xml).find("devices/memballoon")  # noqa: S314 - libvirt's own XML
    except ET.ParseError:
        return False
    return device is not None and device.get("model") != "none"


def _live_spec(domain: Any) -> domxml.DomainSpec | None:
    """The running domain's XML, parsed; None if unreadable (or no domain)."""
    if domain is None:
        return None
    try:
        return domxml.parse(domain.XMLDesc(0))
    except (libvirt.libvirtError, HostvisorError):
        return None
