"""Actors on the scheduler: threads for busy actors only, pykka's guarantees kept."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from hostvisor.actors.actor import Actor, Link, ask
from hostvisor.actors.clock import MonotonicClock
from hostvisor.actors.mailbox import Mailbox
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.scheduler import Scheduler
from hostvisor.actors.timers import Timers
from hostvisor.actors.work import WorkPool
from tests.harness.waiting import wait_for


def quick_runtime() -> Runtime:
    """A runtime whose idle scheduler workers leave after 0.2 s."""
    clock = MonotonicClock()
    return Runtime(
        clock=clock,
        timers=Timers(clock),
        work=WorkPool(max_workers=4),
        scheduler=Scheduler(idle_seconds=0.2, name="test-sched"),
    )


class Counter(Actor):
    """Counts what it is told; notices if two threads ever run it at once."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.gate = gate
        self.seen: dict[int, list[int]] = {}
        self.inside = False
        self.overlaps = 0

    def on_receive(self, message: Any) -> Any:
        if self.inside:
            self.overlaps += 1
        self.inside = True
        try:
            if message == "block":
                assert self.gate is not None
                self.gate.wait(10)
                return "unblocked"
            if message == "report":
                return self.seen, self.overlaps
            sender, n = message
            self.seen.setdefault(sender, []).append(n)
            return None
        finally:
            self.inside = False


def spawn(runtime: Runtime, path: str, *args: Any) -> pykka.ActorRef[Any]:
    link = Link(path=path, runtime=runtime)
    ref = Counter.spawn(link, *args)
    link.started.get(timeout=5)
    return ref


@pytest.mark.unit
def test_a_mailbox_asks_for_one_turn_until_released():
    turns: list[object] = []
    mailbox = Mailbox()
    mailbox.bind(lambda: None, turns.append)
    assert len(turns) == 1  # the start is the first turn
    mailbox.put(pykka_envelope("a"))
    assert len(turns) == 1  # scheduled already: no second turn
    assert mailbox.next() is not None
    assert mailbox.release() is False  # empty: the turn ends
    mailbox.put(pykka_envelope("b"))
    assert len(turns) == 2  # idle: a new turn
    mailbox.put(pykka_envelope("c"))
    assert len(turns) == 2
    refused: list[Any] = []
    mailbox.close(refused.append)
    mailbox.put(pykka_envelope("late"))
    assert [e.message for e in refused] == ["b", "c", "late"]
    assert len(turns) == 2


def pykka_envelope(message: str) -> Any:
    from pykka._envelope import Envelope  # noqa: PLC0415 - pykka internal, test only

    return Envelope(message)


def test_idle_actors_hold_no_threads():
    runtime = quick_runtime()
    before = threading.active_count()
    refs = [spawn(runtime, f"idle/{n}") for n in range(300)]
    for n, ref in enumerate(refs):
        ref.tell((0, n))
    assert all(ask(ref, "report", timeout=5)[0] == {0: [n]} for n, ref in enumerate(refs))
    wait_for(
        lambda: threading.active_count() <= before + 1,  # + the timer service's thread
        10,
        "300 idle actors to give back every scheduler thread",
    )
    assert runtime.scheduler.statistics().workers == 0
    for ref in refs:
        ref.stop()


def test_a_blocked_actor_does_not_stop_the_others():
    runtime = quick_runtime()
    gate = threading.Event()
    blocked = spawn(runtime, "blocked", gate)
    other = spawn(runtime, "other")
    answer = blocked.ask("block", block=False)
    wait_for(lambda: blocked.actor_inbox.qsize() == 0, 5, "the block to be taken")
    assert ask(other, "report", timeout=5) == ({}, 0)
    gate.set()
    assert answer.get(timeout=5) == "unblocked"
    blocked.stop()
    other.stop()


def test_concurrent_senders_lose_nothing_and_keep_their_order():
    runtime = quick_runtime()
    ref = spawn(runtime, "counter")
    senders, each = 8, 3_000

    def send(sender: int) -> None:
        for n in range(each):
            ref.tell((sender, n))

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen, overlaps = ask(ref, "report", timeout=10)
    assert overlaps == 0  # never two turns at once
    assert seen == {s: list(range(each)) for s in range(senders)}
    ref.stop()


def test_an_ask_to_an_ended_actor_fails_at_once():
    runtime = quick_runtime()
    ref = spawn(runtime, "ending")
    ref.stop(block=True, timeout=5)
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("report", timeout=5)
