"""What the console and the metrics cost the agent: Host.ping and getAllVmStats, same run.

    .venv/bin/python tests/benchmarks/bench_operators.py [--vms N] [--rounds R] [--seconds S]

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
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.vms import td_domain_xml, write_test_node
from hostvisor.api.admin.channel import socket_path
from hostvisor.api.admin.client import AdminClient
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.metrics.endpoint import METRICS_ID
from hostvisor.supervision.config import load_config


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

    with AdminClient(socket) as admin:
        vm = next(a["path"] for a in admin.snapshot()["actors"] if a["actor_class"] == "VmActor")
        threading.Thread(target=commands, daemon=True).start()
        print("attached", flush=True)
        while True:
            active.wait()
            started = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as answer:
                answer.read()
            admin.snapshot()
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="ping phase length")
    parser.add_argument("--attach", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attach:
        attach(args.attach, args.port, args.interval)
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
