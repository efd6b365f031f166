"""The metrics of one scrape: the host, VMs, containers, actors, runtime and API.

Nothing here waits on a busy actor or makes an actor do work beyond a cached
answer. Each scrape, on the endpoint's HTTP thread:
- actors, scheduler and work pool: the registry's entries (`live.live_entries`) and
  `statistics()`, which read counters each actor keeps for itself (no message, no
  lock on their side);
- the host: one ask to the host actor for the stats it already sampled
  (`HostProxy.stats`, deadline `ASK_TIMEOUT`), and one to each storage domain for
  its last health check (`DomainProxy.repo_stats`, answered from the monitor's last
  result, as `Host.getStats` does);
- VMs and containers: one ask to the VM board for every VM's last entry (the same
  board `Host.getAllVmStats` reads), deadline `ASK_TIMEOUT`;
- each actor's and guest's lines are kept between scrapes and formatted again only
  when a figure they show changed (`actors.ActorRows`, `guests.GuestRows`): at a
  thousand idle VMs a scrape reuses nearly every line.
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

from hostvisor.actors.container.addresses import CONTAINER_GUESTS
from hostvisor.actors.errors import HostvisorError, NotFound
from hostvisor.actors.host.addresses import HOST
from hostvisor.actors.host.proxy import HostProxy
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.storage.addresses import STORAGE_DOMAINS
from hostvisor.actors.storage.proxy import DomainProxy
from hostvisor.actors.vm.addresses import VM_BOARD, VM_GUESTS
from hostvisor.actors.vm.proxy import VmBoardProxy
from hostvisor.api.metrics.actors import ActorRows
from hostvisor.api.metrics.guests import GuestRows, as_number
from hostvisor.api.metrics.live import live_entries
from hostvisor.api.metrics.recorder import API_BOUNDS, ApiRecorder
from hostvisor.api.metrics.text import Family, labels, spelt
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

ASK_TIMEOUT = 2.0
"""Seconds the host actor and the VM board each have to answer a scrape."""
MIB = 1024 * 1024
_API_LE = spelt(API_BOUNDS)


class Collector:
    """Builds every family of a scrape (the endpoint's threads; blocks for ≤ 2 asks).

    Thread-safe: concurrent scrapes share the error counts (a dict bumped under the
    GIL) and the kept rows (each builder takes its lock for a few milliseconds).
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
        self._actor_rows = ActorRows()
        self._guest_rows = GuestRows()

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
        return self._actor_rows.families(live_entries(self._registry))

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
            value = as_number(stats.get(key))
            if value is not None:
                cpu.add(labels(mode=mode), value / 100.0)
        families = [cpu]
        for name, key, scale, text in (
            ("hostvisor_host_memory_free_bytes", "memFree", MIB, "Free memory"),
            ("hostvisor_host_memory_used_ratio", "memUsed", 0.01, "Memory in use"),
            ("hostvisor_host_load5", "cpuLoad", 1.0, "5 minute load average"),
        ):
            value = as_number(stats.get(key))
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
        """Every guest the board holds: its entries when it hands them out, else its stats.

        The entries (`VmBoard.entries`) cost the board's thread a dict copy; rendering
        stats for a thousand VMs costs it milliseconds, during which `getAllVmStats`
        waits in its mailbox.
        """
        kinds = self._vm_kinds()
        board = self._registry.get(VM_BOARD)
        if board is None or not kinds:
            return self._guest_rows.from_stats([], kinds)
        entries = VmBoardProxy(board).entries().get(timeout=self._timeout)
        now = self._runtime.clock.monotonic()
        return self._guest_rows.from_entries(entries, kinds, now)

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
            value = as_number(nic.get(field))
            if value is not None:
                family.add(nic_label, value)


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
            value = as_number(report.get(field))
            if value is not None:
                family.add(key, value)
        valid.add(key, 1 if report.get("valid") else 0)
    return [delay, age, valid]
