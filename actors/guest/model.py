"""GuestModel: what one guest reports, and the rules of how that changes.

A VM is reported the same way however it runs (a libvirt domain or a docker
container): a status with its time, an exit when Down, the last sampled figures,
monitorResponse, "Powering up" for its first seconds; a `|virt|VM_status|<id>`
event on every status change; a frozen `VmEntry` posted to the VM board after any
change (before an event is published, so a client that lists VMs then sees it).

The model is a plain object owned by one actor and used only on that actor's
thread (`guest.actor.GuestActor` composes one; so do its subclasses through it).
It reads time from the `Clock` it is given and never blocks: publishing and
posting are tells.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from hostvisor.actors.clock import Clock
from hostvisor.actors.errors import Conflict
from hostvisor.actors.events import Event, notify_time
from hostvisor.actors.guest.board import Forget, Post
from hostvisor.actors.guest.entry import VmEntry
from hostvisor.actors.guest.errors import VmIsDown
from hostvisor.actors.guest.status import Exit, VmStatus

Publish = Callable[[Event], None]
TellBoard = Callable[[Post | Forget], None]


def no_board(_message: Post | Forget) -> None:
    """Where a guest made without a board posts its entries: nowhere."""


def no_extra() -> Mapping[str, Any]:
    """A guest whose stats have no fields besides the sampled figures."""
    return {}


class GuestModel:
    """One guest's reportable state. Not thread-safe: its actor's thread only.

    Args:
        vm_id: the VM's id.
        described: the VM's static getInfo fields (vmName, vmType, vcpuCount).
        xml: the domain XML to report until a live one is known.
        clock: where time is read (the owning actor's).
        publish: sends an event up to the event bus (never blocks).
        board: tells the VM board this VM's entries.
        powering_up: seconds a started VM reports "Powering up" (VDSM: 60).
        operation_timeout: seconds after which an operation still running makes the
            VM report monitorResponse -1.
        extra: returns the stats fields of a running VM besides the sampled figures
            (kvmEnable, pauseCode, …); read whenever the entry is made again.
    """

    def __init__(  # noqa: PLR0913 - the collaborators and settings of every guest
        self,
        *,
        vm_id: str,
        described: Mapping[str, Any],
        xml: str,
        clock: Clock,
        publish: Publish,
        board: TellBoard = no_board,
        powering_up: float = 60.0,
        operation_timeout: float = 30.0,
        extra: Callable[[], Mapping[str, Any]] = no_extra,
    ) -> None:
        """Start as WaitForLaunch, with nothing sampled and no operation in flight."""
        self.vm_id = vm_id
        self._described = described
        self._xml = xml
        self._clock = clock
        self._publish = publish
        self._board = board
        self.powering_up = powering_up
        self._operation_timeout = operation_timeout
        self._extra = extra
        self._status = VmStatus.WAIT_FOR_LAUNCH
        self._status_time: int | None = None  # None: since the first read (the actor's start)
        self._exit: Exit | None = None
        self._started: float | None = None  # monotonic
        self._figures: Mapping[str, Any] = {}
        self._monitor_response = 0
        self._op_ids = itertools.count(1)
        self._in_flight: dict[int, float] = {}  # operation id -> started (monotonic)
        self._entry: VmEntry | None = None  # None: changed since last posted
        self._up_early = False  # "Powering up" ended by the guest (guest_is_up)

    # -- reading ------------------------------------------------------------------------------

    @property
    def status(self) -> VmStatus:
        """The status held (Up, never "Powering up": see `reported_status`)."""
        return self._status

    @property
    def started(self) -> float | None:
        """When the guest started (monotonic), or None before it has."""
        return self._started

    @property
    def xml(self) -> str:
        """The domain XML reported (the live one once known)."""
        return self._xml

    @xml.setter
    def xml(self, xml: str) -> None:
        self._xml = xml
        self.changed()

    @property
    def down(self) -> bool:
        """Whether the guest is Down."""
        return self._status is VmStatus.DOWN

    @property
    def running(self) -> bool:
        """Whether it was launched and is not Down (operations may be asked)."""
        return self._status not in (VmStatus.DOWN, VmStatus.WAIT_FOR_LAUNCH)

    def now(self) -> float:
        """The clock's monotonic seconds."""
        return self._clock.monotonic()

    def reported_status(self) -> VmStatus:
        """The status as clients see it now ("Powering up" for the first seconds of Up)."""
        return self.entry().reported_status(self.now())

    def entry(self) -> VmEntry:
        """What this VM reports now, frozen (made again only after a change)."""
        if self._entry is None:
            self._entry = self._make_entry()
        return self._entry

    def require_running(self, op: str) -> None:
        """Raise unless operation `op` may run now.

        Raises:
            VmIsDown: the VM is Down.
            Conflict: the VM has not been launched yet.
        """
        if self._status is VmStatus.DOWN:
            raise VmIsDown(vmId=self.vm_id, operation=op)
        if self._status is VmStatus.WAIT_FOR_LAUNCH:
            raise Conflict(vmId=self.vm_id, operation=op, status=self._status.value)

    # -- changing -------------------------------------------------------------------------

    def changed(self) -> None:
        """What this VM reports has changed: post a new entry after this message."""
        self._entry = None

    def set_status(self, status: VmStatus, *, publish: bool = True) -> None:
        """Hold `status` from now; announce it unless `publish` is False."""
        if status is self._status:
            return
        self.changed()
        self._status = status
        self._status_time = notify_time(self._clock)
        if publish:
            self.announce()

    def go_down(self, exit_: Exit, *, publish: bool = True) -> None:
        """The guest went Down as `exit_` says."""
        self.changed()
        self._exit = exit_
        self.set_status(VmStatus.DOWN, publish=publish)

    def mark_started(self, started: float) -> float:
        """Remember when the guest started (monotonic).

        Returns:
            Seconds until "Powering up" ends (<= 0: it is over already); the owner
            calls `powering_up_over` then.
        """
        self.changed()
        self._started = started
        return started + self.powering_up - self.now()

    def powering_up_over(self) -> float:
        """Announce "Up" if "Powering up" has just ended.

        Returns:
            Seconds still to wait when it has not ended yet (a timer may wake a
            little early), else 0.
        """
        started = self._started
        if self._status is not VmStatus.UP or started is None or self._up_early:
            return 0.0
        remaining = started + self.powering_up - self.now()
        if remaining > 0:
            return remaining
        self.changed()
        self._status_time = notify_time(self._clock)
        self.announce()
        return 0.0

    def guest_is_up(self) -> None:
        """The guest says it is up (its agent answered): "Powering up" ends now.

        As VDSM, where "Powering up" lasts until the guest agent answers or 60 s
        have passed. Announces "Up" if the VM was still powering up; the timer
        that would have ended it later then announces nothing.
        """
        started = self._started
        if self._status is not VmStatus.UP or started is None or self._up_early:
            return
        elapsed = self.now() - started
        if elapsed >= self.powering_up:
            return
        self._up_early = True
        self.powering_up = elapsed
        self.changed()
        self._status_time = notify_time(self._clock)
        self.announce()

    def sampled(self, figures: Mapping[str, Any]) -> None:
        """A sample came in with these figures: the VM's monitor responds."""
        self.changed()
        self._monitor_response = 0
        self._figures = figures

    def unresponsive(self) -> None:
        """Its runtime did not answer for it (no sample, engine lost): monitorResponse -1.

        A Down VM has nothing to sample and stays 0.
        """
        self.changed()
        self._monitor_response = -1 if self._status is not VmStatus.DOWN else 0

    def responsive(self) -> None:
        """Its runtime answers again: monitorResponse 0."""
        self.changed()
        self._monitor_response = 0

    def operation_started(self) -> int:
        """Count an operation in flight from now; return its id for `operation_ended`."""
        op_id = next(self._op_ids)
        self._in_flight[op_id] = self.now()
        self.changed()
        return op_id

    def operation_ended(self, op_id: int) -> None:
        """The operation `op_id` is no longer in flight."""
        self._in_flight.pop(op_id, None)
        self.changed()

    # -- telling --------------------------------------------------------------------------

    def announce(self) -> None:
        """Publish `|virt|VM_status|<id>`; the board hears of the change first.

        The event carries what `VM.getStats` answers now: the status fields, and for a
        VM that runs every stats field too (`hash`, `timeOffset`, `displayInfo`, the
        guest agent's facts…), as VDSM's event when a VM comes up does. The Engine
        reads an event with the same parser as the stats (EventVmStatsRefresher:
        updateVMDynamicData and getVmDevicesHash).
        """
        self.post_if_changed()
        info = self.entry().stats(self.now())
        self._publish(Event(method=f"|virt|VM_status|{self.vm_id}", params={self.vm_id: info}))

    def post(self) -> None:
        """Post the entry to the board."""
        self._board(Post(self.entry()))

    def post_if_changed(self) -> None:
        """Post the entry to the board if it changed since it was last made."""
        if self._entry is None:
            self.post()

    def forget(self) -> None:
        """Take this VM off the board (its actor stops)."""
        self._board(Forget(self.vm_id))

    def _make_entry(self) -> VmEntry:
        if self._status_time is None:
            self._status_time = notify_time(self._clock)
        info = self._described
        if self._status is VmStatus.DOWN and self._exit is not None:
            info = {
                **info,
                "exitCode": int(self._exit.code),
                "exitReason": int(self._exit.reason),
                "exitMessage": self._exit.message,
                "timeOffset": str(self._extra().get("timeOffset", "0")),
            }
        return VmEntry(
            vm_id=self.vm_id,
            status=self._status,
            status_time=self._status_time,
            info=info,
            figures=self._figures,
            extra=self._extra(),
            started=self._started,
            powering_up=self.powering_up,
            monitor_response=self._monitor_response,
            busy_since=min(self._in_flight.values(), default=None),
            operation_timeout=self._operation_timeout,
            xml=self._xml,
        )
