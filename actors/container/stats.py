"""Container statistics in VDSM's `VM.getStats` names and types, from docker's stats.

`container_stats` turns two one-shot samples of `docker stats` (the current one
and the one before it) into the fields a KVM VM reports (reference/vdsm-wire.md §5;
`hostvisor.actors.vm.stats` for the VM side), typed the same way:

- `cpuUser`, `cpuSys`: "%.2f" percent of one host CPU over the interval, from the
  cgroup's user and kernel time; `cpuUsage`: the cgroup's cumulative CPU
  nanoseconds, an int string; `vcpuCount`, `vcpuQuota`, `vcpuPeriod`: int strings.
- `memUsage`: whole percent of the memory limit in use (page cache that can be
  reclaimed counts as free, as `docker stats` does), an int string.
- `memoryStats`: `mem_total` (the limit), `mem_unused`, `mem_free`, `mem_cached`
  as KiB strings; `swap_in`, `swap_out`, `majflt`, `minflt`, `pageflt` as ints per
  second over the interval.
- `network.<dev>`: cumulative counters as strings, `speed` "1000", `state`
  "unknown", `sampleTime` the sample's monotonic time (a float).

Containers have no balloon and no block devices of their own: `balloonInfo` and
`disks` are left out, as VDSM leaves out empty sections. Works with cgroup v1 and
v2 (docker names the counters the same way in both, except the reclaimable cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NS_PER_S = 1_000_000_000
_NIC_COUNTERS = {
    "rx": "rx_bytes",
    "tx": "tx_bytes",
    "rxErrors": "rx_errors",
    "rxDropped": "rx_dropped",
    "txErrors": "tx_errors",
    "txDropped": "tx_dropped",
}
_CACHE_KEYS = ("total_inactive_file", "inactive_file")
"""Reclaimable page cache: cgroup v1 name, then v2."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerSample:
    """One container's docker stats and when they were read.

    Attributes:
        taken_at: the sampler's clock, monotonic seconds, at the read.
        raw: docker's one-shot stats answer.
    """

    taken_at: float
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuLimits:
    """The container's CPU settings, as the VM reports them."""

    vcpus: int = 1
    period: int = 100_000
    quota: int = -1
    """Microseconds per period per vCPU; -1 is no limit (libvirt's convention)."""


def container_stats(
    current: ContainerSample, previous: ContainerSample | None, *, cpu: CpuLimits
) -> dict[str, Any]:
    """Return VDSM's statistics fields of one container VM from its last two samples."""
    interval = current.taken_at - previous.taken_at if previous else 0.0
    before = previous.raw if previous is not None and interval > 0 else None
    stats: dict[str, Any] = _cpu(before, current.raw, interval)
    stats.update(vcpuCount=str(cpu.vcpus), vcpuQuota=str(cpu.quota), vcpuPeriod=str(cpu.period))
    memory = current.raw.get("memory_stats") or {}
    stats["memUsage"] = _mem_usage(memory)
    sections = {
        "memoryStats": _memory_stats(before, memory, interval),
        "network": _network(current.raw.get("networks") or {}, current.taken_at),
    }
    stats.update({name: value for name, value in sections.items() if value})
    return stats


def _cpu_usage(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    return (raw.get("cpu_stats") or {}).get("cpu_usage") or {}


def _cpu(
    before: Mapping[str, Any] | None, last: Mapping[str, Any], interval: float
) -> dict[str, Any]:
    usage = _cpu_usage(last)
    stats = {"cpuUser": "0.00", "cpuSys": "0.00", "cpuUsage": str(int(usage.get("total_usage", 0)))}
    if before is None:
        return stats
    earlier = _cpu_usage(before)
    for field, key in (("cpuUser", "usage_in_usermode"), ("cpuSys", "usage_in_kernelmode")):
        grown = max(0, usage.get(key, 0) - earlier.get(key, 0))
        stats[field] = f"{100 * grown / interval / _NS_PER_S:.2f}"
    return stats


def _used_and_cache(memory: Mapping[str, Any]) -> tuple[int, int]:
    counters = memory.get("stats") or {}
    cache = next((int(counters[key]) for key in _CACHE_KEYS if key in counters), 0)
    usage = int(memory.get("usage", 0))
    return max(0, usage - cache), cache


def _mem_usage(memory: Mapping[str, Any]) -> str:
    limit = int(memory.get("limit", 0))
    if limit <= 0:
        return "0"
    used, _cache = _used_and_cache(memory)
    return str(int(used * 100 / limit))


def _memory_stats(
    before: Mapping[str, Any] | None, memory: Mapping[str, Any], interval: float
) -> dict[str, Any]:
    limit = int(memory.get("limit", 0))
    if limit <= 0:
        return {}
    used, cache = _used_and_cache(memory)
    unused = str(max(0, limit - used) // 1024)
    stats: dict[str, Any] = {
        "mem_total": str(limit // 1024),
        "mem_unused": unused,
        "mem_free": unused,
        "mem_cached": str(cache // 1024),
        "swap_in": 0,
        "swap_out": 0,
        "majflt": 0,
        "minflt": 0,
        "pageflt": 0,
    }
    if before is None:
        return stats
    now = memory.get("stats") or {}
    then = (before.get("memory_stats") or {}).get("stats") or {}
    faults = _rate(then, now, "pgfault", interval)
    stats["majflt"] = _rate(then, now, "pgmajfault", interval)
    stats["minflt"] = max(0, faults - stats["majflt"])
    stats["pageflt"] = faults
    return stats


def _rate(before: Mapping[str, Any], after: Mapping[str, Any], key: str, interval: float) -> int:
    if key not in before or key not in after:
        return 0
    return round(max(0, int(after[key]) - int(before[key])) / interval)


def _network(networks: Mapping[str, Any], sample_time: float) -> dict[str, dict[str, Any]]:
    network: dict[str, dict[str, Any]] = {}
    for name, counters in networks.items():
        nic: dict[str, Any] = {"name": name, "speed": "1000", "state": "unknown"}
        for field, key in _NIC_COUNTERS.items():
            nic[field] = str(int(counters.get(key, 0)))
        nic["sampleTime"] = sample_time
        network[name] = nic
    return network
