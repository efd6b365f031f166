"""Kept rows never show a stale value: a scrape equals one built from nothing.

Each case drives a builder that keeps rows across scrapes and, at every step, a
fresh builder that formats everything; both must write the same text, as a guest
or actor changes, appears and goes away, and as the clock alone changes a status.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pykka
import pytest

from hostvisor.actors.actor import Actor, ActorState, ActorStats
from hostvisor.actors.guest.board import Forget, Post, VmBoard
from hostvisor.actors.guest.entry import VmEntry
from hostvisor.actors.guest.status import VmStatus
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.vm.addresses import VM_BOARD, VM_GUESTS
from hostvisor.api.metrics.actors import ActorRows
from hostvisor.api.metrics.collector import Collector
from hostvisor.api.metrics.guests import GuestRows
from hostvisor.api.metrics.live import live_entries
from hostvisor.api.metrics.rows import RowCache
from hostvisor.api.metrics.text import Family, render
from hostvisor.supervision.registry import NO_RESTARTS, Registry, RestartInfo

pytestmark = pytest.mark.unit


def text(families: Iterable[Family]) -> str:
    return render(families).decode()


# -- the cache itself --------------------------------------------------------------------


def test_a_row_is_reused_while_its_signature_holds_and_rebuilt_when_it_changes() -> None:
    cache = RowCache()
    built: list[str] = []

    def build(value: str) -> tuple[str, ...]:
        built.append(value)
        return (value,)

    assert cache.row("a", ("x",), lambda: build("x")) == ("x",)
    assert cache.row("a", ("x",), lambda: build("again")) == ("x",)
    assert cache.row("a", ("y",), lambda: build("y")) == ("y",)
    assert built == ["x", "y"]
    assert (cache.built, cache.reused) == (2, 1)


def test_keys_not_seen_in_a_scrape_are_forgotten() -> None:
    cache = RowCache()
    for key in "abc":
        cache.row(key, 1, lambda k=key: (k,))  # type: ignore[misc]
    cache.end_scrape()
    cache.row("a", 1, lambda: ("a",))
    cache.end_scrape()
    assert len(cache) == 1
    assert cache.row("b", 1, lambda: ("b again",)) == ("b again",)  # built afresh


def test_a_failed_build_keeps_nothing() -> None:
    cache = RowCache()

    def broken() -> tuple[str, ...]:
        raise ValueError("no row")

    with pytest.raises(ValueError, match="no row"):
        cache.row("a", 1, broken)
    assert cache.row("a", 1, lambda: ("a",)) == ("a",)


# -- guests ------------------------------------------------------------------------------


def vm(vm_id: str, **changes: Any) -> VmEntry:
    base = VmEntry(
        vm_id=vm_id,
        status=VmStatus.UP,
        status_time=1,
        info={"vmName": f"name-{vm_id}"},
        figures={
            "cpuUsage": "1000000000",
            "cpuUser": "12.5",
            "cpuSys": "2.5",
            "memUsage": "40",
            "disks": {"vda": {"readBytes": "10", "writtenBytes": "20"}},
            "network": {"vnet0": {"name": "vnet0", "rx": "5", "tx": "6"}},
        },
        started=0.0,
        powering_up=10.0,
    )
    return dataclasses.replace(base, **changes)


def figures(entry: VmEntry, **changes: Any) -> VmEntry:
    return dataclasses.replace(entry, figures={**entry.figures, **changes})


class Guests:
    """One kept-rows builder, checked against a fresh one at every scrape."""

    def __init__(self) -> None:
        self.rows = GuestRows()
        self.stats_rows = GuestRows()
        self.kinds: dict[str, str] = {}

    def scrape(self, entries: Mapping[str, VmEntry], now: float) -> str:
        kinds = {vm_id: self.kinds.get(vm_id, "vm") for vm_id in entries}
        kept = text(self.rows.from_entries(entries, kinds, now))
        assert kept == text(GuestRows().from_entries(entries, kinds, now))
        stats = [entry.stats(now) for entry in entries.values()]
        from_stats = text(self.stats_rows.from_stats(stats, kinds))
        assert from_stats == kept  # the board's rendered stats give the same lines
        return kept


def test_guest_lines_follow_changes_arrivals_and_departures() -> None:
    guests = Guests()
    entries = {vm_id: vm(vm_id) for vm_id in "abc"}
    first = guests.scrape(entries, now=100.0)
    assert 'hostvisor_vm_cpu_seconds_total{vm_id="a",vm_name="name-a",kind="vm"} 1.0' in first
    assert guests.scrape(entries, now=101.0) == first  # nothing changed: the same text
    entries["a"] = figures(entries["a"], cpuUsage="3000000000")
    changed = guests.scrape(entries, now=102.0)
    assert 'hostvisor_vm_cpu_seconds_total{vm_id="a",vm_name="name-a",kind="vm"} 3.0' in changed
    entries["b"] = figures(entries["b"], disks={"vda": {"readBytes": "99", "writtenBytes": "20"}})
    assert 'disk="vda"} 99.0' in guests.scrape(entries, now=103.0)
    entries["d"] = vm("d", status=VmStatus.PAUSED)
    assert 'vm_id="d",vm_name="name-d",kind="vm",status="Paused"} 1' in guests.scrape(
        entries, now=104.0
    )
    del entries["c"]
    gone = guests.scrape(entries, now=105.0)
    assert 'vm_id="c"' not in gone
    entries["c"] = vm("c", info={"vmName": "renamed"})
    assert 'vm_name="renamed"' in guests.scrape(entries, now=106.0)
    guests.kinds["a"] = "container"
    assert 'vm_id="a",vm_name="name-a",kind="container"' in guests.scrape(entries, now=107.0)


def test_the_clock_alone_turns_powering_up_into_up() -> None:
    guests = Guests()
    entries = {"a": vm("a", started=100.0)}  # the same entry object throughout
    assert 'status="Powering up"} 1' in guests.scrape(entries, now=105.0)
    later = guests.scrape(entries, now=111.0)
    assert 'status="Up"} 1' in later
    assert "Powering up" not in later


def test_a_down_vm_keeps_only_its_status_line() -> None:
    guests = Guests()
    entries = {"a": vm("a")}
    guests.scrape(entries, now=100.0)
    entries["a"] = dataclasses.replace(entries["a"], status=VmStatus.DOWN)
    down = guests.scrape(entries, now=101.0)
    assert 'status="Down"} 1' in down
    assert "hostvisor_vm_cpu_seconds_total{" not in down


# -- actors ------------------------------------------------------------------------------


class EntriesRegistry(Registry):
    """The registry with `entries()` (the change asked of the lead), as a stand-in."""

    def entries(self) -> list[tuple[str, Any]]:
        """Every (path, registration), in registration order."""
        with self._lock:
            return list(self._entries.items())


class Idle(Actor):
    """An actor that only exists: the test writes the counters the registry reads."""


class Tree:
    """A registry of idle actors, each with `ActorStats` the test writes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.stats: dict[str, ActorStats] = {}
        self.refs: list[pykka.ActorRef[Any]] = []

    def add(self, path: str, parent: str | None, restarts: RestartInfo = NO_RESTARTS) -> None:
        ref = Idle.start()
        self.refs.append(ref)
        stats = self.stats[path] = ActorStats(state=ActorState.RUNNING)
        self.registry.register(path, ref, stats=stats, parent=parent, restarts=restarts)
        if parent is not None:
            self.stats[parent].children = (*self.stats[parent].children, path)

    def handle(self, path: str, bucket: int = 3, seconds: float = 0.0002) -> None:
        """Count one message as the actor does: handled, busy time, then its bucket."""
        stats = self.stats[path]
        stats.handled += 1
        stats.busy_total_seconds += seconds
        stats.latency_counts[bucket] += 1


@pytest.fixture(params=[Registry, EntriesRegistry], ids=["snapshot", "entries"])
def tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    built = Tree(request.param())
    built.add("/", None)
    built.add("hosts", "/")
    built.add("hosts/host", "hosts")
    built.add("vms", "/")
    built.add("vms/guests", "vms")
    for vm_id in "ab":
        built.add(f"vms/guests/{vm_id}", "vms/guests")
    yield built
    for ref in built.refs:
        ref.stop()


def actors_scrape(rows: ActorRows, tree: Tree) -> str:
    kept = text(rows.families(live_entries(tree.registry)))
    assert kept == text(ActorRows().families(live_entries(tree.registry)))
    if isinstance(tree.registry, EntriesRegistry):  # the same text as from a snapshot
        plain = Registry()
        for path, entry in tree.registry.entries():
            plain.register(
                path, entry.ref, stats=entry.stats, parent=entry.parent, restarts=entry.restarts
            )
        assert sorted(kept.splitlines()) == sorted(
            text(ActorRows().families(live_entries(plain))).splitlines()
        )
    return kept


def test_actor_lines_follow_every_figure_and_the_tree(tree: Tree) -> None:
    rows = ActorRows()
    first = actors_scrape(rows, tree)
    assert actors_scrape(rows, tree) == first
    tree.handle("vms/guests/a")
    assert 'handled_total{path="vms/guests/a",actor_class="Idle"} 1' in actors_scrape(rows, tree)
    tree.add("vms/guests/c", "vms/guests")
    assert 'path="vms/guests/c"' in actors_scrape(rows, tree)
    tree.stats["vms/guests/b"].state = ActorState.STOPPING
    changed = actors_scrape(rows, tree)
    assert 'up{path="vms/guests/b",actor_class="Idle",state="stopping"} 0' in changed
    tree.registry.unregister("vms/guests/b")
    assert 'path="vms/guests/b"' not in actors_scrape(rows, tree)
    again = RestartInfo(count=1, last_reason="drill")
    ref = tree.registry.lookup("vms/guests/a")
    stats = tree.stats["vms/guests/a"]
    tree.registry.register("vms/guests/a", ref, stats=stats, parent="vms/guests", restarts=again)
    assert 'restarts_total{path="vms/guests/a",actor_class="Idle"} 1' in actors_scrape(rows, tree)


def test_a_bucket_bumped_after_handled_still_shows(tree: Tree) -> None:
    """The actor bumps `handled` before its bucket: a scrape may read one without the other."""
    rows = ActorRows()
    stats = tree.stats["hosts/host"]
    stats.handled += 1  # handled bumped, the bucket not yet
    actors_scrape(rows, tree)
    stats.latency_counts[3] += 1
    whole = actors_scrape(rows, tree)
    assert 'handling_seconds_count{path="hosts/host",actor_class="Idle"} 1' in whole


def test_the_class_histogram_sums_every_guest(tree: Tree) -> None:
    rows = ActorRows()
    tree.handle("vms/guests/a", bucket=2, seconds=0.25)
    tree.handle("vms/guests/b", bucket=5, seconds=0.5)
    tree.handle("hosts/host", bucket=2, seconds=0.125)
    summed = actors_scrape(rows, tree)
    assert 'class_handling_seconds_count{actor_class="Idle"} 3' in summed
    assert 'class_handling_seconds_sum{actor_class="Idle"} 0.875' in summed
    assert 'handling_seconds_count{path="vms/guests/a"' not in summed  # guests: the sum only


# -- the collector, on a board that hands out entries (the change asked of VmBoard) -------


class EntryBoard(VmBoard):
    """The board with the one method the collector asks for (stand-in until VmBoard has it)."""

    def entries(self) -> dict[str, VmEntry]:
        """Every entry held, orphans included."""
        return {**self._orphans, **self._entries}


@pytest.fixture
def boards() -> Iterator[tuple[Registry, Registry]]:
    """Two registries: one with today's board (stats rendered), one with `EntryBoard`."""
    refs: list[pykka.ActorRef[Any]] = []
    registries = []
    for board_class in (VmBoard, EntryBoard):
        registry = Registry()
        ref = board_class.start()
        refs.append(ref)
        registry.register(VM_BOARD, ref, stats=ActorStats(), parent=None, restarts=NO_RESTARTS)
        registries.append(registry)
    yield registries[0], registries[1]
    for ref in refs:
        ref.stop()


def guests_held(registry: Registry, vm_ids: Iterable[str]) -> None:
    ref = registry.lookup(VM_BOARD)
    children = tuple(f"{VM_GUESTS}/{vm_id}" for vm_id in vm_ids)
    registry.register(
        VM_GUESTS, ref, stats=ActorStats(children=children), parent=None, restarts=NO_RESTARTS
    )


def vm_lines(collector: Collector) -> list[str]:
    return [line for line in text(collector._vms()).splitlines() if not line.startswith("#")]


def test_both_boards_give_the_same_lines(boards: tuple[Registry, Registry]) -> None:
    runtime = Runtime.default()
    collectors = [Collector(registry=r, runtime=runtime) for r in boards]
    for step, (held, posted, forgotten) in enumerate(
        [
            ("ab", [vm("a"), vm("b")], ""),
            ("ab", [figures(vm("a"), cpuUsage="5000000000")], ""),
            ("abc", [vm("c", status=VmStatus.PAUSED)], ""),
            ("ac", [], "b"),  # b's actor stopped: its last entry is still listed (orphan)
        ]
    ):
        for registry in boards:
            guests_held(registry, held)
            board = registry.lookup(VM_BOARD)
            for entry in posted:
                board.tell(Post(entry))
            for vm_id in forgotten:
                board.tell(Forget(vm_id))
        rendered, from_entries = (vm_lines(c) for c in collectors)
        assert rendered == from_entries, step
        assert from_entries == vm_lines(Collector(registry=boards[1], runtime=runtime))
    assert any('vm_id="b"' in line for line in from_entries)  # the orphan
    assert any("5.0" in line and 'vm_id="a"' in line for line in from_entries)
