"""Serial: an actor's blocking works run one at a time, in order, off its thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from hostvisor.actors.actor import Actor, CallbackFuture, Link, call
from hostvisor.actors.errors import InvalidArgument, Unavailable
from hostvisor.actors.storage.errors import StorageError
from hostvisor.actors.storage.serial import Serial

WAIT = 10.0


class Owner(Actor):
    """An actor with one Serial queue; `add` queues a work and answers its future."""

    def on_start(self) -> None:
        self.queue = Serial(self.run_off, "owner")
        self.applied: list[Any] = []

    def add(self, work: Callable[[], Any]) -> CallbackFuture:
        return self.queue.add(work, op="work", after=self.applied.append)

    def add_made(self, make: Callable[[], Callable[[], Any]]) -> CallbackFuture:
        return self.queue.add_made(make, op="made")

    def seen(self) -> list[Any]:
        return list(self.applied)

    def on_stop(self) -> None:
        self.queue.fail_all("stopped")


@pytest.fixture
def owner() -> Iterator[pykka.ActorRef[Any]]:
    link = Link(path="test/owner")
    ref = Owner.spawn(link)
    link.started.get(timeout=WAIT)
    yield ref
    ref.stop(timeout=WAIT)


def queued(ref: pykka.ActorRef[Any], method: str, work: Any) -> CallbackFuture:
    future: CallbackFuture = call(ref, method, work).get(timeout=WAIT)
    return future


def test_works_run_one_at_a_time_in_the_order_added(owner: pykka.ActorRef[Any]):
    running = 0
    most = 0
    order: list[int] = []
    guard = threading.Lock()

    def work(n: int) -> Callable[[], int]:
        def run() -> int:
            nonlocal running, most
            with guard:
                running += 1
                most = max(most, running)
            order.append(n)
            with guard:
                running -= 1
            return n

        return run

    futures = [queued(owner, "add", work(n)) for n in range(50)]
    assert [f.get(timeout=WAIT) for f in futures] == list(range(50))
    assert order == list(range(50))
    assert most == 1
    assert call(owner, "seen").get(timeout=WAIT) == list(range(50))


def test_a_caller_error_is_answered_and_the_queue_goes_on(owner: pykka.ActorRef[Any]):
    def refuse() -> None:
        raise InvalidArgument(reason="no")

    def fail() -> None:
        raise OSError("disk on fire")

    refused, failed, fine = (queued(owner, "add", w) for w in (refuse, fail, lambda: "ok"))
    with pytest.raises(InvalidArgument):
        refused.get(timeout=WAIT)
    with pytest.raises(StorageError):
        failed.get(timeout=WAIT)
    assert fine.get(timeout=WAIT) == "ok"


def test_a_work_made_at_its_turn_may_refuse_before_running(owner: pykka.ActorRef[Any]):
    def make() -> Callable[[], Any]:
        raise InvalidArgument(reason="checked at its turn")

    with pytest.raises(InvalidArgument):
        queued(owner, "add_made", make).get(timeout=WAIT)
    assert queued(owner, "add_made", lambda: lambda: 7).get(timeout=WAIT) == 7


def test_stopping_answers_what_is_still_queued():
    link = Link(path="test/owner")
    ref = Owner.spawn(link)
    link.started.get(timeout=WAIT)
    gate = threading.Event()
    running = queued(ref, "add", gate.wait)
    waiting = queued(ref, "add", lambda: "never")
    ref.stop(timeout=WAIT)
    with pytest.raises(Unavailable):
        waiting.get(timeout=WAIT)
    with pytest.raises(Unavailable):
        running.get(timeout=WAIT)
    gate.set()
