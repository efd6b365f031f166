"""Actors made for supervision tests: they crash, stop, hang and report on command."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from hostvisor.actors.actor import Actor, ExitReason, Link


@dataclass
class Journal:
    """What every probe did, shared by the probes of one test (test-side only)."""

    starts: list[str] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def record(self, kind: str, name: str) -> None:
        with self.changed:
            getattr(self, kind).append(name)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[Journal], bool], timeout: float = 5.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"timed out; starts={self.starts} stops={self.stops}")

    def count(self, kind: str, name: str) -> int:
        with self.lock:
            return getattr(self, kind).count(name)


@dataclass(frozen=True)
class Crash:
    """Tell: raise an unexpected exception in a tell handler."""


@dataclass(frozen=True)
class CrashAsk:
    """Ask: raise an unexpected exception while answering."""


@dataclass(frozen=True)
class ExitWith:
    """Tell: exit with this reason."""

    reason: ExitReason


@dataclass(frozen=True)
class Hang:
    """Tell: block the actor's thread until the event is set."""

    release: threading.Event


@dataclass(frozen=True)
class Ping:
    """Ask: answer "pong"."""


class Probe(Actor):
    """A worker that records its starts and stops and obeys the messages above."""

    def __init__(
        self, *, name: str, journal: Journal, fail_start: Callable[[], bool] = lambda: False
    ) -> None:
        super().__init__()
        self.name = name
        self.journal = journal
        self.fail_start = fail_start

    def on_start(self) -> None:
        if self.fail_start():
            raise RuntimeError(f"{self.name} refuses to start")
        self.journal.record("starts", self.name)

    def on_stop(self) -> None:
        self.journal.record("stops", self.name)

    def on_failure(self, *_exc_info: object) -> None:
        self.journal.record("stops", self.name)

    def on_receive(self, message: Any) -> Any:
        match message:
            case Ping():
                return "pong"
            case Crash() | CrashAsk():
                raise RuntimeError(f"{self.name} crashes on purpose")
            case ExitWith(reason):
                self.exit(reason)
            case Hang(release):
                release.wait(30)
        return None


def probe_start(name: str, journal: Journal, **kwargs: Any) -> Callable[[Link], Any]:
    def start(link: Link) -> pykka.ActorRef[Any]:
        return Probe.spawn(link, name=name, journal=journal, **kwargs)

    return start
