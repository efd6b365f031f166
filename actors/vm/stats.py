"""Per-VM statistics: VDSM's `VM.getStats` figures from two libvirt bulk-stats records.

`vm_stats` turns the record of one domain (see `sampling.bulk_sample`) and the
record of the sample before it into the CPU, memory, balloon, network and disk
fields of VDSM's `VM.getStats` (reference/vdsm-wire.md §5; VDSM `virt/vmstats.py`).
Rates come from those two samples only. Plain functions with no I/O: the caller
keeps the previous `VmSample` and adds the fields it owns (status, elapsedTime...).

Names and types follow VDSM, which passes top-level figures through `convertToStr`
but leaves the nested dicts as built:

- `cpuUser`, `cpuSys`: "%.2f" percent of one host CPU. As VDSM computes them,
  `cpuSys` is the QEMU process's user + system time and `cpuUser` is the rest of
  `cpu.time` (about 0 where libvirt reads both from the same cgroup).
- `cpuUsage`: cumulative user + system nanoseconds as an int string. `vcpuCount`
  and `memUsage` (whole percent) are int strings.
- `memoryStats`: `mem_total`, `mem_unused`, `mem_free` are KiB strings; `swap_in`,
  `swap_out`, `majflt`, `minflt`, `pageflt` are ints per second over the interval.
- `balloonInfo`: KiB strings, and `ballooning_enabled` a bool.
- `network.<dev>`: cumulative counters as strings, `speed` a string, `sampleTime`
  the sample's monotonic time (a float, as VDSM's `monotonic_time()`).
- `disks.<dev>`: `readRate`/`writeRate` "%.1f" bytes per second, latencies mean
  nanoseconds per request over the interval ("0" when no request), cumulative
  counters and sizes as int strings.

Two deliberate departures, both additions: network and disk counters are reported
from the first sample on (VDSM waits for a second sample), with zero rates; and a
negative delta (a counter reset by a hot-unplug/plug under the same name) counts
as zero rather than as a negative rate. Like VDSM, empty `memoryStats`,
`balloonInfo`, `network` and `disks` are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NS_PER_S = 1_000_000_000
# VDSM reports 1000 Mb/s for paravirtual and e1000 NICs and 100 for emulated ones.
_GIGABIT_MODELS = frozenset({"virtio", "e1000"})
# memoryStats rates: VDSM name -> libvirt balloon key.
_MEMORY_RATES = {
    "swap_in": "balloon.swap_in",
    "swap_out": "balloon.swap_out",
    "majflt": "balloon.major_fault",
    "minflt": "balloon.minor_fault",
}
_NIC_COUNTERS = {
    "rxErrors": "rx.errs",
    "rxDropped": "rx.drop",
    "txErrors": "tx.errs",
    "txDropped": "tx.drop",
    "rx": "rx.bytes",
    "tx": "tx.bytes",
}
_DISK_COUNTERS = {
    "readOps": "rd.reqs",
    "writeOps": "wr.reqs",
    "readBytes": "rd.bytes",
    "writtenBytes": "wr.bytes",
}
_DISK_LATENCIES = {"readLatency": "rd", "writeLatency": "wr", "flushLatency": "fl"}
_DISK_RATES = {"readRate": "rd", "writeRate": "wr"}


@dataclass(frozen=True, slots=True, kw_only=True)
class VmSample:
    """One domain's bulk-stats record and when it was read.

    Attributes:
        taken_at: the sampler's clock, monotonic seconds, at the read.
        record: libvirt's flat record for the domain ("cpu.time", "net.0.rx.bytes"...).
    """

    taken_at: float
    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NicInfo:
    """What the domain definition says of a NIC; the record has only its device name."""

    mac: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveInfo:
    """What storage knows of a drive; sizes in bytes, None where unknown.

    Without sizes, both `apparentsize` and `truesize` report libvirt's
    `block.N.physical` (the host-side allocation).
    """

    image_id: str = ""
    apparent_size: int | None = None
    true_size: int | None = None
    lun_guid: str = ""
    """A direct LUN's GUID (the Engine's `lunGUID`), for a drive with no image."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BalloonConfig:
    """The balloon policy of a VM, in KiB; `target_kib` None means the current size."""

    enabled: bool = True
    minimum_kib: int = 0
    target_kib: int | None = None


def vm_stats(
    current: VmSample,
    previous: VmSample | None,
    *,
    nics: Mapping[str, NicInfo] | None = None,
    drives: Mapping[str, DriveInfo] | None = None,
    balloon: BalloonConfig | None = None,
) -> dict[str, Any]:
    """Return VDSM's statistics fields of one VM from its last two samples.

    Args:
        current: the latest sample of the VM.
        previous: the sample before it, or None; rates are then zero.
        nics: NIC details by target device name ("vnet0"), for `macAddr` and `speed`.
        drives: drive details by target name ("vda"), for `imageID` and sizes.
        balloon: the balloon policy; None means enabled, minimum 0, target current.

    Returns:
        cpuUser, cpuSys, cpuUsage, vcpuCount, memUsage, and where known
        memoryStats, balloonInfo, network and disks, typed as VDSM sends them.
    """
    interval = current.taken_at - previous.taken_at if previous else 0.0
    last = current.record
    first = previous.record if previous and interval > 0 else None
    stats: dict[str, Any] = _cpu(first, last, interval)
    if last.get("vcpu.current", -1) != -1:
        stats["vcpuCount"] = str(last["vcpu.current"])
    stats["memUsage"] = _mem_usage(last)
    sections = {
        "memoryStats": _memory_stats(first, last, interval),
        "balloonInfo": _balloon_info(last, balloon or BalloonConfig()),
        "network": _network(last, nics or {}, current.taken_at),
        "disks": _disks(first, last, interval, drives or {}),
    }
    stats.update({name: value for name, value in sections.items() if value})
    return stats


def _cpu(
    first: Mapping[str, Any] | None, last: Mapping[str, Any], interval: float
) -> dict[str, Any]:
    stats = {"cpuUser": "0.00", "cpuSys": "0.00", "cpuUsage": "0"}
    keys = ("cpu.user", "cpu.system")
    if not all(key in last for key in keys):
        return stats
    stats["cpuUsage"] = str(last["cpu.user"] + last["cpu.system"])
    if first is None or not all(key in first for key in keys):
        return stats
    process = _delta(first, last, "cpu.user") + _delta(first, last, "cpu.system")
    stats["cpuSys"] = _percent(process, interval)
    if "cpu.time" in first and "cpu.time" in last:
        stats["cpuUser"] = _percent(max(0, _delta(first, last, "cpu.time") - process), interval)
    return stats


def _percent(nanoseconds: float, interval: float) -> str:
    return f"{100 * nanoseconds / interval / _NS_PER_S:.2f}"


def _mem_usage(last: Mapping[str, Any]) -> str:
    available = last.get("balloon.available", 0)
    if available <= 0 or "balloon.unused" not in last:
        return "0"
    return str(int((available - last["balloon.unused"]) / available * 100))


def _memory_stats(
    first: Mapping[str, Any] | None, last: Mapping[str, Any], interval: float
) -> dict[str, Any]:
    # VDSM reports nothing without the guest's balloon statistics.
    if "balloon.available" not in last:
        return {}
    unused = str(last.get("balloon.unused", 0))
    stats: dict[str, Any] = {
        "mem_total": str(last["balloon.available"]),
        "mem_unused": unused,
        "mem_free": unused,
    }
    if first is not None:
        for name, key in _MEMORY_RATES.items():
            stats[name] = round(max(0, last.get(key, 0) - first.get(key, 0)) / interval)
        stats["pageflt"] = stats["majflt"] + stats["minflt"]
    return stats


def _balloon_info(last: Mapping[str, Any], config: BalloonConfig) -> dict[str, Any]:
    if "balloon.maximum" not in last:
        return {}
    current = last.get("balloon.current", 0)
    target = current if config.target_kib is None else config.target_kib
    return {
        "balloon_max": str(last["balloon.maximum"]),
        "balloon_min": str(config.minimum_kib),
        "balloon_cur": str(current),
        "balloon_target": str(target),
        "ballooning_enabled": config.enabled,
    }


def _network(
    last: Mapping[str, Any], nics: Mapping[str, NicInfo], sample_time: float
) -> dict[str, dict[str, Any]]:
    network: dict[str, dict[str, Any]] = {}
    for name, index in _indexes(last, "net").items():
        info = nics.get(name, NicInfo())
        nic: dict[str, Any] = {"name": name}
        if info.mac is not None:
            nic["macAddr"] = info.mac
        gigabit = info.model is None or info.model in _GIGABIT_MODELS
        nic.update(speed="1000" if gigabit else "100", state="unknown")
        for field, suffix in _NIC_COUNTERS.items():
            key = f"net.{index}.{suffix}"
            if key in last:
                nic[field] = str(last[key])
        nic["sampleTime"] = sample_time
        network[name] = nic
    return network


def _disks(
    first: Mapping[str, Any] | None,
    last: Mapping[str, Any],
    interval: float,
    drives: Mapping[str, DriveInfo],
) -> dict[str, dict[str, Any]]:
    # libvirt may number the disks differently from one call to the next (hotplug),
    # so each record is mapped by name.
    first_indexes = _indexes(first, "block") if first is not None else {}
    disks: dict[str, dict[str, Any]] = {}
    for name, index in _indexes(last, "block").items():
        disk = _disk_counters(last, index, drives.get(name, DriveInfo()))
        if first is not None and name in first_indexes:
            before = _prefixed(first, f"block.{first_indexes[name]}.")
            after = _prefixed(last, f"block.{index}.")
            disk.update(_disk_deltas(before, after, interval))
        disks[name] = disk
    return disks


def _disk_counters(last: Mapping[str, Any], index: int, drive: DriveInfo) -> dict[str, Any]:
    physical = last.get(f"block.{index}.physical", 0)
    disk: dict[str, Any] = {
        "readRate": "0.0",
        "writeRate": "0.0",
        "readLatency": "0",
        "writeLatency": "0",
        "flushLatency": "0",
    }
    for field, suffix in _DISK_COUNTERS.items():
        disk[field] = str(last.get(f"block.{index}.{suffix}", 0))
    apparent, true = drive.apparent_size, drive.true_size
    disk["apparentsize"] = str(physical if apparent is None else apparent)
    disk["truesize"] = str(physical if true is None else true)
    # VDSM's disk_info: imageID for a storage volume, lunGUID for a direct LUN; the
    # Engine keeps the stats of a disk by that id (buildVmDiskStatistics,
    # buildVmLunDisksData). A drive with neither (a plain file) reports an empty
    # imageID, which the Engine skips as it skips VDSM's missing one.
    if drive.lun_guid and not drive.image_id:
        disk["lunGUID"] = drive.lun_guid
    else:
        disk["imageID"] = drive.image_id
    return disk


def _disk_deltas(
    before: Mapping[str, Any], after: Mapping[str, Any], interval: float
) -> dict[str, str]:
    deltas: dict[str, str] = {}
    for field, mode in _DISK_RATES.items():
        key = f"{mode}.bytes"
        if key in before and key in after:
            deltas[field] = f"{_delta(before, after, key) / interval:.1f}"
    for field, mode in _DISK_LATENCIES.items():
        reqs, times = f"{mode}.reqs", f"{mode}.times"
        if not all(key in before and key in after for key in (reqs, times)):
            continue
        requests = _delta(before, after, reqs)
        deltas[field] = f"{_delta(before, after, times) / requests:.1f}" if requests else "0"
    return deltas


def _delta(before: Mapping[str, Any], after: Mapping[str, Any], key: str) -> Any:
    """Return how much a cumulative counter grew; a reset counts as no growth."""
    return max(0, after[key] - before[key])


def _prefixed(record: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Return the keys of `record` under `prefix`, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in record.items() if key.startswith(prefix)}


def _indexes(record: Mapping[str, Any], group: str) -> dict[str, int]:
    """Map each device name of a bulk-stats group ("net", "block") to its index.

    The count is an upper bound: libvirt leaves out what it could not read,
    names included.
    """
    names = (
        (record.get(f"{group}.{index}.name"), index)
        for index in range(record.get(f"{group}.count", 0))
    )
    return {name: index for name, index in names if name is not None}
