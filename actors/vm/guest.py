"""GuestActor: what every VM's actor does, whatever runs the guest (libvirt or docker).

A VM is reported the same way however it runs: a status with its time, an exit
when Down, the last sampled figures, monitorResponse, "Powering up" for its first
seconds; `|virt|VM_status|<id>` events on every change; a frozen `VmEntry` posted
to the VM board after any message that changed what it reports (before an event is
published or an operation's answer is given, so a client that lists VMs then sees
the change). Operations run off the actor's thread (`_blocking`) and come back as
`Done` messages; one running past its timeout shows as monitorResponse -1.

`VmActor` (libvirt) and `ContainerActor` (docker) add how their guest is launched,
adopted, operated and sampled.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pykka
from pykka import messages as pykka_messages

from hostvisor.actors.actor import Actor, CallbackFuture
from hostvisor.actors.errors import Conflict, HostvisorError, Unavailable
from hostvisor.actors.events import Event, notify_time
from hostvisor.actors.timers import Timers
from hostvisor.actors.vm.board import Forget, Post
from hostvisor.actors.vm.entry import VmEntry
from hostvisor.actors.vm.errors import UnsupportedOperation, VmIsDown, VmOperationFailed
from hostvisor.actors.vm.lifecycle import Exit
from hostvisor.actors.vm.status import VmStatus

Publish = Callable[[Event], None]
TellBoard = Callable[[Post | Forget], None]


def no_board(_message: Post | Forget) -> None:
    """Where an actor made without a board posts its entries: nowhere."""


class ActorGone(Unavailable):
    """The VM's actor stopped before its operation finished."""


@dataclass(frozen=True, slots=True)
class Done:
    """Tell (from an operation's thread): the blocking call finished."""

    op: CallbackFuture
    op_id: int
    then: Callable[[Any], Any]
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class ShutdownTimedOut:
    """Tell (from a timer): a graceful shutdown did not finish in time."""

    attempt: int


@dataclass(frozen=True, slots=True)
class PoweringUpOver:
    """Tell (from a timer): the "Powering up" window has passed; announce "Up"."""


class GuestActor(Actor):
    """The status, reporting and operation machinery every VM actor shares.

    Args:
        vm_id: the VM's id.
        described: the VM's static getInfo fields (vmName, vmType, vcpuCount).
        xml: the domain XML to report until a live one is known (`self._xml`).
        publish: sends an event up to the event bus (never blocks).
        board: tells the VM board this VM's entries.
        timers: the thread that tells this actor its timers.
        powering_up: seconds a started VM reports "Powering up" (VDSM: 60).
        operation_timeout: seconds after which an operation still running makes the
            VM report monitorResponse -1.
    """

    guest_runtime: ClassVar[str | None] = None
    """Named in operation errors when the guest is not a libvirt domain ("docker")."""
    thread_prefix: ClassVar[str] = "vm"

    def __init__(  # noqa: PLR0913 - the collaborators and settings of every VM actor
        self,
        *,
        vm_id: str,
        described: Mapping[str, Any],
        xml: str,
        publish: Publish,
        board: TellBoard,
        timers: Timers,
        powering_up: float,
        operation_timeout: float,
    ) -> None:
        """Start as WaitForLaunch; subclasses launch or adopt in `on_start`."""
        super().__init__()
        self.vm_id = vm_id
        self._described = described
        self._xml = xml
        self._publish = publish
        self._board = board
        self._timers = timers
        self._powering_up = powering_up
        self._operation_timeout = operation_timeout
        self._status = VmStatus.WAIT_FOR_LAUNCH
        self._status_time = notify_time()
        self._exit: Exit | None = None
        self._started: float | None = None  # monotonic
        self._shutdown_attempt = 0
        self._figures: dict[str, Any] = {}
        self._monitor_response = 0
        self._op_ids = itertools.count(1)
        self._in_flight: dict[int, float] = {}  # operation id -> started (monotonic)
        self._entry: VmEntry | None = None  # None: changed since last posted

    # -- life -----------------------------------------------------------------------------

    def on_stop(self) -> None:
        """Take this VM off the board."""
        self._board(Forget(self.vm_id))

    def on_failure(self, *_exc_info: Any) -> None:
        """Take this VM off the board; the restarted actor posts afresh."""
        self._board(Forget(self.vm_id))

    def _handle_receive(self, message: Any) -> Any:
        if isinstance(message, pykka_messages.ProxyCall):
            # A VM verb this guest's runtime does not implement (migrate, snapshot,
            # hotplug…): VDSM's "operation not supported", not a crash.
            name = message.attr_path[0]
            if len(message.attr_path) != 1 or name.startswith("_") or not hasattr(self, name):
                runtime = {"runtime": self.guest_runtime} if self.guest_runtime else {}
                raise UnsupportedOperation(vmId=self.vm_id, operation=name, **runtime)
        try:
            return super()._handle_receive(message)
        finally:
            self._post_if_changed()

    def _on_done(self, done: Done) -> None:
        self._in_flight.pop(done.op_id, None)
        self._changed()
        outcome = done.then(done.result if done.error is None else done.error)
        # The board hears first: a caller that lists VMs after the answer sees it there.
        self._post_if_changed()
        if done.error is not None and isinstance(outcome, BaseException):
            done.op.set_exception(exc_info=(type(outcome), outcome, None))
        else:
            done.op.set(outcome)

    # -- answers --------------------------------------------------------------------------

    @property
    def status(self) -> VmStatus:
        """The status as reported (Powering up for the first seconds of Up)."""
        return self.entry().reported_status(time.monotonic())

    def entry(self) -> VmEntry:
        """What this VM reports now, frozen (made again only after a change)."""
        if self._entry is None:
            self._entry = self._make_entry()
        return self._entry

    def brief(self) -> dict[str, Any]:
        """Return `{vmId, status}` (getVMList with onlyUUID=false)."""
        return self.entry().brief(time.monotonic())

    def info(self) -> dict[str, Any]:
        """Return the VM's status fields, as VM.getStats reports them for any status."""
        return self.entry().info_fields(time.monotonic())

    def stats(self) -> dict[str, Any]:
        """Return VM.getStats' entry: status fields plus the last sampled figures."""
        return self.entry().stats(time.monotonic())

    def definition(self) -> dict[str, Any]:
        """Return getVMFullList's entry: the status fields and the domain XML."""
        return self.entry().definition(time.monotonic())

    def _extra(self) -> Mapping[str, Any]:
        """Stats fields of a running VM besides the sampled figures (kvmEnable, …)."""
        return {}

    def _make_entry(self) -> VmEntry:
        info = self._described
        if self._status is VmStatus.DOWN and self._exit is not None:
            info = {
                **info,
                "exitCode": int(self._exit.code),
                "exitReason": int(self._exit.reason),
                "exitMessage": self._exit.message,
                "timeOffset": "0",
            }
        return VmEntry(
            vm_id=self.vm_id,
            status=self._status,
            status_time=self._status_time,
            info=info,
            figures=self._figures,
            extra=self._extra(),
            started=self._started,
            powering_up=self._powering_up,
            monitor_response=self._monitor_response,
            busy_since=min(self._in_flight.values(), default=None),
            operation_timeout=self._operation_timeout,
            xml=self._xml,
        )

    def _changed(self) -> None:
        """What this VM reports has changed: post a new entry after this message."""
        self._entry = None

    def _post(self) -> None:
        self._board(Post(self.entry()))

    def _post_if_changed(self) -> None:
        if self._entry is None:
            self._post()

    # -- status -----------------------------------------------------------------------------

    def _mark_started(self, started: float) -> None:
        """Remember when the guest started (monotonic); time the end of "Powering up"."""
        self._changed()
        self._started = started
        remaining = started + self._powering_up - time.monotonic()
        if remaining > 0:
            self._tell_later(remaining, PoweringUpOver())

    def _on_powering_up_over(self) -> None:
        """The reported status turns from "Powering up" to "Up": announce it."""
        started = self._started
        if self._status is not VmStatus.UP or started is None:
            return
        remaining = started + self._powering_up - time.monotonic()
        if remaining > 0:  # a timer may wake a little early
            self._tell_later(remaining, PoweringUpOver())
            return
        self._changed()
        self._status_time = notify_time()
        self._announce()

    def _tell_later(self, delay: float, message: Any) -> None:
        """Tell this actor `message` after `delay` seconds, unless it has stopped by then."""
        self._timers.tell_later(delay, self.actor_ref, message)

    def _set_status(self, status: VmStatus, *, publish: bool = True) -> None:
        if status is self._status:
            return
        self._changed()
        self._status = status
        self._status_time = notify_time()
        if publish:
            self._announce()

    def _announce(self) -> None:
        """Publish `|virt|VM_status|<id>`; the board hears of the change first."""
        self._post_if_changed()
        self._publish(
            Event(method=f"|virt|VM_status|{self.vm_id}", params={self.vm_id: self.info()})
        )

    def _down(self, exit_: Exit, *, publish: bool = True) -> None:
        self._changed()
        self._exit = exit_
        self._set_status(VmStatus.DOWN, publish=publish)

    def _require_running(self, op: str) -> None:
        if self._status is VmStatus.DOWN:
            raise VmIsDown(vmId=self.vm_id, operation=op)
        if self._status is VmStatus.WAIT_FOR_LAUNCH:
            raise Conflict(vmId=self.vm_id, operation=op, status=self._status.value)

    # -- operations -------------------------------------------------------------------------

    def _blocking(
        self,
        op: str,
        call: Callable[[], Any],
        *,
        then: Callable[[Any], Any],
        failed: Callable[[BaseException], Any] | None = None,
    ) -> CallbackFuture:
        """Run `call` on a new thread; `then`/`failed` run back in the actor's thread."""
        future = CallbackFuture()
        ref = self.actor_ref
        vm_id = self.vm_id
        op_id = next(self._op_ids)
        self._in_flight[op_id] = time.monotonic()
        self._changed()
        runtime = {"runtime": self.guest_runtime} if self.guest_runtime else {}

        def fail(error: BaseException) -> BaseException:
            if failed is not None:
                failed(error)
            if isinstance(error, HostvisorError):
                return error
            return VmOperationFailed(vmId=vm_id, operation=op, **runtime, reason=str(error))

        def run() -> None:
            try:
                result = call()
            except Exception as error:  # noqa: BLE001 - reported to the actor, then the caller
                done = Done(future, op_id, fail, error=error)
            else:
                done = Done(future, op_id, then, result=result)
            try:
                ref.tell(done)
            except pykka.ActorDeadError:
                future.set_exception(exc_info=(ActorGone, ActorGone(vmId=vm_id), None))

        name = f"{self.thread_prefix}:{vm_id}:{op}"
        threading.Thread(target=run, name=name, daemon=True).start()
        return future
