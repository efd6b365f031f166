"""Supervision overhead against raw pykka, measured in the same run.

    .venv/bin/python tests/benchmarks/bench_supervision.py [--asks N] [--actors N] [--rounds N]

Prints one table:
- ask round trip (p50, p99) through a supervised Hostvisor actor vs a bare
  pykka.ThreadingActor (target: p50 ratio <= 1.3);
- start cost and RSS per idle actor for N actors started under a dynamic
  supervisor vs N bare pykka actors (target: <= 64 KiB per actor).

Each measurement runs in a fresh child process so that one does not inherit the
other's heap. Not a test: it never gates CI.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil
import pykka

from hostvisor.actors.actor import Actor
from hostvisor.supervision.registry import Registry
from hostvisor.supervision.runner import TreeRunner
from hostvisor.supervision.spec import ChildSpec, Restart
from hostvisor.supervision.supervisor import SupervisorHandle

ASK_TIMEOUT = 5.0


class RawEcho(pykka.ThreadingActor):
    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        return message


class SupervisedEcho(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


def _percentiles(samples: list[float]) -> dict[str, float]:
    samples.sort()
    return {
        "p50_us": statistics.median(samples) * 1e6,
        "p99_us": samples[int(len(samples) * 0.99)] * 1e6,
    }


def _time_asks(ref: pykka.ActorRef[Any], count: int) -> dict[str, float]:
    for _ in range(200):  # warm up
        ref.ask("ping", timeout=ASK_TIMEOUT)
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        started = clock()
        ref.ask("ping", timeout=ASK_TIMEOUT)
        samples.append(clock() - started)
    return _percentiles(samples)


def _supervised_tree() -> tuple[TreeRunner, Registry, SupervisorHandle]:
    registry = Registry()
    runner = TreeRunner([], registry=registry)
    runner.start(timeout=10)
    return runner, registry, runner.root


def measure_ask_raw(count: int) -> dict[str, float]:
    ref = RawEcho.start()
    try:
        return _time_asks(ref, count)
    finally:
        ref.stop(timeout=ASK_TIMEOUT)


def measure_ask_supervised(count: int) -> dict[str, float]:
    runner, registry, root = _supervised_tree()
    root.start_child(ChildSpec(id="echo", start=SupervisedEcho.spawn))
    try:
        return _time_asks(registry.lookup("echo"), count)
    finally:
        runner.stop(timeout=10)


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def measure_start_raw(count: int) -> dict[str, float]:
    before = _rss()
    started = time.perf_counter()
    refs = [RawEcho.start() for _ in range(count)]
    for ref in refs:  # started means on_start ran: one ask each
        ref.ask("ping", timeout=ASK_TIMEOUT)
    elapsed = time.perf_counter() - started
    rss = _rss() - before
    pykka.ActorRegistry.stop_all(timeout=30)
    return {"start_us": elapsed / count * 1e6, "rss_kib": rss / count / 1024}


def measure_start_supervised(count: int) -> dict[str, float]:
    runner, _registry, root = _supervised_tree()
    before = _rss()
    started = time.perf_counter()
    for n in range(count):  # start_child returns once the child's on_start has run
        root.start_child(
            ChildSpec(id=f"a{n}", start=SupervisedEcho.spawn, restart=Restart.TEMPORARY)
        )
    elapsed = time.perf_counter() - started
    rss = _rss() - before
    runner.stop(timeout=60)
    return {"start_us": elapsed / count * 1e6, "rss_kib": rss / count / 1024}


MEASURES = {
    "ask_raw": measure_ask_raw,
    "ask_supervised": measure_ask_supervised,
    "start_raw": measure_start_raw,
    "start_supervised": measure_start_supervised,
}


def _in_child(name: str, count: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--measure", name, "--count", str(count)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asks", type=int, default=20000)
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--measure", choices=sorted(MEASURES))
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASURES[args.measure](args.count)))
        return

    # Alternate the two several times and keep the median of each figure: on a small
    # shared machine one run alone swings by half.
    raw_runs, sup_runs = [], []
    for _ in range(args.rounds):
        raw_runs.append(_in_child("ask_raw", args.asks))
        sup_runs.append(_in_child("ask_supervised", args.asks))
    ask_raw = {key: statistics.median(run[key] for run in raw_runs) for key in raw_runs[0]}
    ask_sup = {key: statistics.median(run[key] for run in sup_runs) for key in sup_runs[0]}
    start_raw = _in_child("start_raw", args.actors)
    start_sup = _in_child("start_supervised", args.actors)

    rows = [
        (
            f"ask round trip p50 (us, median of {args.rounds})",
            ask_raw["p50_us"],
            ask_sup["p50_us"],
            "<= 1.3x",
        ),
        ("ask round trip p99 (us)", ask_raw["p99_us"], ask_sup["p99_us"], ""),
        (
            f"start per actor at {args.actors} (us)",
            start_raw["start_us"],
            start_sup["start_us"],
            "",
        ),
        (
            f"RSS per idle actor at {args.actors} (KiB)",
            start_raw["rss_kib"],
            start_sup["rss_kib"],
            "<= 64 KiB",
        ),
    ]
    print(f"{'measure':<44} {'raw pykka':>12} {'hostvisor':>12} {'ratio':>8}  target")
    for name, raw, ours, target in rows:
        print(f"{name:<44} {raw:>12.1f} {ours:>12.1f} {ours / raw:>7.2f}x  {target}")


if __name__ == "__main__":
    main()
