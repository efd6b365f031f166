"""What the console and the metrics cost the agent: Host.ping and getAllVmStats, same run.

    .venv/bin/python tests/benchmarks/bench_operators.py [--vms N] [--rounds R] [--seconds S]
    .venv/bin/python tests/benchmarks/bench_operators.py --micro [--vms N] [--rounds R]

An in-process host on libvirt's test driver with N VMs (default 1000) and the
metrics endpoint on. Each round measures, one after the other:
- detached: nothing but the benchmark's client talks to the agent;
- attached: a separate process scrapes `/metrics` every second (a Prometheus
  scraping at 1 s, 15x its default rate) and reads the console's snapshot and one
  VM's detail every second through the admin socket (the console's refresh);
and in each phase: Host.ping throughput (one client, back to back, for S seconds)
and the mean getAllVmStats latency (back to back, for S seconds: whole scrape
cycles, not one moment of one). Prints the median of the rounds
and the median of each round's attached/detached ratio (rounds alternate, so a
neighbour's load on a shared machine hits both sides alike; target: at most 5 %
slower). Not a test: it never gates CI.

`--micro` is the cheap part, a few seconds with no API load: what one scrape and
one console refresh cost the agent at N VMs, each as it was (every line formatted,
every actor encoded) and as it is (kept lines; a delta since the last refresh).
CPU time is the process's (all threads, the VM board's included), so a busy
neighbour does not skew it; the board's own time per scrape is shown apart, since
`getAllVmStats` waits in the board's mailbox behind it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.vms import td_domain_xml, write_test_node
from hostvisor.actors.actor import ActorStats, call
from hostvisor.actors.guest.board import PostMany, VmBoard
from hostvisor.actors.vm.addresses import VM_BOARD, VM_GUESTS
from hostvisor.actors.vm.proxy import VmProxy
from hostvisor.api.admin import ops
from hostvisor.api.admin.channel import socket_path
from hostvisor.api.admin.client import AdminClient
from hostvisor.api.client import Client
from hostvisor.api.console.snapshots import SnapshotCache, SnapshotView
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.metrics.collector import Collector
from hostvisor.api.metrics.endpoint import METRICS_ID
from hostvisor.api.metrics.live import Counters, live_entries
from hostvisor.api.metrics.text import chunks
from hostvisor.supervision.config import load_config
from hostvisor.supervision.registry import Registry


def attach(socket: Path, port: int, interval: float) -> None:
    """The attached load (a child process): scrape and console refresh every `interval` s.

    Starts paused; each line "on" or "off" on stdin resumes or pauses it, and is
    echoed once done, so the parent measures with the load certainly on or off.
    """
    url = f"http://127.0.0.1:{port}/metrics"
    active = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "on":
                active.set()
            else:
                active.clear()
            print(line.strip(), flush=True)

    view = SnapshotView()  # as the console's Channel: deltas once the agent serves them
    with AdminClient(socket) as admin:
        vm = next(a["path"] for a in admin.snapshot()["actors"] if a["actor_class"] == "VmActor")
        threading.Thread(target=commands, daemon=True).start()
        print("attached", flush=True)
        while True:
            active.wait()
            started = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as answer:
                answer.read()
            view.merge(admin.request("snapshot", **view.params()))
            admin.detail(vm)
            time.sleep(max(interval - (time.perf_counter() - started), 0.0))


def ping_rate(cli: Client, seconds: float) -> float:
    """Host.ping calls per second, back to back, for `seconds`."""
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        cli.Host.ping()
        calls += 1
    return calls / (time.perf_counter() - started)


def all_stats(cli: Client, count: int, seconds: float) -> float:
    """Mean getAllVmStats latency, back to back for `seconds` (so over whole scrape cycles)."""
    took = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        listed = cli.Host.getAllVmStats()
        took.append(time.perf_counter() - started)
        if len(listed) != count:
            raise RuntimeError(f"{len(listed)} VMs listed of {count}")
    return statistics.fmean(took)


def agent_cpu(seconds: float) -> float:
    """CPU seconds this process (the agent) used per second, over `seconds`, no API traffic."""
    started, cpu = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - started)


def measure(cli: Client, count: int, seconds: float) -> dict[str, float]:
    return {
        "ping_per_s": ping_rate(cli, seconds),
        "all_stats_s": all_stats(cli, count, seconds),
    }


class Attached:
    """The attached load, as one child process switched on and off, stopped by its pid."""

    def __init__(self, socket: Path, port: int) -> None:
        argv = [sys.executable, __file__, "--attach", str(socket), "--port", str(port)]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._expect("attached")

    def _expect(self, word: str) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != word:
            raise RuntimeError(f"the attached load said {line!r}, not {word!r}")

    def switch(self, *, on: bool) -> None:
        word = "on" if on else "off"
        assert self.process.stdin is not None
        self.process.stdin.write(f"{word}\n")
        self.process.stdin.flush()
        self._expect(word)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def run(count: int, rounds: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hvbo") as scratch:
        directory = Path(scratch)
        domains = [td_domain_xml(name=f"b{n}") for n in range(count)]
        uri = write_test_node(directory / "node.xml", domains)
        config = load_config(
            state_dir=directory / "state",
            libvirt_uri=uri,
            management_port=0,
            vm_powering_up_seconds=0,
            metrics_address="127.0.0.1:0",
            start_timeout=600,
        )
        with EmbeddedHost(config) as host, host.client(timeout=60) as cli:
            port = host.registry.lookup(f"api/{METRICS_ID}").proxy().address().get(timeout=5)[1]
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
                size = len(answer.read())
            scrape_s = time.perf_counter() - started
            with AdminClient(socket_path(config.state_dir)) as admin:
                started = time.perf_counter()
                actors = len(admin.snapshot()["actors"])
                snapshot_s = time.perf_counter() - started
            measure(cli, count, 1.0)  # warm up
            detached, attached = [], []
            load = Attached(socket_path(config.state_dir), port)
            try:
                cpu_idle = agent_cpu(seconds)
                load.switch(on=True)
                cpu_attached = agent_cpu(seconds)
                load.switch(on=False)
                for _ in range(rounds):
                    detached.append(measure(cli, count, seconds))
                    load.switch(on=True)
                    attached.append(measure(cli, count, seconds))
                    load.switch(on=False)
            finally:
                load.stop()
    ratios = {
        key: statistics.median(
            on[key] / off[key] for on, off in zip(attached, detached, strict=True)
        )
        for key in detached[0]
    }
    return {
        "detached": {k: statistics.median(r[k] for r in detached) for k in detached[0]},
        "attached": {k: statistics.median(r[k] for r in attached) for k in attached[0]},
        "scrape_s": scrape_s,
        "scrape_bytes": size,
        "snapshot_s": snapshot_s,
        "actors": actors,
        "ratios": ratios,
        "cpu_idle": cpu_idle,
        "cpu_attached": cpu_attached,
    }


def costs(action: Any, repeat: int, board: Any = None) -> tuple[float, float, float]:
    """`action()` `repeat` times: median wall, mean CPU of this thread, mean board time (s).

    The board's time is its handling time (`busy_total_seconds`) per call, read off
    `board` (a callable answering the board's status), 0 without one.
    """
    walls = []
    before = board().busy_total_seconds if board else 0.0
    cpu = time.thread_time()
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        walls.append(time.perf_counter() - started)
    cpu = (time.thread_time() - cpu) / repeat
    spent = (board().busy_total_seconds - before) / repeat if board else 0.0
    return statistics.median(walls), cpu, spent


class EntryBoard(VmBoard):
    """Stand-in: the VM board with `entries()`, the method the collector asks for."""

    def entries(self) -> dict[str, Any]:
        """Every entry held (orphans included)."""
        return {**self._orphans, **self._entries}


class EntriesRegistry(Registry):
    """Stand-in: the registry with `entries()`, the method the collector asks for."""

    def entries(self) -> list[tuple[str, Any]]:
        """Every (path, registration), in registration order."""
        with self._lock:
            return list(self._entries.items())


Row = tuple[str, tuple[float, float, float]]


def projected(host: EmbeddedHost, stack: contextlib.ExitStack) -> Registry:
    """The host's tree in a registry with `entries()`, its VM board one with `entries()`.

    The same actors (refs and the counters each had when copied), so a scrape or
    a refresh reads as many; what the two asked-for methods would save shows.
    """
    registry = EntriesRegistry()
    guests = f"{VM_GUESTS}/"
    vms = [
        VmProxy(e.ref).entry() for path, e in live_entries(host.registry) if path.startswith(guests)
    ]
    board = EntryBoard.start()
    stack.callback(board.stop)
    board.tell(PostMany(tuple(future.get(timeout=30) for future in vms)))
    for path, entry in live_entries(host.registry):
        ref = board if path == VM_BOARD else entry.ref
        registry.register(
            path, ref, stats=_copy(entry.stats), parent=entry.parent, restarts=entry.restarts
        )
    return registry


def _copy(counters: Counters) -> ActorStats:
    """An actor's counters as they are now, in an `ActorStats` of their own."""
    return ActorStats(
        state=counters.state,
        handled=counters.handled,
        skipped=counters.skipped,
        last_handling_seconds=counters.last_handling_seconds,
        busy_since=counters.busy_since,
        children=counters.children,
        busy_total_seconds=counters.busy_total_seconds,
        latency_counts=list(counters.latency_counts),
    )


def scrape_rows(host: EmbeddedHost, repeat: int, projection: Registry) -> list[Row]:
    """Scrape costs: every line formatted (before), kept lines (after), and projected."""
    registry, runtime = host.registry, host.runtime
    board = partial(registry.status, VM_BOARD)
    kept = Collector(registry=registry, runtime=runtime)
    chunks(kept.collect())
    ahead = Collector(registry=projection, runtime=runtime)
    chunks(ahead.collect())
    return [
        (
            "scrape, every line formatted (before)",
            costs(
                lambda: chunks(Collector(registry=registry, runtime=runtime).collect()),
                repeat,
                board,
            ),
        ),
        ("scrape, kept lines (after)", costs(lambda: chunks(kept.collect()), repeat, board)),
        (
            "scrape, kept, with both entries()",
            (
                *costs(lambda: chunks(ahead.collect()), repeat)[:2],
                costs(lambda: call(projection.lookup(VM_BOARD), "entries").get(timeout=5), 50)[0],
            ),
        ),
    ]


def snapshot_rows(
    host: EmbeddedHost, repeat: int, projection: Registry
) -> tuple[list[Row], int, int]:
    """Console refresh costs (snapshot built, encoded and decoded), and the answers' sizes."""
    registry, runtime = host.registry, host.runtime
    sent = [0]

    def delta(cache: SnapshotCache, view: SnapshotView, registry: Registry) -> None:
        answer = json.dumps(cache.snapshot(registry, runtime, **view.params()))
        sent[0] = len(answer)
        view.merge(json.loads(answer))

    rows = [
        (
            "console snapshot, full (before)",
            costs(lambda: json.loads(json.dumps(ops.snapshot(registry, runtime))), repeat),
        )
    ]
    for name, source in (("(after)", registry), ("with entries()", projection)):
        cache, view = SnapshotCache(), SnapshotView()
        view.merge(cache.snapshot(source, runtime))
        rows.append(
            (f"console snapshot, delta {name}", costs(partial(delta, cache, view, source), repeat))
        )
    return rows, len(json.dumps(ops.snapshot(registry, runtime))), sent[0]


def micro(count: int, repeat: int, settle: float = 5.0) -> None:
    """Print what one scrape and one console refresh cost, before and after (see the doc)."""
    with tempfile.TemporaryDirectory(prefix="hvbm") as scratch:
        directory = Path(scratch)
        domains = [td_domain_xml(name=f"b{n}") for n in range(count)]
        uri = write_test_node(directory / "node.xml", domains)
        config = load_config(
            state_dir=directory / "state",
            libvirt_uri=uri,
            management_port=0,
            vm_powering_up_seconds=0,
            start_timeout=600,
        )
        with EmbeddedHost(config) as host, host.client(timeout=60) as cli:
            while len(cli.Host.getAllVmStats()) != count:
                time.sleep(0.1)
            time.sleep(settle)  # the first samples and posts: measure a host at rest
            size = sum(
                map(len, chunks(Collector(registry=host.registry, runtime=host.runtime).collect()))
            )
            with contextlib.ExitStack() as stack:
                projection = projected(host, stack)
                rows = scrape_rows(host, repeat, projection)
                more, full, delta = snapshot_rows(host, repeat, projection)
    print(f"{count} VMs; one scrape {size / 1024:.0f} KiB; median of {repeat}")
    print(f"{'':<40} {'wall ms':>8} {'CPU ms':>8} {'board ms':>9}")
    for name, (wall, cpu, board) in rows + more:
        print(f"{name:<40} {wall * 1e3:>8.2f} {cpu * 1e3:>8.2f} {board * 1e3:>9.2f}")
    print(f"console answer: full {full / 1024:.0f} KiB, delta {delta / 1024:.1f} KiB")
    print(
        "CPU: the calling thread's; board: the VM board's handling time per scrape "
        "(with entries(): the ask's round trip, an upper bound). "
        "'with entries()': Registry.entries and VmBoard.entries, as asked of the lead "
        "(stand-ins here)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="ping phase length")
    parser.add_argument("--micro", action="store_true", help="scrape and snapshot cost only")
    parser.add_argument("--attach", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attach:
        attach(args.attach, args.port, args.interval)
        return
    if args.micro:
        micro(args.vms, max(args.rounds, 20))
        return
    result = run(args.vms, args.rounds, args.seconds)
    off, on = result["detached"], result["attached"]
    print(
        f"{args.vms} VMs, {result['actors']} actors; one scrape {result['scrape_s'] * 1e3:.0f} ms "
        f"({result['scrape_bytes'] / 1024:.0f} KiB), one console snapshot "
        f"{result['snapshot_s'] * 1e3:.0f} ms; median of {args.rounds} rounds"
    )
    print(  # the load's own cost to the agent: CPU time is not skewed by a busy neighbour
        f"agent CPU with no API traffic: {result['cpu_idle'] * 1e3:.0f} ms/s detached, "
        f"{result['cpu_attached'] * 1e3:.0f} ms/s attached (scrape + console refresh each second)"
    )
    print(f"{'measure':<34} {'detached':>10} {'attached':>10} {'ratio':>7}  target")
    ping_ratio = result["ratios"]["ping_per_s"]  # the median of each round's own ratio
    stats_ratio = result["ratios"]["all_stats_s"]
    print(
        f"{'Host.ping (calls/s, higher is better)':<34} {off['ping_per_s']:>10.0f} "
        f"{on['ping_per_s']:>10.0f} {ping_ratio:>6.2f}x  >= 0.95x"
    )
    print(
        f"{'getAllVmStats mean (ms, lower better)':<34} {off['all_stats_s'] * 1e3:>10.1f} "
        f"{on['all_stats_s'] * 1e3:>10.1f} {stats_ratio:>6.2f}x  <= 1.05x"
    )


if __name__ == "__main__":
    main()
