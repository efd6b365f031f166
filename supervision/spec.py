"""Child specifications and supervisor flags, validated before anything starts."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import Link
from hostvisor.actors.errors import InvalidArgument

StartFn = Callable[[Link], pykka.ActorRef[Any]]
"""Starts one incarnation of a child, linked by the given link; must not block."""


class Restart(enum.Enum):
    """When a child that has exited is started again (OTP's restart types)."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """Only after a crash; a normal or shutdown exit is final."""
    TEMPORARY = "temporary"
    """Never; the child is forgotten once it exits."""


class Strategy(enum.Enum):
    """Which children restart when one of them has to."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that exited."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped in reverse order, then all start in order."""
    REST_FOR_ONE = "rest_for_one"
    """The child that exited and every child started after it."""


class ChildKind(enum.Enum):
    """What a child is; a supervisor child gets a longer default shutdown."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


_CHILD_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """How to start, restart and stop one child of a supervisor.

    Attributes:
        id: unique among its siblings; the last part of the child's path.
        start: starts the child linked to its supervisor (see `StartFn`).
        restart: when the child is started again after it exits.
        shutdown_timeout: seconds to wait for it to stop before it is abandoned.
        start_timeout: seconds to wait for its `on_start` before it is a failure.
        kind: worker or supervisor.
    """

    id: str
    start: StartFn
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    start_timeout: float = 30.0
    kind: ChildKind = ChildKind.WORKER

    def validate(self) -> None:
        """Raise `InvalidArgument` naming the first thing wrong with this spec."""
        if not _CHILD_ID.match(self.id):
            raise InvalidArgument(child=self.id, reason="child id must match " + _CHILD_ID.pattern)
        if not callable(self.start):
            raise InvalidArgument(child=self.id, reason="start must be callable")
        if not isinstance(self.restart, Restart):
            raise InvalidArgument(child=self.id, reason="restart must be a Restart")
        if not isinstance(self.kind, ChildKind):
            raise InvalidArgument(child=self.id, reason="kind must be a ChildKind")
        for name in ("shutdown_timeout", "start_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise InvalidArgument(child=self.id, reason=f"{name} must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildBudget:
    """Each child's own restart budget, and how a child past it is retried.

    A child restarted more than `intensity` times in `period` seconds is given up:
    it is not restarted at once, it does not spend its supervisor's budget any
    further, and it is started again after a backoff of `backoff` seconds, doubled
    after each give-up up to `max_backoff` (Kubernetes' crash-loop backoff). A child
    that then runs `period` seconds without crashing has its budget and backoff reset.
    `escalate_after`: the supervisor escalates after this many failed starts of one
    child in a row — the tree truly cannot run that child (None: never).
    See `hostvisor.supervision.supervisor` for the whole policy.
    """

    intensity: int = 3
    period: float = 30.0
    backoff: float = 5.0
    max_backoff: float = 60.0
    escalate_after: int | None = None

    def delay(self, backoffs: int) -> float:
        """The backoff before the retry that follows `backoffs` earlier give-ups in a row."""
        return float(min(self.backoff * 2 ** min(backoffs, 32), self.max_backoff))

    def validate(self) -> None:
        """Raise `InvalidArgument` if the budget makes no sense."""
        if not isinstance(self.intensity, int) or self.intensity < 0:
            raise InvalidArgument(reason="per_child.intensity must be an int >= 0")
        for name in ("period", "backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise InvalidArgument(reason=f"per_child.{name} must be > 0")
        if self.escalate_after is not None and (
            not isinstance(self.escalate_after, int) or self.escalate_after < 1
        ):
            raise InvalidArgument(reason="per_child.escalate_after must be None or an int >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorFlags:
    """A supervisor's strategy and restart budget (at most `intensity` in `period` s).

    `per_child`: each child's own budget (`ChildBudget`); None: OTP's plain rule,
    where every restart spends the supervisor's budget and nothing else limits a child.
    Only a one_for_one supervisor may have one (in the other strategies a child's
    restart restarts its siblings, so it is not the child's own business).
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 3
    period: float = 5.0
    per_child: ChildBudget | None = None

    def validate(self) -> None:
        """Raise `InvalidArgument` if the flags make no sense."""
        if not isinstance(self.strategy, Strategy):
            raise InvalidArgument(reason="strategy must be a Strategy")
        if not isinstance(self.intensity, int) or self.intensity < 0:
            raise InvalidArgument(reason="intensity must be an int >= 0")
        if not isinstance(self.period, int | float) or self.period <= 0:
            raise InvalidArgument(reason="period must be > 0")
        if self.per_child is not None:
            if not isinstance(self.per_child, ChildBudget):
                raise InvalidArgument(reason="per_child must be a ChildBudget or None")
            if self.strategy is not Strategy.ONE_FOR_ONE:
                raise InvalidArgument(reason="per_child needs the one_for_one strategy")
            self.per_child.validate()


def validate_children(specs: Sequence[ChildSpec]) -> None:
    """Validate each spec and that their ids are unique."""
    seen: set[str] = set()
    for spec in specs:
        spec.validate()
        if spec.id in seen:
            raise InvalidArgument(child=spec.id, reason="duplicate child id")
        seen.add(spec.id)


RESOURCE_CHILD_BUDGET = ChildBudget(intensity=3, period=30.0, backoff=5.0, max_backoff=60.0)
"""Each resource actor's own budget (a VM, a container, a storage domain, a network).

Three restarts in 30 s cover a crash and its aftershocks; a fourth means the actor
crash-loops on something of its own, so it is given up and started again after 5,
10, 20, 40, 60, 60 … s (re-reading its resource each time), while its siblings and
its branch carry on. Used as `per_child` by every dynamic supervisor.
"""

ROOT_FLAGS = SupervisorFlags(
    intensity=30,
    period=30.0,
    per_child=ChildBudget(
        intensity=3, period=30.0, backoff=1.0, max_backoff=30.0, escalate_after=8
    ),
)
"""The root's: each branch may be restarted 3 times in 30 s, then it is given up and
retried after 1, 2, 4 … 30 s while the other branches run. The branches (eight today)
together can thus restart at most 24 times in 30 s: the root-wide 30 is a last resort
against a bug, not a limit a drill reaches. The root escalates (the agent exits for
systemd to restart it) when one branch has failed to start 8 times in a row — about
30 s of, say, libvirt refusing every connection: the tree truly cannot run."""
