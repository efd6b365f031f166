"""The actor every Hostvisor actor is: a pykka actor that can be supervised.

pykka has no links, so death watch is built here: every actor is started with a
`Link` from its supervisor, and when the actor ends, for whatever reason, the
link's `notify` receives one `Exit`. The actor also keeps `ActorStats`, the
counters the introspection console and the metrics read.

Threads: an actor owns no thread. Its `Mailbox` asks the tree's scheduler for a
turn when a message reaches an idle actor; the turn runs on a worker thread
(named `actor:<path>` meanwhile), handles messages one at a time until the mailbox
is empty, and gives the worker back. One turn at a time per actor, messages in
order, `on_start` first: pykka's guarantees, without a parked thread per idle
actor (a host with thousands of guests would otherwise hold thousands of threads).

Crash policy ("crash, don't limp"):
- an ask whose handler raises a `CallerError`-or-other `HostvisorError` returns the
  error to the caller and the actor carries on: that is an expected failure;
- any other exception, in an ask, a tell or `on_start`, crashes the actor: it is
  logged with its traceback, the caller of an ask gets `ActorCrashed`, pending asks
  get `pykka.ActorDeadError`, and the supervisor is told.

This module overrides pykka 4's loop hooks (`_create_actor_inbox`,
`_start_actor_loop`, `_actor_loop_setup`, `_stop` and `_handle_failure`) and
replaces its loop with `_turn`.
They are private, so pykka is pinned to 4.x and tests/supervision covers each path.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pykka
from pykka import messages as pykka_messages

from hostvisor.actors.clock import Clock
from hostvisor.actors.errors import (
    ActorCrashed,
    HostvisorError,
    StartFailed,
    Timeout,
    Unavailable,
)
from hostvisor.actors.future import CallbackFuture as CallbackFuture  # noqa: PLC0414 - re-export (mypy)
from hostvisor.actors.future import FollowingFuture, Later
from hostvisor.actors.mailbox import Mailbox
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.timers import Timer

log = logging.getLogger(__name__)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ExitReason(enum.Enum):
    """Why an actor's thread ended, in OTP's terms."""

    NORMAL = "normal"
    """Stopped without error: by `stop()` or by returning from its work."""
    SHUTDOWN = "shutdown"
    """Stopped itself with `exit(ExitReason.SHUTDOWN)`: done on purpose, not a crash."""
    CRASH = "crash"
    """Died of an unexpected exception."""


class ActorState(enum.Enum):
    """Where an actor is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """Told up to the supervisor when an actor's thread has ended."""

    path: str
    incarnation: int
    reason: ExitReason
    error: str | None = None


@dataclass(slots=True)
class ActorStats:
    """Counters of one actor, written only by the actor's own thread.

    Readers on other threads (introspection) see each field atomically, which is
    all they need: a snapshot, not a transaction. This lets a stuck actor still be
    inspected, which is when inspection matters most.
    """

    state: ActorState = ActorState.STARTING
    handled: int = 0
    skipped: int = 0
    """Asks dropped unhandled because their asker had given up (timed out)."""
    last_handling_seconds: float = 0.0
    busy_since: float | None = None
    children: tuple[str, ...] = ()
    busy_total_seconds: float = 0.0
    """Time spent handling messages since this incarnation started."""
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    """Messages handled per latency bucket: index i counts handlings that took at most
    `LATENCY_BOUNDS[i]` seconds (and more than the bound before); the last, longer ones.
    One list item bumped per message by the owner; readers copy it (no lock)."""


LATENCY_BOUNDS: tuple[float, ...] = (
    *(m * 10.0**e for e in range(-5, 1) for m in (1.0, 2.5, 5.0)),
    10.0,
)
"""Upper bounds (seconds) of the handling-latency buckets: 10 us to 10 s, 1-2.5-5 steps."""


@dataclass(frozen=True, slots=True)
class WorkDone:
    """Told to an actor by the work facility: blocking work it ran off its thread ended."""

    then: Callable[[Any], Any]
    outcome: Any
    """The work's return value, or the exception it raised."""


@dataclass(frozen=True, slots=True)
class Kill:
    """Tell (an operator's or a drill's): crash now, as if the handler had failed.

    OTP's `exit(Pid, kill)`: the actor dies with `Killed`, its supervisor restarts it
    within its budget. For drills and the introspection console; never a client's lever.
    """

    reason: str = "killed"


class Killed(Exception):
    """The crash a `Kill` causes."""


def _ignore_exit(_exit: Exit) -> None:
    """Where an unsupervised actor reports its exit: nowhere."""


@dataclass(slots=True, kw_only=True)
class Link:
    """What a supervisor hands a child it starts; the child's only tie to it.

    Made by the supervisor for one incarnation of one child. The child's thread
    settles `started` once `on_start` has returned (or raised), and calls `notify`
    exactly once as its thread ends.
    """

    path: str
    incarnation: int = 0
    notify: Callable[[Exit], None] = _ignore_exit
    started: pykka.ThreadingFuture[None] = field(default_factory=pykka.ThreadingFuture)
    stats: ActorStats = field(default_factory=ActorStats)
    runtime: Runtime = field(default_factory=Runtime.default)
    """The tree's clock, timers and workers; a supervisor passes its own to each child."""

    @classmethod
    def unsupervised(cls, path: str) -> Link:
        """Return a link for an actor that nobody supervises (benchmarks, tools)."""
        return cls(path=path)


class Actor(pykka.ThreadingActor):
    """Base of every Hostvisor actor and supervisor.

    Start it with `spawn(link, ...)`, not pykka's `start()`, so that it is linked.
    Hooks keep pykka's meaning: `on_start` runs in the actor's thread before any
    message; `on_stop` after a clean stop; `on_failure` after a crash.
    """

    link: Link
    actor_stats: ActorStats
    """Counters read by introspection (named like pykka's `actor_*` attributes)."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        """A mailbox that asks the scheduler for a turn instead of waking a thread."""
        return Mailbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        """Reply futures that run callbacks and follow a `Later` answer (`future`)."""
        return FollowingFuture()

    @classmethod
    def spawn(cls, link: Link, /, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Construct the actor in the calling thread and start its own thread.

        Does not block; wait on `link.started` to know how `on_start` went.
        """
        actor = cls(*args, **kwargs)
        actor.link = link
        actor.actor_stats = link.stats
        actor._exit_reason = ExitReason.NORMAL
        actor._exit_error = None
        actor._crash_info = None
        actor._ticking = []
        actor._started = False
        actor._promised = {}
        actor._thread_name = f"actor:{link.path}"
        pykka.ActorRegistry.register(actor.actor_ref)
        actor._start_actor_loop()
        return actor.actor_ref

    _exit_reason: ExitReason
    _exit_error: str | None
    _crash_info: ExcInfo | None
    _ticking: list[Timer]
    _started: bool
    _promised: dict[int, Later]
    _thread_name: str

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Start unsupervised (pykka's entry point); prefer `spawn`."""
        return cls.spawn(Link.unsupervised(cls.__name__), *args, **kwargs)

    @property
    def path(self) -> str:
        """The actor's address in the supervision tree, such as `vms/<uuid>`."""
        return self.link.path

    @property
    def runtime(self) -> Runtime:
        """The tree's clock, timer service and work facility (from the link)."""
        return self.link.runtime

    @property
    def clock(self) -> Clock:
        """The clock this actor reads time from (`runtime.clock`)."""
        return self.link.runtime.clock

    def tick_every(self, interval: float, message: Any, *, first: float | None = None) -> Timer:
        """Be told `message` every `interval` seconds (the first after `first`) while alive.

        Served by the timer service (no thread of its own); it stops when this actor
        exits, however it exits, so no actor needs an `on_stop` just for that.
        """
        timer = self.runtime.timers.tick_every(interval, self.actor_ref, message, first=first)
        self._ticking.append(timer)
        return timer

    def tell_later(self, delay: float, message: Any) -> Timer:
        """Be told `message` once, in `delay` seconds (dropped if this actor is gone by then)."""
        return self.runtime.timers.tell_later(delay, self.actor_ref, message)

    def run_off(
        self,
        work: Callable[[], Any],
        then: Callable[[Any], Any],
        *,
        name: str = "work",
    ) -> CallbackFuture:
        """Run blocking `work()` on the work facility; handle its outcome back here.

        Call it from the actor's own thread. Does not block. When `work` ends, this
        actor is told a `WorkDone` and `then(outcome)` runs on the actor's thread,
        where `outcome` is `work`'s return value or the exception it raised (an
        instance, so `then` decides; re-raising it crashes the actor as any handler
        error would). Dropped if the actor has stopped meanwhile. Returns the
        worker's future (for tests and introspection; do not wait on it here).
        """
        future = self.runtime.work.submit(work, name=f"{self.path}:{name}")
        ref = self.actor_ref

        def report(settled: CallbackFuture) -> None:
            try:
                outcome = settled.get(timeout=0)
            except BaseException as error:  # noqa: BLE001 - handed to `then` as a value
                outcome = error
            try:
                ref.tell(WorkDone(then=then, outcome=outcome))
            except pykka.ActorDeadError:
                log.debug("%s stopped before its %s finished; result dropped", ref, name)

        future.add_done_callback(report)
        return future

    def _handle_receive(self, message: Any) -> Any:
        if type(message) is WorkDone:
            return message.then(message.outcome)
        if type(message) is Kill:
            raise Killed(message.reason)
        return super()._handle_receive(message)

    def exit(self, reason: ExitReason = ExitReason.NORMAL, error: str | None = None) -> None:
        """Stop now, reporting `reason` (and `error`, if given) to the supervisor.

        Call it from the actor's own thread, in a handler or `on_start`: `on_stop`
        runs at once, the current message is the last one handled, and asks still
        in the mailbox fail with `pykka.ActorDeadError`.
        """
        self._exit_reason = reason
        self._exit_error = error
        self._stop()

    # -- pykka loop hooks -------------------------------------------------------------

    def _start_actor_loop(self) -> None:
        mailbox: Mailbox = self.actor_inbox  # type: ignore[assignment]
        mailbox.bind(self._turn, self.link.runtime.scheduler.submit)

    def _turn(self) -> None:
        """Handle messages until the mailbox is empty or the actor ends (a worker thread).

        The first turn runs `on_start`. A turn that sees the actor ended closes the
        mailbox and reports the exit: that is the last turn.
        """
        thread = threading.current_thread()
        thread.name = self._thread_name
        mailbox: Mailbox = self.actor_inbox  # type: ignore[assignment]
        if not self._started:
            self._started = True
            self._actor_loop_setup()
        stopped = self.actor_stopped
        while not stopped.is_set():
            envelope = mailbox.next()
            if envelope is None:
                if mailbox.release():
                    continue
                return
            self._handle_envelope(envelope)
        mailbox.close(self._refuse_dead)
        self._break_promises()
        self._report_exit()

    def _actor_loop_setup(self) -> None:
        try:
            self.on_start()
        except Exception as error:  # noqa: BLE001 - any error in on_start is a crash
            self._crash(sys.exc_info())  # type: ignore[arg-type]
            failure = StartFailed(child=self.path, reason=f"{type(error).__name__}: {error}")
            self.link.started.set_exception(exc_info=(StartFailed, failure, None))
        else:
            self.actor_stats.state = ActorState.RUNNING
            self.link.started.set(None)

    def _handle_envelope(self, envelope: Any) -> None:
        stats = self.actor_stats
        reply = envelope.reply_to
        if reply is not None and getattr(reply, "abandoned", False):
            # Its asker gave up before we got to it: do not do the work late.
            stats.skipped += 1
            gave_up = Timeout(actor=self.path, reason="abandoned")
            reply.set_exception(exc_info=(Timeout, gave_up, None))
            return
        stats.busy_since = started = time.perf_counter()
        try:
            response = self._handle_receive(envelope.message)
        except HostvisorError:
            self._refuse(envelope, sys.exc_info())  # type: ignore[arg-type]
        except BaseException:  # noqa: BLE001 - a crash, reported to the supervisor
            self._crash(sys.exc_info())  # type: ignore[arg-type]
            if reply is not None:
                reply.set_exception(exc_info=(ActorCrashed, ActorCrashed(path=self.path), None))
        else:
            if reply is not None:
                if type(response) is Later:
                    self._promise(response)
                reply.set(response)
        finally:
            stats.busy_since = None
            stats.handled += 1
            stats.last_handling_seconds = took = time.perf_counter() - started
            stats.busy_total_seconds += took
            stats.latency_counts[bisect_left(LATENCY_BOUNDS, took)] += 1

    def _promise(self, later: Later) -> None:
        """Remember an answer still to come, to fail it if this actor ends first."""
        promised = self._promised
        key = id(later)
        promised[key] = later

        def kept(_settled: CallbackFuture) -> None:
            promised.pop(key, None)

        later.add_done_callback(kept)

    def _break_promises(self) -> None:
        """Fail every answer still to come: its asker must not wait for its timeout.

        Code 40, not a crash of the request: the handler that promised it returned
        fine, and the actor died later (killed, or crashed on another message). The
        caller may ask again; the restarted actor answers.
        """
        promised, self._promised = self._promised, {}
        for later in list(promised.values()):
            error = Unavailable(actor=self.path, reason="stopped before answering; ask again")
            with contextlib.suppress(Exception):  # settled meanwhile by another thread
                later.set_exception(exc_info=(type(error), error, None))

    def _refuse_dead(self, envelope: Any) -> None:
        """Answer a message that reached the actor after it ended (pykka's teardown)."""
        reply = envelope.reply_to
        if reply is None:
            return
        if isinstance(envelope.message, pykka_messages._ActorStop):  # noqa: SLF001
            reply.set(None)
        else:
            dead = pykka.ActorDeadError(f"{self.path} stopped before handling the message")
            reply.set_exception(exc_info=(pykka.ActorDeadError, dead, None))

    def _refuse(self, envelope: Any, exc_info: ExcInfo) -> None:
        """Return an expected error to the asker; in a tell, nobody hears it: a crash."""
        if envelope.reply_to is not None:
            envelope.reply_to.set_exception(exc_info=exc_info)
        else:
            self._crash(exc_info)

    def _stop(self) -> None:
        self.actor_stats.state = ActorState.STOPPING
        super()._stop()

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Record the first failure, log it once, and stop the loop."""
        if self._crash_info is None and exception_type and exception_value:
            self._crash_info = (exception_type, exception_value, traceback)
            self._exit_reason = ExitReason.CRASH
            self.actor_stats.state = ActorState.CRASHED
            log.error(
                "actor %s (%s) crashed",
                self.path,
                type(self).__name__,
                exc_info=(exception_type, exception_value, traceback),
            )
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()

    def _crash(self, exc_info: ExcInfo) -> None:
        self._handle_failure(*exc_info)
        try:
            self.on_failure(*exc_info)
        except Exception:
            log.exception("on_failure of %s raised", self.path)

    def _report_exit(self) -> None:
        for timer in self._ticking:
            timer.cancel()
        if self._exit_reason is not ExitReason.CRASH:
            self.actor_stats.state = ActorState.STOPPED
        error = self._exit_error
        if self._crash_info is not None:
            error = f"{self._crash_info[0].__name__}: {self._crash_info[1]}"
        notice = Exit(
            path=self.path,
            incarnation=self.link.incarnation,
            reason=self._exit_reason,
            error=error,
        )
        try:
            self.link.notify(notice)
        except pykka.ActorDeadError:
            log.debug("supervisor of %s is gone; exit not reported", self.path)


def ask(ref: pykka.ActorRef[Any], message: Any, *, timeout: float) -> Any:
    """Ask `ref` and wait at most `timeout` seconds for the answer.

    Blocks the calling thread. Every ask in Hostvisor goes through here or through a
    proxy future read with a timeout, so no caller ever waits forever. An ask that
    times out is abandoned: if it still waits in the mailbox, the actor drops it.

    Raises:
        Timeout: no answer within `timeout`.
        Unavailable: the actor is dead or died before answering.
        HostvisorError: whatever the actor returned as an expected error.
    """
    try:
        future = ref.ask(message, block=False)
        return future.get(timeout=timeout)
    except pykka.Timeout:
        if isinstance(future, CallbackFuture):
            future.abandon()  # not handled late if it is still in the mailbox
        raise Timeout(actor=_ref_path(ref), timeout=timeout) from None
    except pykka.ActorDeadError:
        raise Unavailable(actor=_ref_path(ref), reason="actor is not running") from None


def link_of(ref: pykka.ActorRef[Any]) -> Link | None:
    """The `Link` of the actor behind `ref`; None for a plain pykka actor or a dead one.

    pykka's ref holds its actor weakly (`_actor_weakref`, pinned with pykka 4).
    """
    held = getattr(ref, "_actor_weakref", None)
    actor = held() if held is not None else None
    link = getattr(actor, "link", None)
    return link if isinstance(link, Link) else None


def _ref_path(ref: pykka.ActorRef[Any]) -> str:
    link = link_of(ref)
    return link.path if link is not None else ref.actor_class.__name__


def call(ref: pykka.ActorRef[Any], method: str, /, *args: Any, **kwargs: Any) -> pykka.Future[Any]:
    """Call `method` on the actor behind `ref` without waiting; return the future.

    The same message a pykka proxy sends, without building a proxy (which inspects
    the whole actor) on every call. Read the future with a timeout, or bridge it
    with `CallbackFuture.add_done_callback`.
    """
    message = pykka_messages.ProxyCall(attr_path=(method,), args=args, kwargs=kwargs)
    future: pykka.Future[Any] = ref.ask(message, block=False)
    return future
