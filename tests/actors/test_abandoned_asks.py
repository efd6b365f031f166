"""An ask whose asker gave up is not handled late: the actor drops it from its mailbox."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from hostvisor.actors.actor import Actor, Link, ask
from hostvisor.actors.errors import Timeout, Unavailable
from hostvisor.actors.future import Later


class Busy(Actor):
    """Blocks on a gate when told to; counts the work it did."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.done: list[str] = []

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            self.gate.wait(10)
        elif message == "count":
            return list(self.done)
        else:
            self.done.append(message)
        return None


def test_an_ask_that_timed_out_in_the_mailbox_is_skipped_not_run_late():
    gate = threading.Event()
    link = Link(path="busy")
    ref = Busy.spawn(link, gate)
    try:
        ref.tell("block")
        with pytest.raises(Timeout):
            ask(ref, "late work", timeout=0.05)
        ref.tell("told work")  # a tell has no asker to give up: it is always handled
        gate.set()
        assert ask(ref, "count", timeout=5) == ["told work"]
        assert link.stats.skipped == 1
    finally:
        ref.stop()


class Promiser(Actor):
    """Answers "later" with a `Later` it never settles, then dies when told."""

    def on_receive(self, message: Any) -> Any:
        if message == "later":
            return Later()
        if message == "die":
            raise RuntimeError("told to die")
        return None


def test_an_answer_promised_by_an_actor_that_dies_fails_at_once_not_at_the_timeout():
    ref = Promiser.start()
    pending = ref.ask("later", block=False)
    ref.tell("die")
    started = time.monotonic()
    with pytest.raises(Unavailable):  # a transient error: the promise was not the crash
        pending.get(timeout=10)
    assert time.monotonic() - started < 2


def test_an_answer_promised_by_an_actor_that_stops_fails_as_unavailable():
    ref = Promiser.start()
    pending = ref.ask("later", block=False)
    ref.stop()
    with pytest.raises(Unavailable):
        pending.get(timeout=10)
