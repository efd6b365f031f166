"""Host statistics: VDSM's `Host.getStats`, from a window of two samples.

`HostStatsSampler.sample()` records the CPU counters (host, per CPU, this process,
ksmd); `stats()` turns the last two samples into percentages and adds what is read
fresh at that moment (memory, disks, hugepages, NUMA, KSM, network counters). Plain
blocking code with no thread and no lock: its owner calls it from one thread.

Types follow VDSM (`host/api.py`, `host/stats.py`; reference/vdsm-wire.md §5). VDSM
passes its computed figures through `convertToStr`, so percentages are strings
with two decimals ("1.25"), integer figures are strings ("42"), while `memFree`,
`swapTotal`, `swapFree`, the VM counts and KSM figures are ints.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hostvisor.actors.host.hardware import parse_cpu_list, read_text
from hostvisor.actors.host.netinfo import interface_stats

_MIB = 1024 * 1024
_HUGEPAGES = Path("/sys/kernel/mm/hugepages")
_NODES = Path("/sys/devices/system/node")
_KSM = Path("/sys/kernel/mm/ksm")
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_HUGEPAGE_KEYS = (
    "free_hugepages",
    "nr_hugepages",
    "nr_hugepages_mempolicy",
    "nr_overcommit_hugepages",
    "resv_hugepages",
    "surplus_hugepages",
)
# What VDSM reports when no MOM daemon answers; Hostvisor runs none.
MOM_STATUS = "inactive"
DISK_PATHS = ("/tmp", "/var/log")  # noqa: S108 - VDSM's monitored paths, only read
VDSM_RUN = "/run/vdsm"
_VM_COUNTS = ("vmCount", "vmActive", "vmMigrating", "incomingVmMigrations", "outgoingVmMigrations")


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuTimes:
    """Cumulative CPU seconds: user (with nice) and system."""

    user: float
    system: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSample:
    """The CPU counters of one moment; `at` is on the sampler's monotonic clock."""

    at: float
    host: CpuTimes
    per_cpu: dict[int, CpuTimes]
    process: CpuTimes
    ksmd: CpuTimes | None


class HostStatsSampler:
    """Keeps the last two host samples and builds `Host.getStats` from them.

    A convenience for tools and tests that sample and render in one thread. The host
    actor uses the two halves apart: `read_sample` and `render_stats` run on a
    worker, and the actor keeps the window.
    """

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        started_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        network_stats: Callable[[], dict[str, Any]] = interface_stats,
    ) -> None:
        """Create a sampler with an empty window.

        Args:
            state_dir: the agent's run-time directory; `diskStats` reports its free
                space beside /tmp and /var/log, where VDSM reports /run/vdsm.
            started_at: the agent's start on `clock`, for `elapsedTime`; now if None.
            clock: a monotonic clock in seconds (injected in tests).
            wall: seconds since the epoch, for `dateTime`.
            network_stats: reads the network part of getStats (`network`,
                `rxDropped`, `txDropped`) of the namespace the host manages.
        """
        self._network_stats = network_stats
        self._clock = clock
        self._wall = wall
        self._started_at = clock() if started_at is None else started_at
        self.disk_paths = disk_paths(state_dir)
        self._window: deque[HostSample] = deque(maxlen=2)
        self._ksmd: psutil.Process | None = find_ksmd()

    def sample(self) -> HostSample:
        """Record a sample of the CPU counters now, dropping the oldest of the window."""
        taken = read_sample(self._clock(), self._ksmd)
        if taken.ksmd is None:
            self._ksmd = None
        self._window.append(taken)
        return taken

    def stats(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return VDSM's `Host.getStats` result.

        CPU percentages come from the last two samples; with fewer, a sample is taken
        and the CPU shows as idle (VDSM does the same before its second sample).

        Args:
            extra: fields owned by other parts of the agent, laid over the result:
                the VM counts (`vmCount`, `vmActive`, `vmMigrating`,
                `incomingVmMigrations`, `outgoingVmMigrations`; 0 when absent),
                `storageDomains`, `haStats`, `netConfigDirty`, `elapsedTime` (agent
                uptime in seconds; a number is formatted as VDSM's "12.34" string)...

        Returns:
            The complete getStats dictionary, ready to be sent as JSON.
        """
        if not self._window:
            self.sample()
        return render_stats(
            self._window[0],
            self._window[-1],
            disks=self.disk_paths,
            network=self._network_stats(),
            elapsed=self._clock() - self._started_at,
            wall=self._wall(),
            extra=extra,
        )


def disk_paths(state_dir: Path | None) -> tuple[str, ...]:
    """The paths `diskStats` reports: VDSM's, with the agent's run-time directory."""
    return (*DISK_PATHS, str(state_dir) if state_dir else VDSM_RUN)


def read_sample(at: float, ksmd: psutil.Process | None) -> HostSample:
    """Read the CPU counters now (blocking: /proc); `at` is the caller's clock reading.

    The sample's `ksmd` is None when `ksmd` is None or has gone.
    """
    return HostSample(
        at=at,
        host=_host_cpu_times(),
        per_cpu=_per_cpu_times(),
        process=_process_cpu_times(),
        ksmd=_ksmd_times(ksmd),
    )


def render_stats(  # noqa: PLR0913 - the window and what is read beside it
    first: HostSample,
    last: HostSample,
    *,
    disks: Sequence[str],
    network: Mapping[str, Any],
    elapsed: float,
    wall: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build `Host.getStats` from two samples and what is read now (blocking: /proc, /sys).

    Args:
        first: the older sample of the window (`last` itself with only one).
        last: the newer sample.
        disks: the paths `diskStats` reports.
        network: the network part (`network`, `rxDropped`, `txDropped`).
        elapsed: the agent's uptime in seconds.
        wall: seconds since the epoch, for `dateTime`.
        extra: fields laid over the result (see `HostStatsSampler.stats`).
    """
    result = _cpu_stats(first, last)
    result.update(_memory_stats())
    result.update(_ksm_stats(first, last))
    result.update(network)
    result.update(
        diskStats=disk_stats(disks),
        elapsedTime=f"{elapsed:.2f}",
        bootTime=str(int(psutil.boot_time())),
        dateTime=date_time(wall),
        netConfigDirty="False",
        storageDomains={},  # Host.getStats lays the storage monitors' entries over it
        multipathHealth={},
        v2vJobs={},
        momStatus=MOM_STATUS,
        haStats={
            "configured": False,
            "active": False,
            "score": 0,
            "globalMaintenance": False,
            "localMaintenance": False,
        },
        haScore=0,
    )
    result.update(dict.fromkeys(_VM_COUNTS, 0))
    result.update(extra or {})
    if isinstance(result["elapsedTime"], int | float):
        result["elapsedTime"] = f"{result['elapsedTime']:.2f}"  # VDSM's type: a string
    return result


def date_time(wall: float) -> str:
    """`dateTime` as VDSM writes it: UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S GMT", time.gmtime(wall))


def _ksmd_times(ksmd: psutil.Process | None) -> CpuTimes | None:
    if ksmd is None:
        return None
    try:
        times = ksmd.cpu_times()
    except psutil.Error:
        return None
    return CpuTimes(user=times.user, system=times.system)


# -- CPU -----------------------------------------------------------------------------------


def _host_cpu_times() -> CpuTimes:
    times = psutil.cpu_times()
    return CpuTimes(user=times.user + times.nice, system=times.system)


def _per_cpu_times(path: Path = Path("/proc/stat")) -> dict[int, CpuTimes]:
    """Per-CPU times by CPU id (psutil numbers them by position, which skips offline CPUs)."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpus = {}
    for line in read_text(path).splitlines():
        name, *values = line.split() or [""]
        if name.startswith("cpu") and name != "cpu":
            user, nice, system = (int(v) for v in values[:3])
            cpus[int(name[3:])] = CpuTimes(user=(user + nice) / ticks, system=system / ticks)
    return cpus


def _process_cpu_times() -> CpuTimes:
    times = os.times()
    return CpuTimes(user=times.user, system=times.system)


def _percent(first: float, last: float, interval: float, cpus: int = 1) -> float:
    return max(0.0, (last - first) / interval / cpus * 100)


def _cpu_stats(first: HostSample, last: HostSample) -> dict[str, Any]:
    """cpuUser/Sys/Idle (share of the whole host), this process's, and per CPU."""
    interval = last.at - first.at
    user = system = own_user = own_system = 0.0
    per_cpu: dict[str, Any] = {}
    if interval > 0:
        ncpus = max(len(last.per_cpu), 1)
        user = _percent(first.host.user, last.host.user, interval, ncpus)
        system = _percent(first.host.system, last.host.system, interval, ncpus)
        own_user = _percent(first.process.user, last.process.user, interval)
        own_system = _percent(first.process.system, last.process.system, interval)
        per_cpu = _per_cpu_stats(first, last, interval)
    idle = max(0.0, 100.0 - user - system)
    return {
        "cpuUser": f"{min(user, 100.0):.2f}",
        "cpuSys": f"{min(system, 100.0):.2f}",
        "cpuIdle": f"{idle:.2f}",
        "cpuUserVdsmd": f"{own_user:.2f}",
        "cpuSysVdsmd": f"{own_system:.2f}",
        "cpuLoad": (read_text(Path("/proc/loadavg")).split() or ["0.0", "0.0"])[1],
        "cpuStatistics": per_cpu,
    }


def _per_cpu_stats(first: HostSample, last: HostSample, interval: float) -> dict[str, Any]:
    node_of = _cpu_nodes()
    stats = {}
    for cpu, times in sorted(last.per_cpu.items()):
        before = first.per_cpu.get(cpu)
        if before is None:
            continue  # came online between the samples
        user = min(_percent(before.user, times.user, interval), 100.0)
        system = min(_percent(before.system, times.system, interval), 100.0)
        stats[str(cpu)] = {
            "nodeIndex": node_of.get(cpu, 0),
            "cpuUser": f"{user:.2f}",
            "cpuSys": f"{system:.2f}",
            "cpuIdle": f"{max(0.0, 100.0 - user - system):.2f}",
        }
    return stats


def _cpu_nodes() -> dict[int, int]:
    nodes = {}
    for node in _node_ids():
        for cpu in parse_cpu_list(read_text(_NODES / f"node{node}" / "cpulist")):
            nodes[cpu] = node
    return nodes


def _node_ids() -> list[int]:
    return parse_cpu_list(read_text(_NODES / "online")) or [0]


# -- memory --------------------------------------------------------------------------------


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """Return /proc/meminfo (or a NUMA node's meminfo) as {field: KiB}."""
    info = {}
    for line in read_text(path).splitlines():
        words = line.replace(":", " ").split()
        if words and words[0] == "Node":  # "Node 0 MemFree: 123 kB"
            words = words[2:]
        if len(words) >= 2 and words[1].isdigit():  # noqa: PLR2004 - name and value
            info[words[0]] = int(words[1])
    return info


def _memory_stats() -> dict[str, Any]:
    meminfo = read_meminfo()
    free_kib = sum(meminfo.get(k, 0) for k in ("MemFree", "Cached", "Buffers", "SReclaimable"))
    total_kib = meminfo.get("MemTotal", 0) or 1
    return {
        "memUsed": str(100 - int(100.0 * free_kib / total_kib)),
        "memFree": free_kib // 1024,
        "swapTotal": meminfo.get("SwapTotal", 0) // 1024,
        "swapFree": meminfo.get("SwapFree", 0) // 1024,
        "anonHugePages": str(meminfo.get("AnonHugePages", 0) // 1024),
        "hugepages": hugepages_state(),
        "thpState": _thp_state(),
        "numaNodeMemFree": _numa_memory(meminfo),
    }


def hugepages_state(root: Path = _HUGEPAGES) -> dict[str, dict[str, int]]:
    """Return {size in KiB (as a string key): {free_hugepages, nr_hugepages, ...}}."""
    sizes: dict[str, dict[str, int]] = {}
    for directory in sorted(root.glob("hugepages-*kB")):
        size = directory.name.removeprefix("hugepages-").removesuffix("kB")
        state = {key: _int(directory / key) for key in _HUGEPAGE_KEYS}
        state["vm.free_hugepages"] = state["free_hugepages"]  # Hostvisor reserves none
        sizes[size] = state
    return sizes


def _thp_state() -> str:
    text = read_text(_THP)
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else "never"


def _numa_memory(host_meminfo: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Free MiB (a string) and used percent (an int) per NUMA node.

    On a single-node host the node is the whole host, as in VDSM (which asks libvirt
    for cell -1 then); some virtual machines show less memory in the node than in
    /proc/meminfo.
    """
    nodes = _node_ids()
    report = {}
    for node in nodes:
        meminfo = (
            host_meminfo if len(nodes) == 1 else read_meminfo(_NODES / f"node{node}" / "meminfo")
        )
        free, total = meminfo.get("MemFree", 0), meminfo.get("MemTotal", 0)
        percent = 100 - int(100.0 * free // total) if total else 100
        report[str(node)] = {"memFree": str(free // 1024), "memPercent": percent}
    return report


def _int(path: Path) -> int:
    try:
        return int(read_text(path))
    except ValueError:
        return 0


# -- KSM and disks -------------------------------------------------------------------------


def find_ksmd() -> psutil.Process | None:
    """Return the kernel's ksmd process, or None (blocking: walks every process)."""
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "ksmd":
            return process
    return None


def _ksm_stats(first: HostSample, last: HostSample) -> dict[str, Any]:
    """KSM as VDSM gets it from MOM: state, pages to scan, shared MiB, ksmd CPU %."""
    interval = last.at - first.at
    cpu = 0
    if first.ksmd and last.ksmd and interval > 0:
        busy = (last.ksmd.user + last.ksmd.system) - (first.ksmd.user + first.ksmd.system)
        cpu = round(max(0.0, busy / interval * 100))
    return {
        "ksmState": _int(_KSM / "run") == 1,
        "ksmPages": _int(_KSM / "pages_to_scan"),
        "ksmMergeAcrossNodes": _int(_KSM / "merge_across_nodes") == 1,
        "ksmCpu": cpu,
        "memShared": _int(_KSM / "pages_sharing") * os.sysconf("SC_PAGE_SIZE") // _MIB,
    }


def disk_stats(paths: Sequence[str]) -> dict[str, dict[str, str]]:
    """Return {path: {"free": MiB available to unprivileged users, as a string}}.

    A path that cannot be examined reports "0", as VDSM does.
    """
    report = {}
    for path in paths:
        try:
            fs = os.statvfs(path)
        except OSError:
            free = 0
        else:
            free = fs.f_bavail * fs.f_frsize // _MIB
        report[path] = {"free": str(free)}
    return report
