"""Each child's own budget (`SupervisorFlags.per_child`): give up, back off, retry, escalate.

Probes under a real supervisor; the restart window runs on a `ManualClock`, the
backoff on the tree's timer service (real time, a few tens of milliseconds here).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from supervision.test_supervisor import Tree, spec

from harness.probes import Crash, ExitWith, Journal, Ping
from hostvisor.actors.actor import ExitReason, ask
from hostvisor.actors.errors import InvalidArgument
from hostvisor.supervision.clock import ManualClock
from hostvisor.supervision.registry import ROOT, Registry
from hostvisor.supervision.spec import (
    RESOURCE_CHILD_BUDGET,
    ROOT_FLAGS,
    ChildBudget,
    Strategy,
    SupervisorFlags,
)
from hostvisor.supervision.supervisor import SupervisorHandle

FAST = ChildBudget(intensity=2, period=10.0, backoff=0.05, max_backoff=0.2)
SLOW = ChildBudget(intensity=2, period=10.0, backoff=60.0, max_backoff=60.0)


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def tree() -> Iterator[Tree]:
    tree = Tree(Registry(), ManualClock())
    yield tree
    if tree.ref is not None and tree.ref.is_alive():
        tree.ref.stop(block=False).get(timeout=10)


def crash_and_wait(tree: Tree, journal: Journal, name: str) -> None:
    """Crash child `name` once and wait until the supervisor has dealt with it."""
    stops = journal.count("stops", name)
    tree.ref_of(name).tell(Crash())
    journal.wait_for(lambda j: j.stops.count(name) > stops)
    assert tree.ref is not None
    SupervisorHandle(tree.ref).which_children()  # the exit is handled by now


def info(sup: SupervisorHandle, name: str) -> Any:
    return next(c for c in sup.which_children() if c.id == name)


def test_a_crash_looping_child_is_given_up_alone(
    tree: Tree, journal: Journal, caplog: pytest.LogCaptureFixture
):
    sup = tree.start(spec("a", journal), spec("b", journal), intensity=100, per_child=SLOW)
    sibling = tree.ref_of("b")
    with caplog.at_level(logging.ERROR, logger="hostvisor.supervision.supervisor"):
        for _ in range(SLOW.intensity + 1):
            crash_and_wait(tree, journal, "a")
    assert journal.starts.count("a") == SLOW.intensity + 1  # restarted twice, then given up
    assert info(sup, "a").given_up
    assert not info(sup, "a").alive
    assert info(sup, "b").alive
    assert not info(sup, "b").given_up
    assert tree.ref_of("b") is sibling
    assert ask(sibling, Ping(), timeout=5) == "pong"
    assert not tree.exited.is_set()
    # Reported at error, with its reason, and shown by introspection.
    [report] = [r for r in caplog.records if "child given up" in r.getMessage()]
    assert report.levelno == logging.ERROR
    assert "child=a" in report.getMessage()
    assert "crashes on purpose" in report.getMessage()
    status = tree.registry.status("a")
    assert status.state == "crashed"
    assert (status.restarts.last_reason or "").startswith("given up: crash: RuntimeError")
    assert tree.registry.status(ROOT).children == ("a", "b")
    assert [s.path for s in tree.registry.snapshot()] == [ROOT, "a", "b"]


def test_a_given_up_child_starts_again_after_its_backoff(tree: Tree, journal: Journal):
    sup = tree.start(spec("a", journal), intensity=100, per_child=FAST)
    for _ in range(FAST.intensity + 1):
        crash_and_wait(tree, journal, "a")
    journal.wait_for(lambda j: j.starts.count("a") == FAST.intensity + 2)
    assert info(sup, "a").alive
    assert not info(sup, "a").given_up
    assert tree.registry.status("a").state == "running"
    assert (tree.registry.status("a").restarts.last_reason or "").startswith("backoff over")
    # Crashing again soon after its retry: given up again at once, with a longer backoff.
    crash_and_wait(tree, journal, "a")
    assert info(sup, "a").given_up
    assert "next start in 0.1 s" in (tree.registry.status("a").restarts.last_reason or "")
    journal.wait_for(lambda j: j.starts.count("a") == FAST.intensity + 3)
    assert info(sup, "a").alive  # answered once the retry has registered it
    # A period without a crash resets its budget: restarts in place again.
    tree.clock.advance(FAST.period + 1)
    crash_and_wait(tree, journal, "a")
    assert info(sup, "a").alive
    assert not tree.exited.is_set()


def test_the_supervisor_budget_still_escalates_a_burst_across_children(
    tree: Tree, journal: Journal
):
    names = [f"vm-{n}" for n in range(4)]
    tree.start(*(spec(n, journal) for n in names), intensity=3, period=10, per_child=SLOW)
    for name in names[:3]:
        crash_and_wait(tree, journal, name)
    tree.ref_of(names[3]).tell(Crash())  # a fourth restart in the period, by a fourth child
    assert tree.exited.wait(5)
    assert tree.exits[0].reason is ExitReason.SHUTDOWN


def test_terminating_or_deleting_a_given_up_child_forgets_it(tree: Tree, journal: Journal):
    sup = tree.start(spec("a", journal), intensity=100, per_child=SLOW)
    for _ in range(SLOW.intensity + 1):
        crash_and_wait(tree, journal, "a")
    assert tree.registry.get("a") is not None  # its last incarnation, shown
    sup.terminate_child("a")
    assert tree.registry.get("a") is None
    assert tree.registry.status(ROOT).children == ()
    assert sup.restart_child("a") == "a"
    assert ask(tree.ref_of("a"), Ping(), timeout=5) == "pong"
    for _ in range(SLOW.intensity + 1):
        crash_and_wait(tree, journal, "a")
    sup.delete_child("a")
    assert tree.registry.get("a") is None
    assert sup.which_children() == ()


def test_a_child_that_keeps_failing_to_start_escalates(tree: Tree, journal: Journal):
    refuse = threading.Event()
    budget = ChildBudget(intensity=1, period=10.0, backoff=0.02, max_backoff=0.02, escalate_after=3)
    tree.start(spec("a", journal, fail_start=refuse.is_set), spec("b", journal), per_child=budget)
    refuse.set()
    tree.ref_of("a").tell(ExitWith(ExitReason.SHUTDOWN))  # a permanent child: restarted
    assert tree.exited.wait(10)
    assert "failed starts in a row" in (tree.exits[0].error or "")


def test_a_permanent_child_that_exits_normally_is_restarted_in_its_budget(
    tree: Tree, journal: Journal
):
    sup = tree.start(spec("a", journal), intensity=100, per_child=SLOW)
    tree.ref_of("a").tell(ExitWith(ExitReason.NORMAL))
    journal.wait_for(lambda j: j.starts.count("a") == 2)  # permanent: restarted, in budget
    assert not info(sup, "a").given_up


def test_per_child_budgets_are_validated():
    with pytest.raises(InvalidArgument):
        SupervisorFlags(strategy=Strategy.REST_FOR_ONE, per_child=FAST).validate()
    with pytest.raises(InvalidArgument):
        SupervisorFlags(per_child=ChildBudget(backoff=0)).validate()
    with pytest.raises(InvalidArgument):
        SupervisorFlags(per_child=ChildBudget(escalate_after=0)).validate()
    ROOT_FLAGS.validate()
    SupervisorFlags(per_child=RESOURCE_CHILD_BUDGET).validate()


def test_backoff_doubles_up_to_its_cap():
    budget = ChildBudget(backoff=5.0, max_backoff=60.0)
    assert [budget.delay(n) for n in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert budget.delay(10_000) == 60.0


def test_the_root_policy_outlasts_every_branch_spending_its_own_budget():
    """Every branch (eight today, room for a ninth) restarted to its limit fits the root's."""
    per_branch = ROOT_FLAGS.per_child
    assert per_branch is not None
    assert 9 * per_branch.intensity <= ROOT_FLAGS.intensity
    assert per_branch.period == ROOT_FLAGS.period
    assert per_branch.escalate_after is not None
    assert sum(per_branch.delay(n) for n in range(per_branch.escalate_after - 3)) >= 15
