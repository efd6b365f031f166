"""Timers: many pending tells served by one thread, in due order, cancellable."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pykka

from hostvisor.actors.clock import ManualClock
from hostvisor.actors.timers import Timers


class Recorder(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, heard: queue.Queue[Any]) -> None:
        super().__init__()
        self.heard = heard

    def on_receive(self, message: Any) -> None:
        self.heard.put(message)


def test_timers_tell_in_due_order_from_one_thread():
    heard: queue.Queue[Any] = queue.Queue()
    ref = Recorder.start(heard)
    timers = Timers(name="test-timers")
    try:
        threads_before = threading.active_count()
        for n in (3, 1, 2):
            timers.tell_later(0.05 * n, ref, n)
        for n in range(100):
            timers.tell_later(60 + n, ref, "much later")
        assert threading.active_count() == threads_before + 1
        assert [heard.get(timeout=5) for _ in range(3)] == [1, 2, 3]
        assert timers.pending() == 100
    finally:
        ref.stop()


def test_a_cancelled_timer_is_not_told_and_a_dead_actor_is_skipped():
    heard: queue.Queue[Any] = queue.Queue()
    ref = Recorder.start(heard)
    gone = Recorder.start(queue.Queue())
    gone.stop()
    timers = Timers(name="test-timers")
    try:
        timers.tell_later(0.01, gone, "to nobody")
        timers.tell_later(0.02, ref, "cancelled").cancel()
        timers.tell_later(0.1, ref, "kept")
        assert heard.get(timeout=5) == "kept"
        assert heard.empty()
        assert timers.pending() == 0
    finally:
        ref.stop()


def test_a_sooner_timer_wakes_the_thread_early():
    heard: queue.Queue[Any] = queue.Queue()
    ref = Recorder.start(heard)
    timers = Timers(name="test-timers")
    try:
        timers.tell_later(3600, ref, "in an hour")
        timers.tell_later(0.01, ref, "now")
        assert heard.get(timeout=5) == "now"
    finally:
        ref.stop()


def test_on_a_manual_clock_timers_fire_when_time_is_moved_not_before():
    heard: queue.Queue[Any] = queue.Queue()
    ref = Recorder.start(heard)
    clock = ManualClock()
    timers = Timers(clock, name="test-manual")
    try:
        timers.tell_later(30, ref, "half a minute")
        ticking = timers.tick_every(10, ref, "tick")
        clock.advance(9.9)
        assert timers.pending() == 2
        assert heard.empty()
        clock.advance(0.1)
        assert heard.get(timeout=5) == "tick"
        clock.advance(20)  # the tick of 20 s, then the one-shot and the tick of 30 s
        got = sorted(heard.get(timeout=5) for _ in range(3))
        assert got == ["half a minute", "tick", "tick"]
        ticking.cancel()
        clock.advance(100)
        assert timers.pending() in (0, 1)  # the cancelled tick leaves when it comes due
        assert heard.empty()
    finally:
        ref.stop()
