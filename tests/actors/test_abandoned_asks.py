"""An ask whose asker gave up is not handled late: the actor drops it from its mailbox."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hostvisor.actors.actor import Actor, Link, ask
from hostvisor.actors.errors import Timeout


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
