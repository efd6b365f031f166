"""The generic supervisor: OTP's semantics on pykka actors, and the tree's restart policy.

A supervisor is an actor that starts its children in order, watches them die,
restarts them according to their restart type and its strategy, gives up and
escalates when its restart budget is spent, and stops them in reverse order, each
within its shutdown timeout. Children are any `hostvisor.actors.actor.Actor`,
supervisors included.

Restart policy (the DESIGN's "crash, don't limp", sized as OTP's guidance says):

- **Each budget is sized for the burst its supervisor can see.** A supervisor may
  restart children `intensity` times in `period` seconds; one more escalates: it
  stops its children and exits, and its parent restarts it (a restart of the whole
  subtree). The budget is for bursts with one cause that a fresh subtree may clear;
  the period bounds the sustained rate, so a crash loop cannot fill the log forever.
  Budgets are not equal at every level: the restarts a crashing leaf can cause
  multiply up the tree.
- **A dynamic child's crash loop is that child's business.** The supervisors of
  resources (`vms/guests`, `containers/guests`, `storage/domains`, `networks/nets`)
  give each child its own budget (`SupervisorFlags.per_child`, a `ChildBudget`). A
  child restarted more than that is *given up*: not restarted at once, and not
  spending its siblings' budget any further. It is reported at error with its last
  reason, stays in the supervisor (`which_children`, the published children, and
  the registry, where its last incarnation shows state "crashed" and a
  `restarts.last_reason` beginning "given up") and is started again after a backoff
  (Kubernetes' crash-loop backoff: doubled after each give-up in a row, capped; reset
  once it has run a period without a crash). The supervisor's own budget stays for
  a burst across many children — a common cause such as a broken connection — which
  escalates, and the branch restarts and re-adopts every resource from its source of
  truth (`hostvisor.actors.recovery`). Nothing about the guest changes meanwhile: a
  VM whose actor is given up keeps running in libvirt, stays listed with its last
  known status (the VM board keeps its entry), and is adopted again by the retry.
- **Branch restarts do not bring the agent down unless the tree truly cannot run.**
  The root gives each branch its own budget too: a branch that keeps escalating is
  given up and retried with a backoff while the others run. The root escalates —
  the process exits non-zero and systemd starts a fresh one — only when a branch has
  failed *to start* `escalate_after` times in a row (its on_start keeps failing: the
  tree cannot run), or when restarts exceed the root's own budget, which is larger
  than what the per-branch budgets together allow (a bug's last resort).
- A retry after a backoff spends no supervisor budget: the backoff paces it.

The numbers live in `hostvisor.supervision.spec`: `RESOURCE_CHILD_BUDGET` (every
dynamic supervisor's `per_child`) and `ROOT_FLAGS`; each branch's own flags sit with
its builder (`supervision/branches/`). While a child is given up, `Registry.get` of
its path answers its dead incarnation: callers that need a live actor check
`ref.is_alive()`.

Threads: everything here runs on the supervisor's turn (one at a time). Children report
their exits with a tell (`Exit`); callers manage dynamic children with asks,
through `SupervisorHandle`, which always passes a deadline. A backoff's retry is a
message the timer service tells the supervisor.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pykka

from hostvisor.actors.actor import Actor, ActorStats, Exit, ExitReason, Link, ask
from hostvisor.actors.errors import (
    AlreadyExists,
    Conflict,
    HostvisorError,
    NotFound,
    StartFailed,
)
from hostvisor.supervision.budget import RestartBudget
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.registry import NO_RESTARTS, Registry, RestartInfo, child_path
from hostvisor.supervision.spec import (
    ChildBudget,
    ChildKind,
    ChildSpec,
    Restart,
    Strategy,
    SupervisorFlags,
    validate_children,
)

log = logging.getLogger(__name__)


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartChild:
    """Ask: add a child at the end and start it. Answers its path."""

    spec: ChildSpec


@dataclass(frozen=True, slots=True)
class StartChildren:
    """Ask: add and start many children at once; their `on_start`s run in parallel.

    Answers one entry per spec, in order: the child's path, or the `HostvisorError`
    that kept it from starting (AlreadyExists, StartFailed). Recovery uses it to
    adopt a thousand VMs without waiting for each one in turn.
    """

    specs: tuple[ChildSpec, ...]


@dataclass(frozen=True, slots=True)
class TerminateChild:
    """Ask: stop a child without restarting it; its spec stays (restart_child)."""

    child_id: str


@dataclass(frozen=True, slots=True)
class DeleteChild:
    """Ask: forget a terminated child's spec."""

    child_id: str


@dataclass(frozen=True, slots=True)
class RestartChild:
    """Ask: start a terminated child again. Answers its path."""

    child_id: str


@dataclass(frozen=True, slots=True)
class WhichChildren:
    """Ask: answer a `ChildInfo` per child, in start order."""


@dataclass(frozen=True, slots=True)
class _RetryRestart:
    """Tell (to itself): a restart failed to start; try again, spending budget."""

    child_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class _BackoffOver:
    """Tell (from the timer service): a given-up child's backoff has passed; start it.

    `token` names the give-up it ends: a child terminated, restarted or given up
    again since then ignores it.
    """

    child_id: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildInfo:
    """One child as `which_children` reports it."""

    id: str
    path: str
    alive: bool
    kind: ChildKind
    restart: Restart
    given_up: bool = False
    """Its crash loop spent its own budget: it waits out a backoff (`ChildBudget`)."""


@dataclass(slots=True)
class _Slot:
    spec: ChildSpec
    path: str
    ref: pykka.ActorRef[Any] | None = None
    incarnation: int = 0
    restarts: RestartInfo = NO_RESTARTS
    stats: ActorStats | None = None
    """The counters of the last incarnation started."""
    down: bool = False
    """Meant to run but not running: being restarted, or given up."""
    budget: RestartBudget | None = None
    """This child's own restarts (with `SupervisorFlags.per_child`)."""
    started_at: float = 0.0
    """When the last incarnation started (the restart window's clock)."""
    start_failures: int = 0
    """Failed starts in a row."""
    backoffs: int = 0
    """Give-ups in a row (the next backoff doubles with each)."""
    given_up: bool = False
    """Waiting out a backoff after its own budget was spent."""
    dead: pykka.ActorRef[Any] | None = None
    """While given up: its last incarnation, registered so introspection shows it."""
    token: int = 0
    """Names the pending backoff; bumped whenever the slot changes hands."""


# -- the actor --------------------------------------------------------------------------


class Supervisor(Actor):
    """Starts, watches, restarts and stops a list of children.

    Construct it through `Actor.spawn(link, flags=..., children=..., registry=...)`.
    The flags and every spec are validated in the constructor, in the caller's
    thread, so a bad tree is refused before anything starts.
    """

    def __init__(
        self,
        *,
        flags: SupervisorFlags,
        children: Sequence[ChildSpec] = (),
        registry: Registry,
        clock: Clock | None = None,
    ) -> None:
        """Validate the flags and children; start nothing yet."""
        super().__init__()
        flags.validate()
        validate_children(children)
        self._flags = flags
        self._initial = tuple(children)
        self._registry = registry
        self._clock = clock
        """The restart window's clock; None: the tree's (`self.clock`)."""
        self._budget = RestartBudget(flags.intensity, flags.period)
        self._slots: dict[str, _Slot] = {}

    # -- life cycle -----------------------------------------------------------------------

    def on_start(self) -> None:
        """Start the children in order; if one fails, stop the others and fail too."""
        for spec in self._initial:
            slot = _Slot(spec=spec, path=child_path(self.path, spec.id))
            self._slots[spec.id] = slot
            try:
                self._start_slot(slot)
            except StartFailed:
                self._stop_all()
                raise
        self._publish_children()

    def on_stop(self) -> None:
        """Stop every child in reverse start order."""
        self._stop_all()

    def on_failure(self, *_exc_info: object) -> None:
        """Do not leave orphans behind: stop every child."""
        self._stop_all()

    # -- messages -------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Dispatch one message (see the message classes above)."""
        match message:
            case Exit():
                self._on_exit(message)
            case _RetryRestart() | _BackoffOver():
                self._on_retry(message)
            case StartChild(spec):
                return self._start_child(spec)
            case StartChildren(specs):
                return self._start_children(specs)
            case TerminateChild(child_id):
                self._stop_slot(self._slot(child_id))
                self._publish_children()
            case DeleteChild(child_id):
                self._delete_child(child_id)
            case RestartChild(child_id):
                return self._restart_child(child_id)
            case WhichChildren():
                return self._which_children()
            case _:
                return super().on_receive(message)
        return None

    def _on_retry(self, message: _RetryRestart | _BackoffOver) -> None:
        slot = self._slots.get(message.child_id)
        if slot is None or slot.ref is not None:
            return
        if isinstance(message, _RetryRestart):
            if not slot.given_up:
                self._restart(slot, message.reason)
        elif slot.given_up and slot.token == message.token:
            self._retry_given_up(slot)

    def _start_child(self, spec: ChildSpec) -> str:
        validate_children([spec])
        if spec.id in self._slots:
            raise AlreadyExists(supervisor=self.path, child=spec.id)
        slot = _Slot(spec=spec, path=child_path(self.path, spec.id))
        self._slots[spec.id] = slot
        try:
            self._start_slot(slot)
        except StartFailed:
            del self._slots[spec.id]
            raise
        self._publish_children()
        return slot.path

    def _start_children(self, specs: tuple[ChildSpec, ...]) -> list[str | HostvisorError]:
        """Spawn every child first, then wait for each `on_start` in turn.

        Runs in the supervisor's thread and blocks it until every child's `on_start`
        has ended (each within its own start timeout). Linear in the number of
        children: one pass to spawn, one to wait (registering each child as it is up),
        one publication of the children. The cyclic garbage collector is paused
        meanwhile (`gc_paused`): thousands of new actors would otherwise set off full
        collections that walk every object in the process. Raises nothing a child
        causes: each answer is the child's path or the error that kept it from starting.
        """
        validate_children(specs)
        with gc_paused():
            spawned = [self._spawn_new(spec) for spec in specs]
            answers: list[str | HostvisorError] = []
            for entry in spawned:
                if isinstance(entry, HostvisorError):
                    answers.append(entry)
                    continue
                slot, link, ref = entry
                try:
                    self._await_slot(slot, link, ref)
                except StartFailed as error:
                    del self._slots[slot.spec.id]
                    answers.append(error)
                else:
                    answers.append(slot.path)
        self._publish_children()
        return answers

    def _spawn_new(
        self, spec: ChildSpec
    ) -> tuple[_Slot, Link, pykka.ActorRef[Any]] | HostvisorError:
        """Add a slot for `spec` and spawn it; the error instead if that failed.

        Supervisor's thread; does not wait for the child's `on_start`.
        """
        if spec.id in self._slots:
            return AlreadyExists(supervisor=self.path, child=spec.id)
        slot = _Slot(spec=spec, path=child_path(self.path, spec.id))
        self._slots[spec.id] = slot
        try:
            link, ref = self._spawn_slot(slot)
        except StartFailed as error:
            del self._slots[spec.id]
            return error
        return slot, link, ref

    def _delete_child(self, child_id: str) -> None:
        slot = self._slot(child_id)
        if slot.ref is not None:
            raise Conflict(child=slot.path, reason="running; terminate it first")
        self._settle(slot)
        del self._slots[child_id]
        self._publish_children()

    def _restart_child(self, child_id: str) -> str:
        slot = self._slot(child_id)
        if slot.ref is not None:
            raise Conflict(child=slot.path, reason="already running")
        self._settle(slot)
        slot.budget, slot.backoffs = None, 0  # started on purpose: a fresh budget
        self._start_slot(slot)
        self._publish_children()
        return slot.path

    def _which_children(self) -> tuple[ChildInfo, ...]:
        return tuple(
            ChildInfo(
                id=slot.spec.id,
                path=slot.path,
                alive=slot.ref is not None,
                kind=slot.spec.kind,
                restart=slot.spec.restart,
                given_up=slot.given_up,
            )
            for slot in self._slots.values()
        )

    def _slot(self, child_id: str) -> _Slot:
        slot = self._slots.get(child_id)
        if slot is None:
            raise NotFound(supervisor=self.path, child=child_id)
        return slot

    # -- death and restart ----------------------------------------------------------------

    def _on_exit(self, notice: Exit) -> None:
        slot = self._slots.get(notice.path.rsplit("/", 1)[-1])
        if slot is None or slot.ref is None or slot.incarnation != notice.incarnation:
            return  # an incarnation we stopped or replaced already
        self._registry.unregister(slot.path, slot.ref)
        dead, slot.ref = slot.ref, None
        restart = _wants_restart(slot.spec.restart, notice.reason)
        self._report(
            "child exited",
            child=slot.path,
            reason=notice.reason.value,
            error=notice.error,
            action="restart" if restart else "none",
        )
        if restart:
            slot.down = True
            self._restart(slot, f"{notice.reason.value}: {notice.error or 'no error'}", dead)
        elif slot.spec.restart is Restart.TEMPORARY:
            del self._slots[slot.spec.id]
        self._publish_children()

    def _restart(self, slot: _Slot, reason: str, dead: pykka.ActorRef[Any] | None = None) -> None:
        """Restart `slot` (and its group), give it up, or escalate (see the module doc)."""
        now = self._now()
        per_child = self._flags.per_child
        if per_child is not None and not self._child_may_restart(slot, per_child, now):
            self._give_up(slot, per_child, reason, dead)
            return
        budget = self._budget.spend(now)
        if budget is None:
            self._escalate(slot, reason)
            return
        self._budget = budget
        group = self._restart_group(slot)
        for other in reversed(group):
            if other is not slot:
                self._stop_slot(other)
        for member in group:
            cause = reason if member is slot else f"sibling {slot.spec.id} restarted"
            member.restarts = RestartInfo(
                count=member.restarts.count + 1, last_reason=cause, last_at=time.time()
            )
            try:
                self._start_slot(member)
            except StartFailed as error:
                self.actor_ref.tell(_RetryRestart(member.spec.id, str(error)))
                break
        self._publish_children()

    def _now(self) -> float:
        return (self._clock or self.clock).monotonic()

    def _child_may_restart(self, slot: _Slot, per_child: ChildBudget, now: float) -> bool:
        """Spend `slot`'s own budget; False if it is spent."""
        if slot.backoffs and now - slot.started_at >= per_child.period:
            slot.backoffs = 0  # it ran a whole period after its retry: a fresh start
            slot.budget = None
        if slot.backoffs:
            return False  # crashed again soon after its retry: back off longer
        budget = (slot.budget or RestartBudget(per_child.intensity, per_child.period)).spend(now)
        if budget is None:
            return False
        slot.budget = budget
        return True

    def _give_up(
        self,
        slot: _Slot,
        per_child: ChildBudget,
        reason: str,
        dead: pykka.ActorRef[Any] | None,
    ) -> None:
        """Stop restarting `slot` for a backoff; report it; escalate if it cannot start."""
        limit = per_child.escalate_after
        if limit is not None and slot.start_failures >= limit:
            self._escalate(slot, f"{slot.start_failures} failed starts in a row; {reason}")
            return
        delay = per_child.delay(slot.backoffs)
        slot.backoffs += 1
        slot.token += 1
        slot.down = True
        slot.restarts = replace(
            slot.restarts,
            last_reason=f"given up: {reason}; next start in {delay:g} s",
            last_at=time.time(),
        )
        slot.given_up = True
        slot.dead = dead = dead or slot.dead
        if dead is not None and slot.stats is not None:
            self._registry.register(
                slot.path, dead, stats=slot.stats, parent=self.path, restarts=slot.restarts
            )
        log.error(
            "supervisor report: supervisor=%s event='child given up' child=%s reason=%s "
            "per_child_intensity=%d per_child_period=%s give_ups_in_a_row=%d next_start_in=%g",
            self.path,
            slot.path,
            reason,
            per_child.intensity,
            per_child.period,
            slot.backoffs,
            delay,
        )
        self.tell_later(delay, _BackoffOver(slot.spec.id, slot.token))
        self._publish_children()

    def _retry_given_up(self, slot: _Slot) -> None:
        """A given-up child's backoff is over: start it again (spends no budget)."""
        dead = slot.dead
        self._settle(slot)
        slot.down = True
        slot.restarts = RestartInfo(
            count=slot.restarts.count + 1,
            last_reason=f"backoff over after: {slot.restarts.last_reason}",
            last_at=time.time(),
        )
        try:
            self._start_slot(slot)
        except StartFailed as error:
            if self._flags.per_child is not None:
                reason = f"start failed: {error.context.get('reason')}"
                self._give_up(slot, self._flags.per_child, reason, dead)
            return
        self._publish_children()

    def _settle(self, slot: _Slot) -> None:
        """End `slot`'s give-up, if any: forget its dead incarnation and its pending retry."""
        slot.token += 1
        slot.given_up = False
        dead, slot.dead = slot.dead, None
        if dead is not None:
            self._registry.unregister(slot.path, dead)

    def _restart_group(self, slot: _Slot) -> list[_Slot]:
        slots = list(self._slots.values())
        if self._flags.strategy is Strategy.ONE_FOR_ALL:
            return slots
        if self._flags.strategy is Strategy.REST_FOR_ONE:
            return slots[slots.index(slot) :]
        return [slot]

    def _escalate(self, slot: _Slot, reason: str) -> None:
        self._report(
            "restart intensity reached; shutting down",
            child=slot.path,
            reason=reason,
            intensity=self._flags.intensity,
            period=self._flags.period,
        )
        self._stop_all()
        self.exit(ExitReason.SHUTDOWN, error=f"reached max restart intensity after {reason}")

    # -- starting and stopping one child --------------------------------------------------

    def _start_slot(self, slot: _Slot) -> None:
        """Start one incarnation of `slot` and wait for its `on_start`.

        Raises:
            StartFailed: it crashed in `on_start`, did not finish in time, or its
                start function raised.
        """
        try:
            self._await_slot(slot, *self._spawn_slot(slot))
        except StartFailed:
            slot.start_failures += 1
            raise

    def _spawn_slot(self, slot: _Slot) -> tuple[Link, pykka.ActorRef[Any]]:
        """Start one incarnation of `slot` without waiting for its `on_start`."""
        slot.incarnation += 1
        link = Link(
            path=slot.path,
            incarnation=slot.incarnation,
            notify=self.actor_ref.tell,
            runtime=self.link.runtime,
        )
        slot.stats = link.stats
        try:
            ref = slot.spec.start(link)
        except Exception as error:
            log.exception("starting %s failed", slot.path)
            raise StartFailed(child=slot.path, reason=repr(error)) from error
        if not issubclass(ref.actor_class, Actor):
            ref.stop(block=False)
            raise StartFailed(child=slot.path, reason="not a hostvisor Actor; cannot be linked")
        return link, ref

    def _await_slot(self, slot: _Slot, link: Link, ref: pykka.ActorRef[Any]) -> None:
        """Wait for a spawned incarnation's `on_start`; register it when it is up."""
        try:
            link.started.get(timeout=slot.spec.start_timeout)
        except pykka.Timeout:
            ref.stop(block=False)
            self._report("start timed out; abandoned", child=slot.path)
            raise StartFailed(child=slot.path, reason="on_start timed out") from None
        except StartFailed as error:
            self._report("start failed", child=slot.path, error=error.context.get("reason"))
            raise
        slot.ref = ref
        slot.down = False
        slot.start_failures = 0
        slot.started_at = self._now()
        self._registry.register(
            slot.path, ref, stats=link.stats, parent=self.path, restarts=slot.restarts
        )

    def _stop_slot(self, slot: _Slot) -> None:
        """Stop `slot`'s actor, waiting at most its shutdown timeout; no restart follows."""
        self._settle(slot)
        slot.down = False
        ref, slot.ref = slot.ref, None
        if ref is None:
            return
        self._registry.unregister(slot.path, ref)
        try:
            ref.stop(block=False).get(timeout=slot.spec.shutdown_timeout)
        except pykka.Timeout:
            self._report(
                "child did not stop in time; abandoned",
                child=slot.path,
                shutdown_timeout=slot.spec.shutdown_timeout,
            )
        except pykka.ActorDeadError:
            pass

    def _stop_all(self) -> None:
        for slot in reversed(list(self._slots.values())):
            self._stop_slot(slot)
        self._publish_children()

    def _publish_children(self) -> None:
        """Publish the children meant to run: running, being restarted, or given up."""
        self.actor_stats.children = tuple(
            s.path for s in self._slots.values() if s.ref is not None or s.down
        )

    def _report(self, event: str, **fields: object) -> None:
        """Log a supervisor report: one line, key=value, greppable."""
        details = " ".join(f"{key}={value}" for key, value in fields.items())
        log.warning("supervisor report: supervisor=%s event=%r %s", self.path, event, details)


_gc_lock = threading.Lock()
_gc_pausers = 0
"""How many `gc_paused` blocks are running now."""
_gc_resume = False
"""Whether the collector was on when the first of them began."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a burst of allocations (any thread).

    Starting thousands of actors allocates hundreds of thousands of long-lived objects;
    with the collector on, each full collection on the way walks every object in the
    process again (0.45 s of 5,000 VMs' recovery, in pauses of up to 0.17 s). Paused,
    reference counting frees memory as usual and only cycles wait. On leaving, the
    survivors join the oldest generation at once (`gc.freeze()` then `gc.unfreeze()`:
    no traversal) instead of being walked by the young generations' next collections,
    unless something else froze objects on purpose.

    Nests and overlaps safely across threads: the collector is switched off by the
    first pauser, if it was on, and back on when the last one leaves. Any thread;
    blocks only on a short lock; raises nothing of its own.
    """
    global _gc_pausers, _gc_resume  # noqa: PLW0603 - one process-wide collector
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_resume:
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()


def _wants_restart(restart: Restart, reason: ExitReason) -> bool:
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return reason is ExitReason.CRASH
    return False


def supervisor_spec(  # noqa: PLR0913 - keyword-only settings of one spec
    child_id: str,
    *,
    flags: SupervisorFlags,
    children: Sequence[ChildSpec] = (),
    registry: Registry,
    clock: Clock | None = None,
    restart: Restart = Restart.PERMANENT,
    start_timeout: float = 120.0,
    shutdown_timeout: float = 30.0,
) -> ChildSpec:
    """Return the spec of a child that is itself a supervisor.

    The children are validated now, so a bad tree fails where it is described.
    """
    flags.validate()
    validate_children(children)

    def start(link: Link) -> pykka.ActorRef[Any]:
        return Supervisor.spawn(
            link, flags=flags, children=children, registry=registry, clock=clock
        )

    return ChildSpec(
        id=child_id,
        start=start,
        restart=restart,
        start_timeout=start_timeout,
        shutdown_timeout=shutdown_timeout,
        kind=ChildKind.SUPERVISOR,
    )


# -- the caller's side --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SupervisorHandle:
    """A typed way to talk to a supervisor; every call has a deadline.

    Blocks the calling thread for at most `timeout` seconds (plus the child's own
    start timeout for the calls that start one). Never call it from the
    supervisor's own children: asks go down, not up.
    """

    ref: pykka.ActorRef[Supervisor]
    timeout: float = 10.0

    def start_child(self, spec: ChildSpec) -> str:
        """Add and start a child; return its path. Raises AlreadyExists, StartFailed."""
        path: str = ask(self.ref, StartChild(spec), timeout=self.timeout + spec.start_timeout)
        return path

    def start_children(self, specs: Sequence[ChildSpec]) -> list[str | HostvisorError]:
        """Add and start many children, their `on_start`s in parallel (`StartChildren`)."""
        timeout = self.timeout + max((spec.start_timeout for spec in specs), default=0.0)
        answers: list[str | HostvisorError] = ask(
            self.ref, StartChildren(tuple(specs)), timeout=timeout
        )
        return answers

    def terminate_child(self, child_id: str) -> None:
        """Stop a child for good (until restart_child). Raises NotFound."""
        ask(self.ref, TerminateChild(child_id), timeout=self.timeout)

    def delete_child(self, child_id: str) -> None:
        """Forget a terminated child. Raises NotFound, Conflict if it runs."""
        ask(self.ref, DeleteChild(child_id), timeout=self.timeout)

    def restart_child(self, child_id: str) -> str:
        """Start a terminated child again. Raises NotFound, Conflict, StartFailed."""
        path: str = ask(self.ref, RestartChild(child_id), timeout=self.timeout)
        return path

    def which_children(self) -> tuple[ChildInfo, ...]:
        """Return the children in start order."""
        children: tuple[ChildInfo, ...] = ask(self.ref, WhichChildren(), timeout=self.timeout)
        return children

    def with_timeout(self, timeout: float) -> SupervisorHandle:
        """Return the same handle with another deadline."""
        return replace(self, timeout=timeout)
