"""The guest machinery every VM actor shares, on a guest whose "runtime" is the test.

`ScriptedGuest` is the smallest GuestActor: its one operation runs a function the
test gives. Time is a `ManualClock`: "Powering up" ends when the test moves it,
never by sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from harness.waiting import wait_for
from hostvisor.actors.actor import Link, call
from hostvisor.actors.clock import ManualClock
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.events import Event
from hostvisor.actors.guest.actor import ActorGone, GuestActor
from hostvisor.actors.guest.board import Forget, Post
from hostvisor.actors.guest.errors import UnsupportedOperation, VmOperationFailed
from hostvisor.actors.guest.status import VmStatus
from hostvisor.actors.runtime import Runtime

VM_ID = "5a3c0e8e-0000-4000-8000-000000000001"
POWERING_UP = 60.0


class ScriptedGuest(GuestActor):
    """A guest that is Up as soon as it starts; `run(work)` is its one operation."""

    guest_runtime = "script"

    def __init__(self, *, events: list[Event], posts: list[Post | Forget]) -> None:
        super().__init__(
            vm_id=VM_ID,
            described={"vmName": "scripted"},
            xml="<domain/>",
            publish=events.append,
            board=posts.append,
            powering_up=POWERING_UP,
            operation_timeout=30.0,
        )

    def on_start(self) -> None:
        self.guest.set_status(VmStatus.UP, publish=False)
        self.mark_started(self.clock.monotonic())
        self.guest.post()

    def agent_answered(self) -> None:
        self.guest.guest_is_up()

    def run(self, work: Any) -> Any:
        self.guest.require_running("run")
        return self.operation("run", work, then=lambda result: result)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def guest(clock: ManualClock) -> Iterator[tuple[pykka.ActorRef[Any], list[Event], list[Any]]]:
    events: list[Event] = []
    posts: list[Post | Forget] = []
    link = Link(path=f"vms/{VM_ID}", runtime=Runtime.make(clock))
    ref = ScriptedGuest.spawn(link, events=events, posts=posts)
    link.started.get(timeout=5)
    yield ref, events, posts
    if ref.is_alive():
        ref.stop()


def _status(ref: pykka.ActorRef[Any]) -> str:
    status: str = call(ref, "info").get(timeout=5)["status"]
    return status


def test_powering_up_ends_when_the_clock_says_so_and_is_announced(guest, clock: ManualClock):
    ref, events, posts = guest
    assert _status(ref) == "Powering up"
    assert call(ref, "stats").get(timeout=5)["elapsedTime"] == "0"

    clock.advance(POWERING_UP - 1)
    assert _status(ref) == "Powering up"
    assert events == []

    clock.advance(1)
    wait_for(lambda: events, 5, "the Up event")
    [event] = events
    assert event.method == f"|virt|VM_status|{VM_ID}"
    assert event.params[VM_ID]["status"] == "Up"
    assert _status(ref) == "Up"
    assert call(ref, "stats").get(timeout=5)["elapsedTime"] == "60"
    # The board heard of the change before the event went out.
    assert isinstance(posts[-1], Post)
    assert posts[-1].entry.reported_status(clock.monotonic()) is VmStatus.UP


def test_a_guest_that_says_it_is_up_ends_powering_up_once(guest, clock: ManualClock):
    ref, events, _posts = guest
    clock.advance(5)

    call(ref, "agent_answered").get(timeout=5)

    assert _status(ref) == "Up"
    [event] = events
    assert event.params[VM_ID]["status"] == "Up"
    clock.advance(POWERING_UP)  # the timer that would have ended it says nothing more
    call(ref, "agent_answered").get(timeout=5)
    assert call(ref, "stats").get(timeout=5)["elapsedTime"] == str(5 + int(POWERING_UP))
    assert len(events) == 1


def test_an_operation_runs_off_the_actor_which_answers_meanwhile(guest, clock: ManualClock):
    ref, _events, _posts = guest
    release = threading.Event()
    operation = call(ref, "run", lambda: release.wait(10) and "done").get(timeout=5)

    assert _status(ref) == "Powering up"  # the actor is not held by the operation
    clock.advance(31)  # past operation_timeout: the VM's monitor looks stuck
    assert call(ref, "stats").get(timeout=5)["monitorResponse"] == "-1"
    release.set()
    assert operation.get(timeout=5) == "done"
    assert call(ref, "stats").get(timeout=5)["monitorResponse"] == "0"


def test_a_failed_operation_fails_its_future_and_the_actor_carries_on(guest):
    ref, _events, _posts = guest

    def broken() -> None:
        raise OSError("the runtime said no")

    operation = call(ref, "run", broken).get(timeout=5)
    with pytest.raises(VmOperationFailed) as failed:
        operation.get(timeout=5)
    assert failed.value.code == 16
    assert "the runtime said no" in str(failed.value)
    assert _status(ref) == "Powering up"


def test_an_operation_in_flight_when_the_actor_stops_fails_with_actor_gone(guest):
    ref, _events, posts = guest
    release = threading.Event()
    operation = call(ref, "run", lambda: release.wait(10)).get(timeout=5)
    ref.stop()
    with pytest.raises(ActorGone):
        operation.get(timeout=5)
    release.set()
    assert posts[-1] == Forget(VM_ID)


@pytest.mark.parametrize(
    "verb", ["migrate", "snapshot", "hotplugDisk", "hotunplugDisk", "hotplugNic", "hotunplugNic"]
)
def test_verbs_the_runtime_declares_unsupported_answer_code_75(guest, verb: str):
    ref, _events, _posts = guest
    with pytest.raises(UnsupportedOperation) as refused:
        call(ref, verb, params={}).get(timeout=5)
    assert refused.value.code == 75
    assert "script" in str(refused.value)
    assert ref.is_alive()


@pytest.mark.parametrize("method", ["migrat", "_status", "no_such_verb"])
def test_a_method_the_actor_does_not_have_is_a_bug_not_code_75(guest, method: str):
    ref, _events, _posts = guest
    with pytest.raises(AttributeError) as raised:
        call(ref, method).get(timeout=5)
    assert not isinstance(raised.value, HostvisorError)  # the API answers it -32603
    assert method in str(raised.value)
    # The caller's bug does not crash the actor.
    assert ref.is_alive()
    assert _status(ref) == "Powering up"
