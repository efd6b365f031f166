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
class SupervisorFlags:
    """A supervisor's strategy and restart budget (at most `intensity` in `period` s)."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 3
    period: float = 5.0

    def validate(self) -> None:
        """Raise `InvalidArgument` if the flags make no sense."""
        if not isinstance(self.strategy, Strategy):
            raise InvalidArgument(reason="strategy must be a Strategy")
        if not isinstance(self.intensity, int) or self.intensity < 0:
            raise InvalidArgument(reason="intensity must be an int >= 0")
        if not isinstance(self.period, int | float) or self.period <= 0:
            raise InvalidArgument(reason="period must be > 0")


def validate_children(specs: Sequence[ChildSpec]) -> None:
    """Validate each spec and that their ids are unique."""
    seen: set[str] = set()
    for spec in specs:
        spec.validate()
        if spec.id in seen:
            raise InvalidArgument(child=spec.id, reason="duplicate child id")
        seen.add(spec.id)
