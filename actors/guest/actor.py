"""GuestActor: the actor side every VM's actor shares, whatever runs the guest.

It composes a `GuestModel` (`self.guest`: status, exit, figures, the entry posted
to the board) and adds what needs an actor:
- the answers the API asks (`brief`, `info`, `stats`, `definition`, `entry`,
  `status`), rendered from the model's entry on the actor's clock;
- operations (`operation`): the blocking call runs on the work facility
  (`Actor.run_off`), comes back to the actor's thread, and the caller's future
  settles after the board has heard of the change; one running past its timeout
  shows as monitorResponse -1; one still running when the actor stops fails with
  `ActorGone`;
- "Powering up" timed on the timer service, so a `ManualClock` drives it;
- the verbs its runtime does not implement (`UNSUPPORTED`) answer code 75; any
  other method it does not have is the caller's bug: the ask fails with an
  `AttributeError` (-32603 on the wire, logged with its traceback by the API) and
  the actor, which did nothing wrong, carries on.

`VmActor` (libvirt) and `ContainerActor` (docker) add how their guest is launched,
adopted, operated and sampled, and use the model through its public methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pykka import messages as pykka_messages

from hostvisor.actors.actor import Actor, CallbackFuture
from hostvisor.actors.errors import HostvisorError, Unavailable
from hostvisor.actors.future import Later
from hostvisor.actors.guest.entry import VmEntry
from hostvisor.actors.guest.errors import UnsupportedOperation, VmOperationFailed
from hostvisor.actors.guest.model import GuestModel, Publish, TellBoard
from hostvisor.actors.guest.status import VmStatus

log = logging.getLogger(__name__)

MIGRATION_METHODS = frozenset({"migrate", "migrate_cancel", "migration_status"})
"""The VM actor methods behind the migration verbs (a container VM does not migrate)."""

BALLOON_METHODS = frozenset({"set_balloon_target"})
"""The VM actor methods behind the balloon verbs (a container VM has no balloon)."""

UNSUPPORTED_VERBS = frozenset({"snapshot"} | MIGRATION_METHODS | BALLOON_METHODS)
"""VM verbs a runtime other than libvirt declares unsupported (code 75). Any other
method of a libvirt VM's actor that such a runtime lacks is answered 75 too
(`_no_such_method`)."""


class ActorGone(Unavailable):
    """The VM's actor stopped before its operation finished."""


@dataclass(frozen=True, slots=True)
class ShutdownTimedOut:
    """Tell (from a timer): a graceful shutdown did not finish in time."""

    attempt: int


@dataclass(frozen=True, slots=True)
class PoweringUpOver:
    """Tell (from a timer): the "Powering up" window has passed; announce "Up"."""


class _ActorClock:
    """The actor's clock, looked up when read: the link that carries it comes after __init__."""

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor) -> None:
        self._actor = actor

    def monotonic(self) -> float:
        return self._actor.clock.monotonic()

    def time(self) -> float:
        return self._actor.clock.time()


class GuestActor(Actor):
    """The answers, operations and timers every VM actor shares.

    Every method runs on the actor's thread and returns at once: answers are read
    from the model's entry; operations return a future. Subclasses reach the guest's
    state through `self.guest` (a `GuestModel`) and the helpers below, never through
    private fields.

    Args:
        vm_id: the VM's id.
        described: the VM's static getInfo fields (vmName, vmType, vcpuCount).
        xml: the domain XML to report until a live one is known.
        publish: sends an event up to the event bus (never blocks).
        board: tells the VM board this VM's entries.
        powering_up: seconds a started VM reports "Powering up" (VDSM: 60).
        operation_timeout: seconds after which an operation still running makes the
            VM report monitorResponse -1.
    """

    guest_runtime: ClassVar[str | None] = None
    """Named in operation errors when the guest is not a libvirt domain ("docker")."""
    UNSUPPORTED: ClassVar[frozenset[str]] = UNSUPPORTED_VERBS
    """Methods the API may call that this runtime refuses with code 75."""

    def __init__(  # noqa: PLR0913 - the collaborators and settings of every VM actor
        self,
        *,
        vm_id: str,
        described: Mapping[str, Any],
        xml: str,
        publish: Publish,
        board: TellBoard,
        powering_up: float,
        operation_timeout: float,
    ) -> None:
        """Start as WaitForLaunch; subclasses launch or adopt in `on_start`."""
        super().__init__()
        self.vm_id = vm_id
        self.guest = GuestModel(
            vm_id=vm_id,
            described=described,
            xml=xml,
            clock=_ActorClock(self),
            publish=publish,
            board=board,
            powering_up=powering_up,
            operation_timeout=operation_timeout,
            extra=self._extra,
        )
        self._operations: dict[int, CallbackFuture] = {}  # in flight, by model op id

    # -- life -----------------------------------------------------------------------------

    def on_stop(self) -> None:
        """Take this VM off the board; operations in flight fail with ActorGone."""
        self._gone()

    def on_failure(self, *_exc_info: Any) -> None:
        """Take this VM off the board (the restarted actor posts afresh); fail operations."""
        self._gone()

    def _gone(self) -> None:
        self.guest.forget()
        operations, self._operations = self._operations, {}
        for future in operations.values():
            future.set_exception(exc_info=(ActorGone, ActorGone(vmId=self.vm_id), None))

    def on_receive(self, message: Any) -> Any:
        """Handle `PoweringUpOver`; subclasses handle the rest first."""
        if isinstance(message, PoweringUpOver):
            self._powering_up_over()
            return None
        return super().on_receive(message)

    def _handle_receive(self, message: Any) -> Any:
        if isinstance(message, pykka_messages.ProxyCall):
            path = message.attr_path
            if len(path) == 1 and path[0] in self.UNSUPPORTED:
                runtime = {"runtime": self.guest_runtime} if self.guest_runtime else {}
                raise UnsupportedOperation(vmId=self.vm_id, operation=path[0], **runtime)
            if not _has_method(self, path):
                return self._no_such_method(path)
        try:
            return super()._handle_receive(message)
        finally:
            self.guest.post_if_changed()

    def _no_such_method(self, path: tuple[str, ...]) -> Later:
        """Fail the ask: code 75 from a runtime that lacks a libvirt VM's verb, else a bug.

        A VM verb a libvirt VM has and this runtime (docker) does not is unsupported
        here (75). For a libvirt VM a missing method is a bug: an AttributeError
        (not a HostvisorError: -32603).
        """
        name = ".".join(path)
        if self.guest_runtime is not None and len(path) == 1 and _libvirt_vm_verb(name):
            raise UnsupportedOperation(vmId=self.vm_id, operation=name, runtime=self.guest_runtime)
        error = AttributeError(f"{type(self).__name__} has no method {name!r}")
        log.error("VM %s was asked %r, which it does not have", self.vm_id, name)
        answer = Later()
        answer.set_exception(exc_info=(AttributeError, error, None))
        return answer

    # -- answers (fast, from the model's entry) ---------------------------------------------

    @property
    def status(self) -> VmStatus:
        """The status as reported (Powering up for the first seconds of Up)."""
        return self.guest.reported_status()

    def entry(self) -> VmEntry:
        """What this VM reports now, frozen (made again only after a change)."""
        return self.guest.entry()

    def brief(self) -> dict[str, Any]:
        """Return `{vmId, status}` (getVMList with onlyUUID=false)."""
        return self.guest.entry().brief(self.clock.monotonic())

    def info(self) -> dict[str, Any]:
        """Return the VM's status fields, as VM.getStats reports them for any status."""
        return self.guest.entry().info_fields(self.clock.monotonic())

    def stats(self) -> dict[str, Any]:
        """Return VM.getStats' entry: status fields plus the last sampled figures."""
        return self.guest.entry().stats(self.clock.monotonic())

    def definition(self) -> dict[str, Any]:
        """Return getVMFullList's entry: the status fields and the domain XML."""
        return self.guest.entry().definition(self.clock.monotonic())

    def _extra(self) -> Mapping[str, Any]:
        """Stats fields of a running VM besides the sampled figures (kvmEnable, …)."""
        return {}

    # -- for subclasses (actor thread) ------------------------------------------------------

    def mark_started(self, started: float) -> None:
        """Remember when the guest started (monotonic); time the end of "Powering up"."""
        remaining = self.guest.mark_started(started)
        if remaining > 0:
            self.tell_later(remaining, PoweringUpOver())

    def _powering_up_over(self) -> None:
        remaining = self.guest.powering_up_over()
        if remaining > 0:  # a timer may wake a little early
            self.tell_later(remaining, PoweringUpOver())

    def operation(
        self,
        op: str,
        call: Callable[[], Any],
        *,
        then: Callable[[Any], Any],
        failed: Callable[[BaseException], Any] | None = None,
    ) -> CallbackFuture:
        """Run blocking `call` on a worker; return a future of the operation's outcome.

        Runs on the actor's thread and does not block. Once `call` returns, `then`
        (or, if it raised, `failed`) runs back on the actor's thread; the board
        hears of any change, then the future settles with `then`'s value, or fails
        with the error (a non-Hostvisor one as VmOperationFailed).
        """
        future = CallbackFuture()
        op_id = self.guest.operation_started()
        self._operations[op_id] = future

        def done(outcome: Any) -> None:
            self.guest.operation_ended(op_id)
            if isinstance(outcome, BaseException):
                error = self._failure(op, outcome, failed)
                self._operations.pop(op_id, None)
                self.guest.post_if_changed()
                future.set_exception(exc_info=(type(error), error, None))
                return
            value = then(outcome)
            self._operations.pop(op_id, None)
            self.guest.post_if_changed()
            future.set(value)

        self.run_off(call, done, name=op)
        return future

    def _failure(
        self, op: str, error: BaseException, failed: Callable[[BaseException], Any] | None
    ) -> HostvisorError:
        if failed is not None:
            failed(error)
        if isinstance(error, HostvisorError):
            return error
        runtime = {"runtime": self.guest_runtime} if self.guest_runtime else {}
        return VmOperationFailed(vmId=self.vm_id, operation=op, **runtime, reason=str(error))


def _libvirt_vm_verb(name: str) -> bool:
    """Whether `name` is a public method of a libvirt VM's actor (what a VM verb calls)."""
    from hostvisor.actors.vm.actor import VmActor  # noqa: PLC0415 - vm builds on guest

    return not name.startswith("_") and callable(getattr(VmActor, name, None))


def _has_method(actor: Actor, path: tuple[str, ...]) -> bool:
    """Whether `path` names a public method of `actor` (no private name is callable)."""
    if not path or any(part.startswith("_") for part in path):
        return False
    target: Any = actor
    for part in path:
        target = getattr(target, part, None)
        if target is None:
            return False
    return callable(target)
