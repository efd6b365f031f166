"""Incremental snapshots: a view merged from deltas equals the full snapshot, always.

Part one drives a registry of real (idle) actors whose counters the test sets, so
each step is exact: an actor changes, one appears, one goes and comes back, and an
old or foreign `since` gets everything. Part two runs the console's `Channel`
against an embedded host's admin socket, served as it is today (full answers) and
with the cache wired in as `hostvisor.api.admin.channel` is to wire it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.actors.actor import Actor, ActorStats, Kill
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.vm.addresses import VM_GUESTS
from hostvisor.api.admin import ops
from hostvisor.api.admin.channel import AdminChannel, socket_path
from hostvisor.api.admin.client import AdminClient
from hostvisor.api.console.app import Channel
from hostvisor.api.console.snapshots import SnapshotCache, SnapshotView, depth_first
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config
from hostvisor.supervision.registry import NO_RESTARTS, Registry, RestartInfo

# -- part one: exact steps on a registry the test drives ----------------------------------


class Idle(Actor):
    """An actor that only exists: the test sets the counters the registry reads."""


class EntriesRegistry(Registry):
    """The registry with `entries()` (the change asked of the lead), as a stand-in."""

    def entries(self) -> list[tuple[str, Any]]:
        """Every (path, registration), in registration order."""
        with self._lock:
            return list(self._entries.items())


class Tree:
    """A registry of idle actors, each with `ActorStats` the test writes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.stats: dict[str, ActorStats] = {}
        self.refs: list[pykka.ActorRef[Any]] = []

    def add(self, path: str, parent: str | None) -> ActorStats:
        ref = Idle.start()
        self.refs.append(ref)
        stats = self.stats[path] = ActorStats()
        self.registry.register(path, ref, stats=stats, parent=parent, restarts=NO_RESTARTS)
        if parent is not None:
            self.stats[parent].children = (*self.stats[parent].children, path)
        return stats

    def remove(self, path: str) -> None:
        parent = self.registry.status(path).parent
        self.registry.unregister(path)
        if parent is not None:
            held = self.stats[parent].children
            self.stats[parent].children = tuple(p for p in held if p != path)


@pytest.fixture(params=[Registry, EntriesRegistry], ids=["snapshot", "entries"])
def tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    built = Tree(request.param())
    built.add("/", None)
    built.add("vms", "/")
    built.add("vms/a", "vms")
    built.add("hosts", "/")
    yield built
    for ref in built.refs:
        ref.stop()


def expected(tree: Tree) -> list[dict[str, Any]]:
    """Today's full snapshot of the tree (`ops.snapshot`), the reference."""
    return list(ops.snapshot(tree.registry, Runtime.default())["actors"])


def without_time(actors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "busy_seconds"} for a in actors]


class Console:
    """A view fed by deltas from one cache; each fetch is checked against the reference."""

    def __init__(self, cache: SnapshotCache, tree: Tree) -> None:
        self.cache = cache
        self.tree = tree
        self.view = SnapshotView()
        self.sent: list[int] = []

    def fetch(self) -> dict[str, Any]:
        answer = self.cache.snapshot(self.tree.registry, Runtime.default(), **self.view.params())
        self.sent.append(len(answer["actors"]))
        merged = self.view.merge(json.loads(json.dumps(answer)))
        assert without_time(merged["actors"]) == without_time(expected(self.tree))
        assert set(merged) == {"time", "latency_bounds", "actors", "scheduler", "work"}
        return answer


@pytest.mark.unit
def test_deltas_carry_changes_arrivals_and_departures(tree: Tree) -> None:
    console = Console(SnapshotCache(), tree)
    assert console.fetch()["delta"] is False
    assert console.fetch()["actors"] == []  # nothing changed: nothing sent
    stats = tree.stats["vms/a"]
    stats.handled += 1
    stats.latency_counts[2] += 1
    stats.busy_total_seconds += 0.001
    answer = console.fetch()
    assert answer["delta"] is True
    assert [a["path"] for a in answer["actors"]] == ["vms/a"]
    tree.add("vms/b", "vms")
    assert {a["path"] for a in console.fetch()["actors"]} == {"vms", "vms/b"}
    tree.remove("vms/a")
    answer = console.fetch()
    assert answer["removed"] == ["vms/a"]
    tree.add("vms/a", "vms")  # back, as after a restart
    assert "vms/a" in {a["path"] for a in console.fetch()["actors"]}
    tree.stats["hosts"].state = tree.stats["hosts"].state.__class__("stopping")
    assert [a["path"] for a in console.fetch()["actors"]] == ["hosts"]


@pytest.mark.unit
def test_a_restart_count_is_a_change(tree: Tree) -> None:
    console = Console(SnapshotCache(), tree)
    console.fetch()
    ref = tree.registry.lookup("vms/a")
    again = RestartInfo(count=1, last_reason="drill", last_at=1.0)
    tree.registry.register("vms/a", ref, stats=tree.stats["vms/a"], parent="vms", restarts=again)
    answer = console.fetch()
    assert [(a["path"], a["restarts"]) for a in answer["actors"]] == [("vms/a", 1)]


@pytest.mark.unit
def test_a_busy_actor_is_sent_each_time_with_its_busy_time_now(tree: Tree) -> None:
    console = Console(SnapshotCache(), tree)
    console.fetch()
    tree.stats["vms/a"].busy_since = time.perf_counter() - 5.0  # handling for 5 s already
    first = next(a for a in console.fetch()["actors"] if a["path"] == "vms/a")
    second = next(a for a in console.fetch()["actors"] if a["path"] == "vms/a")
    assert 5.0 <= first["busy_seconds"] < second["busy_seconds"]
    tree.stats["vms/a"].busy_since = None
    assert console.fetch()["actors"][0]["busy_seconds"] is None
    assert console.fetch()["actors"] == []


@pytest.mark.unit
def test_two_consoles_each_get_their_own_changes(tree: Tree) -> None:
    cache = SnapshotCache()
    first, second = Console(cache, tree), Console(cache, tree)
    first.fetch()
    second.fetch()
    tree.stats["vms/a"].handled += 1
    first.fetch()  # sees the change; the second has not fetched since
    tree.remove("vms/a")
    first.fetch()
    answer = second.fetch()  # one change and one removal, both after its version
    assert answer["removed"] == ["vms/a"]


@pytest.mark.unit
def test_a_foreign_or_stale_version_gets_everything(tree: Tree) -> None:
    now = [0.0]
    cache = SnapshotCache(clock=lambda: now[0])
    console = Console(cache, tree)
    console.fetch()
    other = SnapshotCache().snapshot(tree.registry, Runtime.default())["version"]
    for since in (other, "nonsense", 12, f"{console.view.params()['since']}0"):
        answer = cache.snapshot(tree.registry, Runtime.default(), since=since)
        assert answer["delta"] is False
        assert len(answer["actors"]) == len(expected(tree))
    stale = SnapshotView()
    stale.merge(cache.snapshot(tree.registry, Runtime.default()))  # it knows "hosts"
    tree.remove("hosts")
    console.fetch()  # the removal is a tombstone now
    now[0] += 3600.0  # past the tombstones' keeping: a delta for `stale` would miss it
    console.fetch()  # still whole for this console: it saw the removal
    answer = cache.snapshot(tree.registry, Runtime.default(), **stale.params())
    assert answer["delta"] is False


@pytest.mark.unit
def test_depth_first_follows_children_in_start_order() -> None:
    actors: dict[str, dict[str, Any]] = {
        "/": {"path": "/", "parent": None, "children": ["b", "a"]},
        "a": {"path": "a", "parent": "/", "children": []},
        "b": {"path": "b", "parent": "/", "children": ["b/x", "b/gone"]},
        "b/x": {"path": "b/x", "parent": "b", "children": []},
        "stray": {"path": "stray", "parent": "nobody", "children": []},
    }
    assert [a["path"] for a in depth_first(actors)] == ["/", "b", "b/x", "a"]


@pytest.mark.unit
def test_an_answer_that_is_no_snapshot_resets_the_view() -> None:
    view = SnapshotView()
    view.merge({"version": "e:1", "actors": [], "time": 0})
    assert view.params() == {"since": "e:1"}
    with pytest.raises(KeyError):
        view.merge({"delta": True, "version": "e:2"})
    assert view.params() == {}


# -- part two: the console's channel on a real host's admin socket -------------------------


class DeltaChannel(AdminChannel):
    """The admin channel with the snapshot cache wired in (what channel.py is to do)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshots = SnapshotCache()

    def _answer(self, request: dict[str, Any]) -> Any:
        if request.get("op") == "snapshot":
            return self.snapshots.snapshot(self._registry, self.runtime, since=request.get("since"))
        return super()._answer(request)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHost]:
    directory = tmp_path_factory.mktemp("snapshots")
    uri = write_test_node(directory / "node.xml", [td_domain_xml(name=f"c{n}") for n in range(3)])
    config = load_config(
        state_dir=directory / "state",
        libvirt_uri=uri,
        management_port=0,
        vm_powering_up_seconds=0,
    )
    with EmbeddedHost(config) as running:
        yield running


@pytest.fixture(scope="module")
def delta_socket(host: EmbeddedHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("delta") / "delta.sock"
    ref = DeltaChannel.start(registry=host.registry, path=path)
    wait_for(path.exists, 10, "the socket bound (in the channel's on_start)")
    yield path
    ref.stop()


def paths(snapshot: dict[str, Any]) -> list[str]:
    return [a["path"] for a in snapshot["actors"]]


@pytest.mark.libvirt
def test_the_channel_takes_full_answers_from_todays_agent(host: EmbeddedHost) -> None:
    channel = Channel(socket_path(host.config.state_dir))
    try:
        first, second = channel.snapshot(), channel.snapshot()
    finally:
        channel.close()
    with AdminClient(socket_path(host.config.state_dir)) as admin:
        full = admin.snapshot()
    assert set(paths(second)) == set(paths(full))
    assert paths(first) == paths(second)


@pytest.mark.libvirt
def test_the_console_follows_a_kill_and_a_vm_that_goes(
    host: EmbeddedHost, delta_socket: Path
) -> None:
    channel = Channel(delta_socket)
    try:
        with AdminClient(delta_socket) as raw:
            full = raw.request("snapshot")
            delta = raw.request("snapshot", since=full["version"])
        assert delta["delta"] is True
        assert len(delta["actors"]) < len(full["actors"]) / 2
        assert paths(channel.snapshot()) == [s.path for s in host.registry.snapshot()]
        with host.client() as cli:
            vm_ids = sorted(e["vmId"] for e in cli.Host.getAllVmStats())
            killed, gone = (f"{VM_GUESTS}/{vm_id}" for vm_id in vm_ids[:2])
            host.registry.lookup(killed).tell(Kill("drill from the test"))
            wait_for(
                lambda: any(
                    a["path"] == killed and a["restarts"] == 1 and a["state"] == "running"
                    for a in channel.snapshot()["actors"]
                ),
                10,
                "the restart in the console's view",
            )
            cli.VM.destroy(vmID=vm_ids[1])
            wait_for(lambda: gone not in paths(channel.snapshot()), 10, "the VM gone")
        merged = channel.snapshot()
        assert paths(merged) == [s.path for s in host.registry.snapshot()]
    finally:
        channel.close()
