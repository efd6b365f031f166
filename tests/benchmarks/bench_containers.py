"""Container VMs through Hostvisor against the docker SDK directly, in the same run.

    .venv/bin/python tests/benchmarks/bench_containers.py [--rounds N]

Starts a private dockerd (tests/harness/dockerd.py: its own network namespace,
socket and data root, vfs, the busybox image) and an in-process host on it (libvirt's
test driver: no guest here is a KVM one). Prints one table (docker SDK | hostvisor |
ratio | target):

- create -> Up: `VM.create` over STOMP until the VM's `|virt|VM_status|` Up event,
  against the SDK's `containers.run(detach=True)` with the same image, network and
  limits until it returns (the container runs); median of --rounds, alternating which
  goes first (target <= 1.2x);
- destroy: `VM.destroy` until it answers (the container is deleted), against the
  SDK's `remove(force=True)`; median of --rounds (no target).

Not a test: it never gates CI.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' harness

from harness.dockerd import IMAGE, NETWORK, PrivateDockerd, container_xml
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

EVENTS = "jms.queue.events"
MEMORY_MIB = 64
TARGET = 1.2


def _until_up(events: queue.Queue[tuple[str, dict[str, Any]]], vm_id: str) -> None:
    method = f"|virt|VM_status|{vm_id}"
    while True:
        name, params = events.get(timeout=60)
        if name == method and params[vm_id]["status"] == "Up":
            return
        if name == method and params[vm_id]["status"] == "Down":
            raise RuntimeError(f"VM {vm_id} went Down: {params[vm_id]}")


def hostvisor_round(cli: Client, events: queue.Queue[Any]) -> tuple[float, float]:
    """Seconds for VM.create -> Up, then for VM.destroy."""
    vm_id = str(uuid.uuid4())
    xml = container_xml(vm_id, memory_mib=MEMORY_MIB)
    started = time.perf_counter()
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    _until_up(events, vm_id)
    up = time.perf_counter() - started
    started = time.perf_counter()
    cli.VM.destroy(vmID=vm_id)
    return up, time.perf_counter() - started


def sdk_round(dockerd: PrivateDockerd) -> tuple[float, float]:
    """Seconds for containers.run -> running, then for remove(force=True)."""
    started = time.perf_counter()
    container = dockerd.client.containers.run(
        f"{IMAGE}:latest",
        detach=True,
        name=f"bench-{uuid.uuid4()}",
        network_mode=NETWORK,  # as Hostvisor creates it (`network=` costs the SDK more)
        mem_limit=MEMORY_MIB * 1024 * 1024,
        memswap_limit=MEMORY_MIB * 1024 * 1024,
        cpu_period=100_000,
        cpu_quota=100_000,
    )
    up = time.perf_counter() - started
    started = time.perf_counter()
    container.remove(force=True)
    return up, time.perf_counter() - started


def measure(rounds: int, dockerd: PrivateDockerd, host: EmbeddedHost) -> dict[str, list[float]]:
    """Alternate the two ways for `rounds` rounds; return each figure's samples."""
    figures: dict[str, list[float]] = {"sdk_up": [], "hv_up": [], "sdk_rm": [], "hv_rm": []}
    events: queue.Queue[Any] = queue.Queue()
    with host.client() as cli:
        cli.subscribe(EVENTS, events)
        cli.Host.ping()
        runs: list[tuple[str, Callable[[], tuple[float, float]]]] = [
            ("sdk", lambda: sdk_round(dockerd)),
            ("hv", lambda: hostvisor_round(cli, events)),
        ]
        for _ in range(2):  # warm up both paths (image layers, connection pools)
            for _name, run in runs:
                run()
        for index in range(rounds):
            for name, run in runs if index % 2 == 0 else reversed(runs):
                up, removed = run()
                figures[f"{name}_up"].append(up)
                figures[f"{name}_rm"].append(removed)
    return figures


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args, _others = parser.parse_known_args()  # `make bench` passes every bench the same args
    dockerd = PrivateDockerd()
    try:
        dockerd.start().prepare()
        config = load_config(
            state_dir=Path(tempfile.mkdtemp(prefix="hv-bench-", dir="/tmp")),
            libvirt_uri="test:///default",
            management_port=0,
            docker_socket=dockerd.socket,
            container_network=NETWORK,
            vm_powering_up_seconds=0,
        )
        with EmbeddedHost(config) as host:
            figures = measure(args.rounds, dockerd, host)
    finally:
        dockerd.close()
    rows = [
        ("create -> Up (median)", "sdk_up", "hv_up", f"<= {TARGET}x"),
        ("destroy (median)", "sdk_rm", "hv_rm", "-"),
    ]
    print(f"{args.rounds} rounds; dockerd {dockerd.socket}, storage driver vfs")
    print(f"{'measure':<26} {'docker SDK':>12} {'hostvisor':>12} {'ratio':>8}  target")
    for label, base, ours, target in rows:
        baseline = statistics.median(figures[base])
        value = statistics.median(figures[ours])
        print(
            f"{label:<26} {baseline * 1000:>10.1f}ms {value * 1000:>10.1f}ms "
            f"{value / baseline:>7.2f}x  {target}"
        )


if __name__ == "__main__":
    main()
