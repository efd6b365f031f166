"""The supervisor, specified as OTP's supervisor_SUITE does: a matrix of cases."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from harness.probes import Crash, CrashAsk, ExitWith, Hang, Journal, Ping, probe_start
from hostvisor.actors.actor import Actor, Exit, ExitReason, Link, ask
from hostvisor.actors.errors import (
    ActorCrashed,
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    StartFailed,
    Timeout,
)
from hostvisor.supervision.clock import ManualClock
from hostvisor.supervision.registry import ROOT, Registry, RestartInfo
from hostvisor.supervision.spec import ChildSpec, Restart, Strategy, SupervisorFlags
from hostvisor.supervision.supervisor import (
    Supervisor,
    SupervisorHandle,
    gc_paused,
    supervisor_spec,
)


class Tree:
    """A root supervisor started for one test, with what it reported when it exited."""

    def __init__(self, registry: Registry, clock: ManualClock) -> None:
        self.registry = registry
        self.clock = clock
        self.exits: list[Exit] = []
        self.exited = threading.Event()
        self.ref: pykka.ActorRef[Any] | None = None

    def start(self, *children: ChildSpec, **flags: Any) -> SupervisorHandle:
        link = Link(path=ROOT, notify=self._on_exit)
        self.ref = Supervisor.spawn(
            link,
            flags=SupervisorFlags(**flags),
            children=children,
            registry=self.registry,
            clock=self.clock,
        )
        link.started.get(timeout=10)
        self.registry.register(
            ROOT, self.ref, stats=link.stats, parent=None, restarts=RestartInfo()
        )
        return SupervisorHandle(self.ref, timeout=5)

    def _on_exit(self, notice: Exit) -> None:
        self.exits.append(notice)
        self.exited.set()

    def ref_of(self, path: str) -> pykka.ActorRef[Any]:
        return self.registry.lookup(path)


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def tree() -> Iterator[Tree]:
    tree = Tree(Registry(), ManualClock())
    yield tree
    if tree.ref is not None:
        tree.ref.stop(block=False).get(timeout=10) if tree.ref.is_alive() else None


def spec(name: str, journal: Journal, restart: Restart = Restart.PERMANENT, **kw: Any) -> ChildSpec:
    return ChildSpec(id=name, start=probe_start(name, journal, **kw), restart=restart)


def wait_restarted(journal: Journal, name: str, times: int = 2, tree: Tree | None = None) -> None:
    journal.wait_for(lambda j: j.starts.count(name) >= times)
    if tree is not None and tree.ref is not None:
        SupervisorHandle(tree.ref).which_children()  # answered once the restart completed


# -- restart type x exit reason ----------------------------------------------------------

EXIT_CAUSES = {
    "normal": lambda ref: ref.tell(ExitWith(ExitReason.NORMAL)),
    "shutdown": lambda ref: ref.tell(ExitWith(ExitReason.SHUTDOWN)),
    "crash": lambda ref: ref.tell(Crash()),
}
RESTARTS = {
    (Restart.PERMANENT, "normal"): True,
    (Restart.PERMANENT, "shutdown"): True,
    (Restart.PERMANENT, "crash"): True,
    (Restart.TRANSIENT, "normal"): False,
    (Restart.TRANSIENT, "shutdown"): False,
    (Restart.TRANSIENT, "crash"): True,
    (Restart.TEMPORARY, "normal"): False,
    (Restart.TEMPORARY, "shutdown"): False,
    (Restart.TEMPORARY, "crash"): False,
}


@pytest.mark.parametrize(("restart", "cause"), list(RESTARTS))
def test_restart_type_by_exit_reason(tree: Tree, journal: Journal, restart: Restart, cause: str):
    sup = tree.start(spec("w", journal, restart))
    EXIT_CAUSES[cause](tree.ref_of("w"))
    journal.wait_for(lambda j: "w" in j.stops)
    # a restart, if any, is done by the time the supervisor answers the next ask
    children = {c.id: c for c in sup.which_children()}
    if RESTARTS[restart, cause]:
        assert journal.starts == ["w", "w"]
        assert children["w"].alive
        assert ask(tree.ref_of("w"), Ping(), timeout=5) == "pong"
        assert tree.registry.status("w").restarts.count == 1
    else:
        assert journal.starts == ["w"]
        assert tree.registry.get("w") is None
        if restart is Restart.TEMPORARY:
            assert "w" not in children
        else:
            assert not children["w"].alive


def test_crash_in_ask_reaches_caller_and_supervisor(tree: Tree, journal: Journal):
    tree.start(spec("w", journal))
    with pytest.raises(ActorCrashed):
        ask(tree.ref_of("w"), CrashAsk(), timeout=5)
    wait_restarted(journal, "w", tree=tree)
    assert "crash" in (tree.registry.status("w").restarts.last_reason or "")


def test_expected_error_in_ask_does_not_crash(tree: Tree, journal: Journal):
    class Refuser(Actor):
        def on_receive(self, message: Any) -> Any:
            raise NotFound(vmId=message)

    tree.start(ChildSpec(id="r", start=Refuser.spawn))
    ref = tree.ref_of("r")
    with pytest.raises(NotFound, match="vm-1"):
        ask(ref, "vm-1", timeout=5)
    assert ref.is_alive()
    assert tree.registry.status("r").restarts.count == 0


def test_crash_in_on_start_during_restart_is_retried(tree: Tree, journal: Journal):
    attempts = iter([False, True, False])  # starts, then fails once on restart, then starts
    tree.start(spec("w", journal, fail_start=lambda: next(attempts)), intensity=5)
    tree.ref_of("w").tell(Crash())
    wait_restarted(journal, "w", tree=tree)
    assert tree.registry.status("w").restarts.count == 2


def test_start_failure_at_init_fails_the_supervisor_and_stops_started_children(
    tree: Tree, journal: Journal
):
    with pytest.raises(StartFailed):
        tree.start(
            spec("a", journal), spec("b", journal, fail_start=lambda: True), spec("c", journal)
        )
    assert journal.starts == ["a"]
    assert journal.stops == ["b", "a"]
    assert tree.exited.wait(5)
    assert tree.exits[0].reason is ExitReason.CRASH


# -- strategies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        (Strategy.ONE_FOR_ONE, ["b"]),
        (Strategy.ONE_FOR_ALL, ["a", "b", "c"]),
        (Strategy.REST_FOR_ONE, ["b", "c"]),
    ],
)
def test_strategy_restarts_the_right_children(
    tree: Tree, journal: Journal, strategy: Strategy, restarted: list[str]
):
    sup = tree.start(*(spec(n, journal) for n in "abc"), strategy=strategy)
    tree.ref_of("b").tell(Crash())
    journal.wait_for(lambda j: j.starts.count("b") == 2)
    sup.which_children()  # the restart has completed once the supervisor answers
    assert [n for n in "abc" if journal.starts.count(n) == 2] == restarted
    # siblings are stopped in reverse order before anything starts again
    stopped_siblings = [n for n in journal.stops if n != "b"]
    assert stopped_siblings == sorted((set(restarted) - {"b"}), reverse=True)
    assert all(c.alive for c in sup.which_children())


@pytest.mark.parametrize("strategy", list(Strategy))
def test_escalation_when_intensity_is_exceeded(tree: Tree, journal: Journal, strategy: Strategy):
    tree.start(*(spec(n, journal) for n in "abc"), strategy=strategy, intensity=2, period=10)
    for expected_starts in (2, 3):
        tree.ref_of("b").tell(Crash())
        journal.wait_for(lambda j, n=expected_starts: j.starts.count("b") == n)
        SupervisorHandle(tree.ref).which_children()  # settle
    tree.ref_of("b").tell(Crash())  # third restart within the period: one too many
    assert tree.exited.wait(5)
    assert tree.exits[0].reason is ExitReason.SHUTDOWN
    assert "intensity" in (tree.exits[0].error or "")
    assert journal.stops[-2:] == ["c", "a"]  # survivors stopped in reverse order
    assert tree.registry.get("a") is None


def test_restarts_outside_the_period_do_not_count(tree: Tree, journal: Journal):
    sup = tree.start(spec("w", journal), intensity=1, period=10)
    for n in range(2, 6):
        tree.ref_of("w").tell(Crash())
        wait_restarted(journal, "w", n)
        sup.which_children()
        tree.clock.advance(11)
    assert not tree.exited.is_set()


def test_nested_supervisor_escalation_restarts_the_subtree(tree: Tree, journal: Journal):
    inner = supervisor_spec(
        "inner",
        flags=SupervisorFlags(intensity=0),
        children=[spec("w", journal)],
        registry=tree.registry,
        clock=tree.clock,
    )
    tree.start(inner, spec("x", journal))
    tree.ref_of("inner/w").tell(Crash())  # inner has no budget: it escalates
    wait_restarted(journal, "w", tree=tree)
    assert journal.starts.count("x") == 1
    assert tree.registry.status("inner").restarts.count == 1
    assert ask(tree.ref_of("inner/w"), Ping(), timeout=5) == "pong"


# -- shutdown -----------------------------------------------------------------------------


def test_stop_is_in_reverse_order(tree: Tree, journal: Journal):
    tree.start(*(spec(n, journal) for n in "abc"))
    assert tree.ref is not None
    tree.ref.stop(block=True, timeout=10)
    assert journal.starts == ["a", "b", "c"]
    assert journal.stops == ["c", "b", "a"]


def test_a_hanging_child_is_abandoned_after_its_shutdown_timeout(tree: Tree, journal: Journal):
    hanging = ChildSpec(id="h", start=probe_start("h", journal), shutdown_timeout=0.2)
    tree.start(spec("a", journal), hanging)
    release = threading.Event()
    tree.ref_of("h").tell(Hang(release))
    assert tree.ref is not None
    try:
        tree.ref.stop(block=True, timeout=5)  # would hang for 30 s if it waited on "h"
        assert journal.stops == ["a"]
    finally:
        release.set()
    journal.wait_for(lambda j: "h" in j.stops)


def test_a_hanging_on_start_is_a_start_failure(tree: Tree, journal: Journal):
    release = threading.Event()

    class SlowStarter(Actor):
        def on_start(self) -> None:
            release.wait(30)

    sup = tree.start()
    slow = ChildSpec(id="slow", start=SlowStarter.spawn, start_timeout=0.2)
    try:
        with pytest.raises(StartFailed, match="timed out"):
            sup.start_child(slow)
    finally:
        release.set()
    assert sup.which_children() == ()


# -- dynamic children ---------------------------------------------------------------------


def test_dynamic_children_start_terminate_restart_delete(tree: Tree, journal: Journal):
    sup = tree.start()
    assert sup.start_child(spec("vm-1", journal)) == "vm-1"
    assert sup.start_child(spec("vm-2", journal)) == "vm-2"
    with pytest.raises(AlreadyExists):
        sup.start_child(spec("vm-1", journal))
    assert [c.id for c in sup.which_children()] == ["vm-1", "vm-2"]
    sup.terminate_child("vm-1")
    assert tree.registry.get("vm-1") is None
    with pytest.raises(Conflict):
        sup.delete_child("vm-2")
    sup.restart_child("vm-1")
    assert ask(tree.ref_of("vm-1"), Ping(), timeout=5) == "pong"
    sup.terminate_child("vm-1")
    sup.delete_child("vm-1")
    with pytest.raises(NotFound):
        sup.terminate_child("vm-1")
    assert [c.id for c in sup.which_children()] == ["vm-2"]


def test_start_children_answers_each_spec_in_order(tree: Tree, journal: Journal):
    sup = tree.start()
    sup.start_child(spec("vm-0", journal))
    specs = [
        spec("vm-1", journal),
        spec("vm-2", journal, fail_start=lambda: True),
        spec("vm-0", journal),
        spec("vm-3", journal),
    ]
    answers = sup.start_children(specs)
    assert answers[0] == "vm-1"
    assert isinstance(answers[1], StartFailed)
    assert isinstance(answers[2], AlreadyExists)
    assert answers[3] == "vm-3"
    assert [c.id for c in sup.which_children()] == ["vm-0", "vm-1", "vm-3"]
    assert ask(tree.ref_of("vm-3"), Ping(), timeout=5) == "pong"
    assert tree.registry.get("vm-2") is None
    assert tree.registry.status(ROOT).children == ("vm-0", "vm-1", "vm-3")
    assert gc.isenabled()


def test_start_children_of_many_registers_every_child(tree: Tree, journal: Journal):
    sup = tree.start().with_timeout(30)
    count = 300
    answers = sup.start_children([spec(f"vm-{n}", journal) for n in range(count)])
    assert answers == [f"vm-{n}" for n in range(count)]
    assert len(tree.registry.status(ROOT).children) == count
    assert all(tree.registry.get(f"vm-{n}") is not None for n in range(count))
    assert gc.isenabled()


def test_gc_paused_nests_across_threads_and_restores_the_collector():
    assert gc.isenabled()
    inside = threading.Event()
    release = threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with gc_paused():
            inside.set()
            release.wait(5)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=other)
    with gc_paused():
        thread.start()
        assert inside.wait(5)
        assert not gc.isenabled()
    assert not gc.isenabled(), "the other thread still pauses it"
    release.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_gc_paused_leaves_a_disabled_collector_and_frozen_objects_alone():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            pass
        # Still frozen (an unfreeze would empty the permanent generation); a frozen
        # object that died meanwhile (another thread's) may leave it a little smaller.
        assert frozen * 0.99 <= gc.get_freeze_count() <= frozen
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_invalid_specs_are_refused_before_anything_starts(tree: Tree, journal: Journal):
    with pytest.raises(InvalidArgument, match="duplicate"):
        tree.start(spec("a", journal), spec("a", journal))
    with pytest.raises(InvalidArgument, match="intensity"):
        tree.start(spec("a", journal), intensity=-1)
    with pytest.raises(InvalidArgument, match="child id"):
        tree.start(spec("a/b", journal))
    with pytest.raises(InvalidArgument, match="shutdown_timeout"):
        ChildSpec(id="x", start=Actor.spawn, shutdown_timeout=0).validate()
    assert journal.starts == []


def test_ask_timeout_is_a_clean_error(tree: Tree, journal: Journal):
    tree.start(spec("w", journal))
    release = threading.Event()
    tree.ref_of("w").tell(Hang(release))
    try:
        with pytest.raises(Timeout):
            ask(tree.ref_of("w"), Ping(), timeout=0.1)
    finally:
        release.set()


def test_status_snapshot_describes_the_tree(tree: Tree, journal: Journal):
    inner = supervisor_spec(
        "vms", flags=SupervisorFlags(), children=[spec("vm-1", journal)], registry=tree.registry
    )
    tree.start(spec("a", journal), inner)
    ask(tree.ref_of("vms/vm-1"), Ping(), timeout=5)
    snapshot = {s.path: s for s in tree.registry.snapshot()}
    assert list(snapshot) == [ROOT, "a", "vms", "vms/vm-1"]
    vm = snapshot["vms/vm-1"]
    assert vm.actor_class == "Probe"
    assert vm.state == "running"
    assert vm.parent == "vms"
    assert vm.messages_handled == 1
    assert vm.mailbox_depth == 0
    assert vm.busy_seconds is None
    assert snapshot["vms"].children == ("vms/vm-1",)
    assert snapshot[ROOT].children == ("a", "vms")
