"""Random start/crash/stop sequences against a model of a one_for_one supervisor.

Invariants checked after every step:
- the live children are exactly the model's (same ids, all registered, all answering);
- restarts within any window of `period` seconds never exceed `intensity`; one more
  and the supervisor has escalated, leaving no child alive.
"""

from __future__ import annotations

import threading
from typing import Any

import pykka
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.probes import Crash, ExitWith, Journal, Ping, probe_start
from hostvisor.actors.actor import Exit, ExitReason, Link, ask
from hostvisor.actors.errors import AlreadyExists
from hostvisor.supervision.clock import ManualClock
from hostvisor.supervision.registry import ROOT, Registry
from hostvisor.supervision.spec import ChildSpec, Restart, SupervisorFlags
from hostvisor.supervision.supervisor import Supervisor, SupervisorHandle

INTENSITY = 2
PERIOD = 10.0
ALL_NAMES = ("a", "b", "c")
RESTARTS = st.sampled_from(list(Restart))
WAIT = 5.0


class SupervisorModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.registry = Registry()
        self.journal = Journal()
        self.escalated = threading.Event()
        link = Link(path=ROOT, notify=self._on_root_exit)
        self.ref: pykka.ActorRef[Any] = Supervisor.spawn(
            link,
            flags=SupervisorFlags(intensity=INTENSITY, period=PERIOD),
            registry=self.registry,
            clock=self.clock,
        )
        link.started.get(timeout=WAIT)
        self.sup = SupervisorHandle(self.ref, timeout=WAIT)
        self.live: dict[str, Restart] = {}  # the model: running children
        self.known: dict[str, Restart] = {}  # children whose spec the supervisor keeps
        self.restart_times: list[float] = []
        self.dead = False

    def _on_root_exit(self, notice: Exit) -> None:
        if notice.reason is ExitReason.SHUTDOWN:
            self.escalated.set()

    def teardown(self) -> None:
        if self.ref.is_alive():
            self.ref.stop(block=True, timeout=WAIT)

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: not self.dead and len(self.known) < len(ALL_NAMES))
    @rule(data=st.data(), restart=RESTARTS)
    def start(self, data: st.DataObject, restart: Restart) -> None:
        name = data.draw(st.sampled_from(sorted(set(ALL_NAMES) - set(self.known))))
        self.sup.start_child(
            ChildSpec(id=name, start=probe_start(name, self.journal), restart=restart)
        )
        self.live[name] = self.known[name] = restart

    @precondition(lambda self: not self.dead and len(self.known) < len(ALL_NAMES))
    @rule(data=st.data(), restart=RESTARTS, again=st.booleans())
    def start_many(self, data: st.DataObject, restart: Restart, again: bool) -> None:
        free = sorted(set(ALL_NAMES) - set(self.known))
        names = data.draw(st.lists(st.sampled_from(free), min_size=1, unique=True))
        twice = data.draw(st.sampled_from(sorted(self.known))) if again and self.known else None
        specs = [
            ChildSpec(id=name, start=probe_start(name, self.journal), restart=restart)
            for name in [*names, *([twice] if twice else [])]
        ]
        answers = self.sup.start_children(specs)
        assert answers[: len(names)] == names
        if twice:
            assert isinstance(answers[-1], AlreadyExists)
        for name in names:
            self.live[name] = self.known[name] = restart

    @precondition(lambda self: not self.dead and self.live)
    @rule(data=st.data(), how=st.sampled_from(["crash", "crash", "normal"]))
    def kill(self, data: st.DataObject, how: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.live)))
        old = self.registry.lookup(name)
        restart = self.live[name]
        old.tell(Crash() if how == "crash" else ExitWith(ExitReason.NORMAL))
        # the supervisor forgets the old incarnation before it does anything else
        assert self.registry.wait_for(lambda r: r.get(name) is not old, WAIT)
        wants = restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and how == "crash")
        if not wants:
            del self.live[name]
            if restart is Restart.TEMPORARY:
                del self.known[name]
            self.sup.which_children()
            return
        now = self.clock.monotonic()
        window = [t for t in self.restart_times if t > now - PERIOD] + [now]
        if len(window) > INTENSITY:
            assert self.escalated.wait(WAIT), "the supervisor should have escalated"
            self.dead = True
            self.live.clear()
            return
        self.restart_times = window
        assert self.registry.wait_for(lambda r: r.get(name) not in (None, old), WAIT)

    @precondition(lambda self: not self.dead and self.known)
    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.known)))
        self.sup.terminate_child(name)
        self.live.pop(name, None)

    @precondition(lambda self: not self.dead and set(self.known) - set(self.live))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(set(self.known) - set(self.live))))
        if name:
            self.sup.delete_child(name)
            del self.known[name]

    @rule(seconds=st.sampled_from([0.5, 3.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def live_children_equal_the_model(self) -> None:
        if self.dead:
            assert not self.ref.is_alive()
            assert all(self.registry.get(n) is None for n in ALL_NAMES)
            return
        children = self.sup.which_children()
        assert {c.id for c in children if c.alive} == set(self.live)
        assert {c.id for c in children} == set(self.known)
        for name in self.live:
            assert ask(self.registry.lookup(name), Ping(), timeout=WAIT) == "pong"

    @invariant()
    def restarts_in_a_window_stay_within_intensity(self) -> None:
        now = self.clock.monotonic()
        assert len([t for t in self.restart_times if t > now - PERIOD]) <= INTENSITY


SupervisorModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSupervisorModel = SupervisorModel.TestCase
