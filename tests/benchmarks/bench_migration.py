"""Live migration through Hostvisor against libvirt directly, between the same two hosts.

    .venv/bin/python tests/benchmarks/bench_migration.py [--rounds N] [--memory MiB]
                                                         [--bandwidth MiB/s] [--no-kvm]

Two test hosts (tests/harness/twohosts.py: each its own namespaces, libvirtd and agent,
TLS between the agents) and one guest definition: a halting guest of --memory MiB on a
qcow2 overlay both hosts see, with the Engine's metadata. Each round, in alternating
order, a fresh guest of that definition is started on h1 and migrated to h2:

- by Hostvisor: `VM.migrate` over the wire with the Engine's params
  (`engine_migration_params`), timed from the call until both events are in: the
  destination's `VM_status` Up and the source's `VM_status` Down;
- by libvirt: `virDomainMigrateToURI3` from the test process on h1's libvirtd, with the
  flags and typed parameters Hostvisor derives from the same params
  (`MigrationRequest.flags()` and `libvirt_params()`, plus VIR_MIGRATE_UNSAFE as the
  harness's `migration_allow_unsafe` asks), timed from the call until it returns (the
  domain then runs on h2 and is gone from h1).

Downtime is libvirt's measure, `jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED)` of the domain on
the destination (the source's domain is gone with its stats); the downtime Hostvisor
reports in `VM.getMigrationStatus` is printed beside it. Medians of --rounds rounds; the
target is Hostvisor <= 1.1x libvirt on total time. Needs root. Not a test: it never gates
CI.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' harness

from harness.guests import domain_xml, make_halting_base, make_overlay
from harness.twohosts import TestHost, engine_migration_params, two_hosts
from hostvisor.actors.hypervisor.connection import detect_accelerator
from hostvisor.actors.vm.migration import MigrationRequest
from hostvisor.api.client import Client

EVENTS = "jms.queue.events"
TARGET_TOTAL = 1.1
TIMEOUT = 120.0


class Guest:
    """One definition, a fresh id and overlay per round."""

    def __init__(self, directory: Path, memory_mib: int, domain_type: str) -> None:
        self.directory = directory
        self.memory_mib = memory_mib
        self.domain_type = domain_type
        self.base = make_halting_base(directory)

    def make(self, name: str) -> tuple[str, str]:
        vm_id = str(uuid.uuid4())
        disk = make_overlay(self.base, self.directory / f"{name}-{vm_id[:8]}.qcow2")
        xml = domain_xml(
            name=f"{name}-{vm_id[:8]}",
            uuid=vm_id,
            disk=disk,
            domain_type=self.domain_type,
            memory_mib=self.memory_mib,
            ovirt_metadata=True,
        )
        return vm_id, xml


class Events:
    """The events one agent sends one client, read in order."""

    def __init__(self, cli: Client) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        cli.subscribe(EVENTS, self.queue)
        cli.Host.ping()  # the SUBSCRIBE is in place once a later request is answered

    def status(self, vm_id: str, wanted: str, timeout: float = TIMEOUT) -> float:
        """Wait for `vm_id`'s VM_status event with status `wanted`; return when it came."""
        deadline = time.monotonic() + timeout
        method = f"|virt|VM_status|{vm_id}"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {wanted} event of {vm_id} within {timeout} s")
            try:
                name, params = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if name == method and params[vm_id].get("status") == wanted:
                return time.monotonic()

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()


def completed_downtime(host: TestHost, vm_id: str) -> int | None:
    """libvirt's downtime (ms) of the migration that brought `vm_id` to `host`."""
    conn = libvirt.open(host.libvirt_uri)
    try:
        stats = conn.lookupByUUIDString(vm_id).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()
    value = stats.get(libvirt.VIR_DOMAIN_JOB_DOWNTIME)
    return None if value is None else int(value)


def destroy_everywhere(hosts: tuple[TestHost, TestHost], vm_id: str) -> None:
    for host in hosts:
        conn = libvirt.open(host.libvirt_uri)
        try:
            with contextlib.suppress(libvirt.libvirtError):
                domain = conn.lookupByUUIDString(vm_id)
                with contextlib.suppress(libvirt.libvirtError):
                    domain.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    domain.undefine()
        finally:
            conn.close()


def wait_status(cli: Client, vm_id: str, wanted: str) -> None:
    """Poll `VM.getStats` until `wanted` (setup only, never inside a measure)."""
    deadline = time.monotonic() + TIMEOUT
    while cli.VM.getStats(vmID=vm_id)[0]["status"] != wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{vm_id} never {wanted}")
        time.sleep(0.05)


class Bench:
    def __init__(self, hosts: tuple[TestHost, TestHost], guest: Guest, bandwidth: int) -> None:
        self.hosts = hosts
        self.guest = guest
        self.bandwidth = bandwidth

    def params(self, vm_id: str) -> dict[str, Any]:
        return engine_migration_params(self.hosts[1], vm_id, maxBandwidth=self.bandwidth)

    def hostvisor(self, n: int) -> dict[str, float | None]:
        source, destination = self.hosts
        vm_id, xml = self.guest.make(f"hv{n}")
        with (
            source.connect() as cli,
            source.connect() as src_watch,
            destination.connect() as dst_watch,
        ):
            cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
            wait_status(cli, vm_id, "Up")
            src_events, dst_events = Events(src_watch), Events(dst_watch)
            src_events.drain()
            started = time.monotonic()
            cli.VM.migrate(vmID=vm_id, params=self.params(vm_id))
            up = dst_events.status(vm_id, "Up")
            down = src_events.status(vm_id, "Down")
            total = max(up, down) - started
            reported = cli.VM.getMigrationStatus(vmID=vm_id).get("downtime")
            downtime = completed_downtime(destination, vm_id)
            cli.VM.destroy(vmID=vm_id)
            with destination.connect() as there:
                there.VM.destroy(vmID=vm_id)
        destroy_everywhere(self.hosts, vm_id)
        return {"total": total, "downtime": downtime, "reported": reported}

    def libvirt(self, n: int) -> dict[str, float | None]:
        source, destination = self.hosts
        vm_id, xml = self.guest.make(f"lv{n}")
        request = MigrationRequest.from_params(vm_id, self.params(vm_id))
        conn = libvirt.open(source.libvirt_uri)
        try:
            domain = conn.createXML(xml, 0)
            started = time.monotonic()
            params = request.libvirt_params(
                domain_xml=domain.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), graphics=None
            )
            flags = request.flags() | libvirt.VIR_MIGRATE_UNSAFE
            domain.migrateToURI3(request.destination_uri(tls=False), params, flags)
            total = time.monotonic() - started
        finally:
            conn.close()
        downtime = completed_downtime(destination, vm_id)
        destroy_everywhere(self.hosts, vm_id)
        return {"total": total, "downtime": downtime, "reported": None}


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def run(rounds: int, memory_mib: int, bandwidth: int, kvm: bool) -> None:
    domain_type = detect_accelerator().domain_type if kvm else "qemu"
    with tempfile.TemporaryDirectory(prefix="hv-benchmig-", dir="/tmp") as tmp:
        directory = Path(tmp)
        (directory / "disks").mkdir()
        guest = Guest(directory / "disks", memory_mib, domain_type)
        with two_hosts(directory / "hosts") as hosts:
            bench = Bench(hosts, guest, bandwidth)
            results: dict[str, list[dict[str, float | None]]] = {"hostvisor": [], "libvirt": []}
            runners: dict[str, Callable[[int], dict[str, float | None]]] = {
                "hostvisor": bench.hostvisor,
                "libvirt": bench.libvirt,
            }
            bench.libvirt(-1)  # warm both libvirtds' caches (capabilities, first QEMU)
            bench.hostvisor(-1)
            for n in range(rounds):
                order = ("hostvisor", "libvirt") if n % 2 == 0 else ("libvirt", "hostvisor")
                for who in order:
                    results[who].append(runners[who](n))
                    print(f"round {n} {who}: {results[who][-1]}", file=sys.stderr, flush=True)
            report(results, rounds, memory_mib, bandwidth, domain_type)


def report(
    results: dict[str, list[dict[str, float | None]]],
    rounds: int,
    memory_mib: int,
    bandwidth: int,
    domain_type: str,
) -> None:
    def med(who: str, key: str) -> float | None:
        return median([r[key] for r in results[who]])

    def fmt(value: float | None, unit: str) -> str:
        if value is None:
            return "n/a"
        return f"{value * 1000:.0f} ms" if unit == "s" else f"{value:.0f} ms"

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or not b else f"{a / b:.2f}x"

    print(
        f"\nlive migration h1 -> h2, {memory_mib} MiB halting guest "
        f"({'KVM' if domain_type == 'kvm' else 'TCG'}), maxBandwidth {bandwidth} MiB/s, "
        f"median of {rounds} rounds, alternating"
    )
    header = f"{'measure':<34}{'libvirt':>12}{'hostvisor':>12}{'ratio':>9}  target"
    print(header)
    print("-" * len(header))
    lv_total, hv_total = med("libvirt", "total"), med("hostvisor", "total")
    verdict = (
        ""
        if hv_total is None or lv_total is None
        else ("met" if hv_total <= TARGET_TOTAL * lv_total else "MISSED")
    )
    print(
        f"{'total: call -> dst Up, src Down':<34}{fmt(lv_total, 's'):>12}"
        f"{fmt(hv_total, 's'):>12}{ratio(hv_total, lv_total):>9}  <= {TARGET_TOTAL}x {verdict}"
    )
    lv_down, hv_down = med("libvirt", "downtime"), med("hostvisor", "downtime")
    print(
        f"{'downtime (libvirt, destination)':<34}{fmt(lv_down, 'ms'):>12}"
        f"{fmt(hv_down, 'ms'):>12}{ratio(hv_down, lv_down):>9}  (no target)"
    )
    print(
        f"{'downtime in getMigrationStatus':<34}{'':>12}"
        f"{fmt(med('hostvisor', 'reported'), 'ms'):>12}"
    )
    print(
        "totals (s)  libvirt: "
        + " ".join(f"{r['total']:.2f}" for r in results["libvirt"] if r["total"] is not None)
        + "  hostvisor: "
        + " ".join(f"{r['total']:.2f}" for r in results["hostvisor"] if r["total"] is not None)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory", type=int, default=64, help="the guest's memory (MiB)")
    parser.add_argument("--bandwidth", type=int, default=500, help="maxBandwidth (MiB/s)")
    parser.add_argument("--no-kvm", action="store_true", help="run the guest under TCG")
    args = parser.parse_args(argv)
    libvirt.registerErrorHandler(lambda _ctx, _error: None, None)  # errors are raised anyway
    run(args.rounds, args.memory, args.bandwidth, kvm=not args.no_kvm)


if __name__ == "__main__":
    main()
