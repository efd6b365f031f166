"""setupNetworks making 50 bridged networks, against the same netlink calls made directly.

    .venv/bin/python tests/benchmarks/bench_networks.py [--networks N] [--rounds R]

Each round uses fresh namespaces with N veth NICs (run as root):
- baseline: pyroute2 in a thread inside the namespace makes, per network, what
  Hostvisor makes: a bridge, the NIC set down, enslaved and up, the bridge's MTU,
  an address, the bridge up;
- hostvisor: one `Host.setupNetworks` through the API of an in-process host that
  manages the namespace (validation, the rollback image, the steps, persistence,
  the network actors), connectivity check off;
- rollback: the same N networks applied by the kernel-level transaction, then the
  image restored and verified (what a failed connectivity check does).
Prints the median of the rounds, their spread (min-max), and the ratio of the
medians to the baseline's (target <= 2x).
Not a test: it never gates CI.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.netns import TestNamespace
from hostvisor.actors.network import apply
from hostvisor.actors.network.model import NetConfig, parse_request
from hostvisor.actors.network.netns import NamespaceWorker
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config


def _networks(count: int) -> dict[str, Any]:
    return {
        f"net{i}": {
            "nic": f"eth{i}",
            "ipaddr": f"198.51.100.{i + 1}",
            "prefix": 24,
            "mtu": 1500,
            "bridged": True,
        }
        for i in range(count)
    }


def _nics(count: int) -> tuple[str, ...]:
    return tuple(f"eth{i}" for i in range(count))


def baseline(count: int) -> float:
    """Seconds pyroute2 takes to make the same bridges directly."""
    netns = TestNamespace(nics=_nics(count), prefix="hvbench")
    try:

        def make() -> float:
            started = time.perf_counter()
            with IPRoute() as ipr:
                for i in range(count):
                    name, nic = f"net{i}", f"eth{i}"
                    ipr.link("add", ifname=name, kind="bridge", br_stp_state=0)
                    bridge = ipr.link_lookup(ifname=name)[0]
                    port = ipr.link_lookup(ifname=nic)[0]
                    ipr.link("set", index=port, state="up")
                    ipr.link("set", index=port, state="down")
                    ipr.link("set", index=port, master=bridge)
                    ipr.link("set", index=port, state="up")
                    ipr.link("set", index=bridge, mtu=1500)
                    ipr.addr(
                        "add",
                        index=bridge,
                        family=socket.AF_INET,
                        address=f"198.51.100.{i + 1}",
                        prefixlen=24,
                    )
                    ipr.link("set", index=bridge, state="up")
            return time.perf_counter() - started

        return netns.run_inside(make)
    finally:
        netns.delete()


def hostvisor(count: int) -> float:
    """Seconds one setupNetworks of `count` bridged networks takes through the API."""
    netns = TestNamespace(nics=_nics(count), prefix="hvbench")
    try:
        with tempfile.TemporaryDirectory(prefix="hvbench-") as state:
            config = load_config(
                state_dir=Path(state),
                libvirt_uri="test:///default",
                management_port=0,
                net_namespace=netns.name,
                host_sample_interval=600,
            )
            with EmbeddedHost(config) as host, host.client(timeout=120) as cli:
                started = time.perf_counter()
                cli.Host.setupNetworks(
                    networks=_networks(count), bondings={}, options={"connectivityCheck": False}
                )
                elapsed = time.perf_counter() - started
                assert len(cli.Host.getNetworkCapabilities()["networks"]) == count
                return elapsed
    finally:
        netns.delete()


def rollback(count: int) -> tuple[float, float]:
    """Seconds the kernel-level transaction takes, and the rollback of all of it."""
    netns = TestNamespace(nics=_nics(count), prefix="hvbench")
    worker = NamespaceWorker(netns.name, "bench")
    try:
        request = parse_request(_networks(count), {}, {"connectivityCheck": False})
        before = netns.state()
        started = time.perf_counter()
        outcome = worker.run(lambda ipr: apply.transact(ipr, NetConfig(), request), 120)
        applied = time.perf_counter() - started
        started = time.perf_counter()
        worker.run(lambda ipr: apply.undo(ipr, outcome.image), 120)
        undone = time.perf_counter() - started
        assert netns.state() == before, "the rollback did not restore the namespace"
        return applied, undone
    finally:
        worker.stop()
        netns.delete()


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count = args.networks
    rows: dict[str, list[float]] = {"baseline": [], "api": [], "transact": [], "rollback": []}
    for _ in range(args.rounds):
        rows["baseline"].append(baseline(count))
        rows["api"].append(hostvisor(count))
        applied, undone = rollback(count)
        rows["transact"].append(applied)
        rows["rollback"].append(undone)
    base = statistics.median(rows["baseline"])
    print(f"{count} bridged networks, median of {args.rounds} rounds")
    print(f"{'what':<44}{'seconds':>10}{'min-max':>16}{'ratio':>8}")
    labels = {
        "baseline": "pyroute2 directly (baseline)",
        "api": "Host.setupNetworks through the API",
        "transact": "the transaction alone (check, image, steps)",
        "rollback": f"rolling all {count} back, verified",
    }
    for key, label in labels.items():
        median = statistics.median(rows[key])
        spread = f"{min(rows[key]):.3f}-{max(rows[key]):.3f}"
        print(f"{label:<44}{median:>10.3f}{spread:>16}{median / base:>7.2f}x")
    print("target: setupNetworks <= 2x the baseline")


if __name__ == "__main__":
    main()
