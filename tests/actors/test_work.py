"""The work facility: blocking work runs on bounded workers and comes back as a message."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hostvisor.actors.actor import Actor, Link, ask
from hostvisor.actors.clock import ManualClock
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.work import WorkPool
from tests.harness.waiting import wait_for


def test_a_pool_never_runs_more_workers_than_its_bound_and_queues_the_rest():
    pool = WorkPool(max_workers=2, idle_seconds=0.2, name="test-work")
    release = threading.Event()
    futures = [pool.submit(lambda n=n: release.wait(10) and n, name=f"job{n}") for n in range(5)]
    wait_for(lambda: pool.statistics().busy == 2, 5, "two busy workers")
    stats = pool.statistics()
    assert (stats.workers, stats.queued) == (2, 3)
    release.set()
    assert [f.get(timeout=5) for f in futures] == [0, 1, 2, 3, 4]
    wait_for(lambda: pool.statistics().workers == 0, 5, "idle workers to leave")
    assert pool.statistics().done == 5


def test_an_exception_in_work_is_handed_to_the_waiter():
    pool = WorkPool(max_workers=1, name="test-work")
    future = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        future.get(timeout=5)


class Asker(Actor):
    """Runs blocking work off its thread and stays responsive meanwhile."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.outcomes: list[Any] = []
        self.threads: list[str] = []

    def on_receive(self, message: Any) -> Any:
        if message == "start":
            self.run_off(self._blocking, self._done, name="wait-gate")
            self.run_off(lambda: 1 / 0, self._done, name="fails")
            return None
        if message == "outcomes":
            return list(self.outcomes)
        if message == "threads":
            return list(self.threads)
        return None

    def _blocking(self) -> str:
        self.gate.wait(10)
        return "opened"

    def _done(self, outcome: Any) -> None:
        self.threads.append(threading.current_thread().name)
        self.outcomes.append(outcome)


def test_run_off_keeps_the_actor_responsive_and_reports_on_its_own_thread():
    gate = threading.Event()
    ref = Asker.start(gate)
    try:
        ask(ref, "start", timeout=5)
        # The blocking work holds a worker, not the actor: it still answers.
        wait_for(lambda: len(ask(ref, "outcomes", timeout=1)) == 1, 5, "the failure")
        [failure] = ask(ref, "outcomes", timeout=1)
        assert isinstance(failure, ZeroDivisionError)
        gate.set()
        wait_for(lambda: len(ask(ref, "outcomes", timeout=1)) == 2, 5, "both outcomes")
        assert ask(ref, "outcomes", timeout=1)[1] == "opened"
        assert all(name.startswith("actor:") for name in ask(ref, "threads", timeout=1))
    finally:
        ref.stop()


class Ticking(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def on_start(self) -> None:
        self.tick_every(5, "tick")

    def on_receive(self, message: Any) -> Any:
        if message == "tick":
            self.ticks += 1
        return self.ticks


def test_an_actor_ticks_on_its_trees_clock_and_stops_ticking_when_it_stops():
    clock = ManualClock()
    runtime = Runtime.make(clock)
    ref = Ticking.spawn(Link(path="ticking", runtime=runtime))
    assert ask(ref, "count", timeout=5) == 0
    clock.advance(5)
    wait_for(lambda: ask(ref, "count", timeout=1) == 1, 5, "one tick")
    clock.advance(10)
    wait_for(lambda: ask(ref, "count", timeout=1) == 3, 5, "three ticks")
    ref.stop()
    clock.advance(5)
    wait_for(lambda: runtime.timers.pending() == 0, 5, "the ticker to be dropped")
