"""Bulk sampling of running domains: VDSM's `VMBulkstatsMonitor` call, without the timer.

One `getAllDomainStats` call reads the state, CPU, balloon, vCPU, interface and block
statistics of every active domain (reference/vdsm-wire.md §5). When some domains are
stuck, the caller falls back to `sample_domains` over the responsive ones, as VDSM
does, and `check_responsive` tells those apart the way VDSM does (libvirt's domain
control info). Plain blocking code with no thread and no state: the caller owns the
schedule, keeps the window of samples and decides which domains to skip.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

from hostvisor.actors.clock import Clock, MonotonicClock
from hostvisor.actors.vm.stats import VmSample

REAL_CLOCK = MonotonicClock()
"""Where a sample reads the time unless the caller gives its own clock."""

# The groups VDSM's bulk sampler asks for; the per-VM stats are built from these keys.
STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
# NOWAIT (libvirt 4.5) skips the stats that need a domain job a stuck monitor holds,
# instead of waiting for it; older bindings lack the constant and get plain waits.
NOWAIT: int = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
BULK_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE | NOWAIT


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkSample:
    """The statistics of many domains read by one libvirt call.

    Attributes:
        taken_at: the clock's monotonic seconds just before the call; rates use
            differences of it.
        wall_time: the clock's wall time at the same moment, for reporting.
        records: libvirt's flat record per domain ("cpu.time", "block.0.rd.bytes"...),
            keyed by the domain's UUID string. A domain libvirt could not read fully
            has a partial record; a domain that was not active is absent.
    """

    taken_at: float
    wall_time: float
    records: dict[str, dict[str, Any]]

    def vm_sample(self, vm_id: str) -> VmSample | None:
        """Return the sample of one domain, or None if the call did not cover it."""
        record = self.records.get(vm_id)
        if record is None:
            return None
        return VmSample(taken_at=self.taken_at, record=record)


def bulk_sample(conn: libvirt.virConnect, clock: Clock = REAL_CLOCK) -> BulkSample:
    """Read the statistics of every active domain (running or paused) in one call.

    Args:
        conn: an open libvirt connection.
        clock: where `taken_at` and `wall_time` are read (the caller's actor's).

    Returns:
        The sample; `records` is empty when no domain is active.

    Raises:
        libvirt.libvirtError: the call failed as a whole (connection lost...).
    """
    taken_at, wall_time = clock.monotonic(), clock.time()
    pairs = conn.getAllDomainStats(STATS, BULK_FLAGS)
    return BulkSample(taken_at=taken_at, wall_time=wall_time, records=_by_uuid(pairs))


def sample_domains(
    conn: libvirt.virConnect, domains: Sequence[libvirt.virDomain], clock: Clock = REAL_CLOCK
) -> BulkSample:
    """Read the statistics of the given domains only: VDSM's fallback when some are stuck.

    Args:
        conn: an open libvirt connection.
        domains: the domains to read, normally the responsive ones; an empty
            sequence makes no libvirt call.
        clock: where `taken_at` and `wall_time` are read (the caller's actor's).

    Returns:
        The sample over `domains`; one that is no longer active is absent.

    Raises:
        libvirt.libvirtError: the call failed as a whole.
    """
    taken_at, wall_time = clock.monotonic(), clock.time()
    pairs = conn.domainListGetStats(list(domains), STATS, BULK_FLAGS) if domains else []
    return BulkSample(taken_at=taken_at, wall_time=wall_time, records=_by_uuid(pairs))


@dataclass(frozen=True, slots=True)
class Responsiveness:
    """Which domains can be sampled without risk of hanging on their QEMU monitor."""

    responsive: list[libvirt.virDomain]
    unresponsive: list[str]
    """UUIDs of the domains whose control interface is busy or broken."""


def check_responsive(conn: libvirt.virConnect, vm_ids: Iterable[str]) -> Responsiveness:
    """Split `vm_ids` into domains ready for commands and the others (VDSM's check).

    A domain is ready when libvirt reports its control interface OK: no job holds it
    and nothing waits on its monitor. A domain with a call stuck on a frozen QEMU
    reports OCCUPIED (or JOB) until that call returns. `controlInfo` takes no domain
    job and never talks to QEMU, so this cannot hang on a stuck guest.

    Args:
        conn: an open libvirt connection.
        vm_ids: the UUIDs to check; ones libvirt does not know, or whose domain is
            not running, are in neither list.
    """
    responsive: list[libvirt.virDomain] = []
    unresponsive: list[str] = []
    for vm_id in vm_ids:
        try:
            domain = conn.lookupByUUIDString(vm_id)
            state = domain.controlInfo()[0]
        except libvirt.libvirtError:
            continue
        if state == libvirt.VIR_DOMAIN_CONTROL_OK:
            responsive.append(domain)
        else:
            unresponsive.append(vm_id)
    return Responsiveness(responsive=responsive, unresponsive=unresponsive)


def _by_uuid(
    pairs: Iterable[tuple[libvirt.virDomain, dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    return {domain.UUIDString(): record for domain, record in pairs}
