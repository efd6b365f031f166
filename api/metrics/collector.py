"""The metrics of one scrape: the host, VMs, containers, actors, runtime and API.

Nothing here waits on a busy actor or makes an actor do work beyond a cached
answer. Each scrape, on the endpoint's HTTP thread:
- actors, scheduler and work pool: `Registry.snapshot()` and `statistics()`, which
  read counters each actor keeps for itself (no message, no lock on their side);
- the host: one ask to the host actor for the stats it already sampled
  (`HostProxy.stats`, deadline `ASK_TIMEOUT`), and one to each storage domain for
  its last health check (`DomainProxy.repo_stats`, answered from the monitor's last
  result, as `Host.getStats` does);
- VMs and containers: one ask to the VM board for every VM's last entry (the same
  board `Host.getAllVmStats` reads), deadline `ASK_TIMEOUT`;
- the API: a copy of the `ApiRecorder` figures.
An ask that misses its deadline leaves its metrics out of this scrape and counts in
`hostvisor_scrape_errors_total`; the next scrape tries again.

Naming follows Prometheus' conventions: a `hostvisor_` prefix, base units (seconds,
bytes, ratios), `_total` on counters, labels for what varies (`vm_id`, `nic`, ...).
VDSM reports cumulative figures as counters here (network and disk bytes, a VM's CPU
time); its percentages become ratios (gauges). The handling-latency histogram is
per actor for the tree's fixed actors and per class for all (a thousand VM actors
would otherwise cost 23 series each); every other actor figure is per actor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pykka

from hostvisor.actors.actor import LATENCY_BOUNDS
from hostvisor.actors.container.addresses import CONTAINER_GUESTS
from hostvisor.actors.errors import HostvisorError, NotFound
from hostvisor.actors.host.addresses import HOST
from hostvisor.actors.host.proxy import HostProxy
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.storage.addresses import STORAGE_DOMAINS
from hostvisor.actors.storage.proxy import DomainProxy
from hostvisor.actors.vm.addresses import VM_BOARD, VM_GUESTS
from hostvisor.actors.vm.proxy import VmBoardProxy
from hostvisor.api.metrics.recorder import API_BOUNDS, ApiRecorder
from hostvisor.api.metrics.text import Family, labels, spelt
from hostvisor.supervision.registry import ActorStatus, Registry

log = logging.getLogger(__name__)

ASK_TIMEOUT = 2.0
"""Seconds the host actor and the VM board each have to answer a scrape."""
MIB = 1024 * 1024
_ACTOR_LE = spelt(LATENCY_BOUNDS)
_API_LE = spelt(API_BOUNDS)
_GUESTS = (f"{VM_GUESTS}/", f"{CONTAINER_GUESTS}/")


def _number(value: Any) -> float | None:
    """VDSM's figures are often strings: '41.87', '4512044682'."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Collector:
    """Builds every family of a scrape (the endpoint's threads; blocks for ≤ 2 asks).

    Thread-safe: concurrent scrapes share only the error counts (a dict bumped under
    the GIL).
    """

    def __init__(
        self,
        *,
        registry: Registry,
        runtime: Runtime,
        api: ApiRecorder | None = None,
        ask_timeout: float = ASK_TIMEOUT,
    ) -> None:
        """Read from `registry`, `runtime` and `api` (None: no API metrics)."""
        self._registry = registry
        self._runtime = runtime
        self._api = api
        self._timeout = ask_timeout
        self._scrape_errors: dict[str, int] = {}

    def collect(self) -> list[Family]:
        """Every family of one scrape."""
        families = [*self._actors(), *self._runtime_stats()]
        families += self._guarded("host", self._host)
        families += self._guarded("vms", self._vms)
        families += self._guarded("storage", self._storage)
        if self._api is not None:
            families += self._api_metrics(self._api)
        errors = Family(
            "hostvisor_scrape_errors_total", "counter", "Scrape parts left out (no answer in time)"
        )
        for part, count in sorted(self._scrape_errors.items()):
            errors.add(labels(part=part), count)
        families.append(errors)
        return families

    def _guarded(self, part: str, build: Callable[[], list[Family]]) -> list[Family]:
        try:
            return build()
        except (HostvisorError, pykka.Timeout, pykka.ActorDeadError) as error:
            log.info("metrics: %s left out of this scrape: %s", part, error)
            self._scrape_errors[part] = self._scrape_errors.get(part, 0) + 1
            return []

    # -- actors -------------------------------------------------------------------------

    def _actors(self) -> list[Family]:
        mailbox = Family("hostvisor_actor_mailbox_depth", "gauge", "Messages waiting")
        handled = Family(
            "hostvisor_actor_messages_handled_total",
            "counter",
            "Messages handled (this incarnation)",
        )
        skipped = Family(
            "hostvisor_actor_asks_skipped_total", "counter", "Asks dropped: their asker gave up"
        )
        restarts = Family("hostvisor_actor_restarts_total", "counter", "Restarts of the child slot")
        busy = Family(
            "hostvisor_actor_busy_seconds_total", "counter", "Time spent handling messages"
        )
        up = Family("hostvisor_actor_up", "gauge", "1 when the actor runs, else 0 (state label)")
        latency = Family(
            "hostvisor_actor_handling_seconds", "histogram", "Time to handle one message"
        )
        by_class: dict[str, tuple[list[int], list[float]]] = {}
        for status in self._registry.snapshot():
            key = labels(path=status.path, actor_class=status.actor_class)
            mailbox.add(key, status.mailbox_depth)
            handled.add(key, status.messages_handled)
            skipped.add(key, status.skipped)
            restarts.add(key, status.restarts.count)
            busy.add(key, status.busy_total_seconds)
            up.add(f'{key},state="{status.state}"', 1 if status.state == "running" else 0)
            if status.latency_counts:
                if not status.path.startswith(_GUESTS):
                    latency.add_histogram(
                        key, _ACTOR_LE, status.latency_counts, status.busy_total_seconds
                    )
                _add_to_class(by_class, status)
        per_class = Family(
            "hostvisor_actor_class_handling_seconds",
            "histogram",
            "Time to handle one message, over all actors of a class",
        )
        for name, (counts, total) in sorted(by_class.items()):
            per_class.add_histogram(labels(actor_class=name), _ACTOR_LE, counts, total[0])
        return [mailbox, handled, skipped, restarts, busy, up, latency, per_class]

    def _runtime_stats(self) -> list[Family]:
        sched = self._runtime.scheduler.statistics()
        work = self._runtime.work.statistics()
        figures: list[tuple[str, str, str, float]] = [
            ("hostvisor_scheduler_workers", "gauge", "Scheduler threads", sched.workers),
            ("hostvisor_scheduler_parked_workers", "gauge", "Scheduler threads idle", sched.parked),
            ("hostvisor_scheduler_turns_total", "counter", "Actor turns run", sched.runs),
            ("hostvisor_work_workers", "gauge", "Work facility threads", work.workers),
            ("hostvisor_work_busy", "gauge", "Work facility jobs running", work.busy),
            ("hostvisor_work_queued", "gauge", "Work facility jobs waiting", work.queued),
            ("hostvisor_work_jobs_total", "counter", "Work facility jobs done", work.done),
        ]
        families = []
        for name, kind, text, value in figures:
            family = Family(name, kind, text)  # type: ignore[arg-type]
            family.add("", value)
            families.append(family)
        return families

    # -- host ---------------------------------------------------------------------------

    def _host(self) -> list[Family]:
        ref = self._registry.get(HOST)
        if ref is None:
            return []
        stats = HostProxy(ref).stats().get(timeout=self._timeout)
        cpu = Family("hostvisor_host_cpu_ratio", "gauge", "Host CPU use by mode")
        for mode, key in (("user", "cpuUser"), ("system", "cpuSys"), ("idle", "cpuIdle")):
            value = _number(stats.get(key))
            if value is not None:
                cpu.add(labels(mode=mode), value / 100.0)
        families = [cpu]
        for name, key, scale, text in (
            ("hostvisor_host_memory_free_bytes", "memFree", MIB, "Free memory"),
            ("hostvisor_host_memory_used_ratio", "memUsed", 0.01, "Memory in use"),
            ("hostvisor_host_load5", "cpuLoad", 1.0, "5 minute load average"),
        ):
            value = _number(stats.get(key))
            if value is not None:
                family = Family(name, "gauge", text)
                family.add("", value * scale)
                families.append(family)
        rx, tx = _nic_families("hostvisor_host_network")
        _add_nics(stats.get("network"), "", rx, tx)
        families += [rx, tx]
        return families

    def _storage(self) -> list[Family]:
        """Each storage domain's last health check: one ask per domain, answered at once."""
        try:
            children = self._registry.status(STORAGE_DOMAINS).children
        except NotFound:
            return []
        futures = {}
        for path in children:
            ref = self._registry.get(path)
            if ref is not None:
                futures[path.rsplit("/", 1)[-1]] = DomainProxy(ref).repo_stats()
        reports = {sd: future.get(timeout=self._timeout) for sd, future in futures.items()}
        return _domain_families(reports)

    # -- VMs and containers ---------------------------------------------------------------

    def _vms(self) -> list[Family]:
        kinds = self._vm_kinds()
        board = self._registry.get(VM_BOARD)
        entries: list[dict[str, Any]] = []
        if board is not None and kinds:
            rendered = VmBoardProxy(board).render("stats", list(kinds)).get(timeout=self._timeout)
            entries = rendered.answers
        status = Family("hostvisor_vm_status", "gauge", "1 for the VM's status (status label)")
        cpu = Family("hostvisor_vm_cpu_seconds_total", "counter", "CPU time the VM used")
        cpu_ratio = Family("hostvisor_vm_cpu_ratio", "gauge", "VM CPU use by mode")
        memory = Family("hostvisor_vm_memory_used_ratio", "gauge", "Guest memory in use")
        reads = Family("hostvisor_vm_disk_read_bytes_total", "counter", "Bytes read from a disk")
        writes = Family("hostvisor_vm_disk_written_bytes_total", "counter", "Bytes written")
        rx, tx = _nic_families("hostvisor_vm_network")
        for entry in entries:
            vm_id = str(entry.get("vmId", ""))
            key = labels(
                vm_id=vm_id, vm_name=str(entry.get("vmName", "")), kind=kinds.get(vm_id, "vm")
            )
            status.add(f'{key},status="{entry.get("status", "")}"', 1)
            usage = _number(entry.get("cpuUsage"))
            if usage is not None:
                cpu.add(key, usage / 1e9)  # VDSM: nanoseconds
            for mode, field in (("user", "cpuUser"), ("system", "cpuSys")):
                value = _number(entry.get(field))
                if value is not None:
                    cpu_ratio.add(f'{key},mode="{mode}"', value / 100.0)
            mem = _number(entry.get("memUsage"))
            if mem is not None:
                memory.add(key, mem / 100.0)
            _add_disks(entry.get("disks"), key, reads, writes)
            _add_nics(entry.get("network"), key, rx, tx)
        return [status, cpu, cpu_ratio, memory, reads, writes, rx, tx]

    def _vm_kinds(self) -> dict[str, str]:
        """Every VM id the guest supervisors hold, and whether it is a container."""
        kinds: dict[str, str] = {}
        for guests, kind in ((VM_GUESTS, "vm"), (CONTAINER_GUESTS, "container")):
            try:
                children = self._registry.status(guests).children
            except NotFound:
                continue
            for path in children:
                kinds[path.rsplit("/", 1)[-1]] = kind
        return kinds

    # -- API ----------------------------------------------------------------------------

    def _api_metrics(self, api: ApiRecorder) -> list[Family]:
        figures = api.figures()
        calls = Family("hostvisor_api_requests_total", "counter", "Requests answered")
        for method, count in sorted(figures.calls.items()):
            calls.add(labels(method=method), count)
        errors = Family("hostvisor_api_errors_total", "counter", "Requests answered with an error")
        for (method, code), count in sorted(figures.errors.items()):
            errors.add(labels(method=method, code=str(code)), count)
        latency = Family("hostvisor_api_request_seconds", "histogram", "Time to answer a request")
        latency.add_histogram("", _API_LE, figures.latency_counts, figures.latency_sum)
        opened = Family("hostvisor_api_connections", "gauge", "Client connections open")
        opened.add("", figures.connections_open)
        accepted = Family(
            "hostvisor_api_connections_accepted_total", "counter", "Client connections accepted"
        )
        accepted.add("", figures.connections_total)
        return [calls, errors, latency, opened, accepted]


def _add_to_class(by_class: dict[str, tuple[list[int], list[float]]], status: ActorStatus) -> None:
    counts, total = by_class.setdefault(
        status.actor_class, ([0] * len(status.latency_counts), [0.0])
    )
    for index, count in enumerate(status.latency_counts):
        counts[index] += count
    total[0] += status.busy_total_seconds


def _nic_families(prefix: str) -> tuple[Family, Family]:
    return (
        Family(f"{prefix}_receive_bytes_total", "counter", "Bytes received"),
        Family(f"{prefix}_transmit_bytes_total", "counter", "Bytes sent"),
    )


def _add_nics(network: Any, key: str, rx: Family, tx: Family) -> None:
    """Receive/transmit byte counters of each NIC in VDSM's `network` mapping."""
    if not isinstance(network, Mapping):
        return
    prefix = f"{key}," if key else ""
    for name, nic in sorted(network.items()):
        if not isinstance(nic, Mapping):
            continue
        nic_label = f"{prefix}{labels(nic=str(nic.get('name', name)))}"
        for family, field in ((rx, "rx"), (tx, "tx")):
            value = _number(nic.get(field))
            if value is not None:
                family.add(nic_label, value)


def _add_disks(disks: Any, key: str, reads: Family, writes: Family) -> None:
    if not isinstance(disks, Mapping):
        return
    for name, disk in sorted(disks.items()):
        if not isinstance(disk, Mapping):
            continue
        disk_label = f"{key},{labels(disk=str(name))}"
        for family, field in ((reads, "readBytes"), (writes, "writtenBytes")):
            value = _number(disk.get(field))
            if value is not None:
                family.add(disk_label, value)


def _domain_families(reports: Mapping[str, Any]) -> list[Family]:
    """Delay, age and validity of each domain's last check (VDSM's repoStats entries)."""
    delay = Family(
        "hostvisor_storage_domain_check_delay_seconds",
        "gauge",
        "How long the domain's last health check (a read) took",
    )
    age = Family(
        "hostvisor_storage_domain_last_check_age_seconds", "gauge", "Since the last health check"
    )
    valid = Family("hostvisor_storage_domain_valid", "gauge", "1 when the domain is valid")
    for sd_uuid, report in sorted(reports.items()):
        if not isinstance(report, Mapping):
            continue
        key = labels(sd_uuid=str(sd_uuid))
        for family, field in ((delay, "delay"), (age, "lastCheck")):
            value = _number(report.get(field))
            if value is not None:
                family.add(key, value)
        valid.add(key, 1 if report.get("valid") else 0)
    return [delay, age, valid]
