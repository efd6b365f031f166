"""Host.getStats from real samples of this machine."""

from __future__ import annotations

import calendar
import json
import re
import shutil
import socket
import time
from pathlib import Path

import psutil
import pytest
import ujson

from hostvisor.actors.host.hardware import online_cpus
from hostvisor.actors.host.stats import HostStatsSampler

MIB = 1024 * 1024

# Fields VDSM sends as strings (convertToStr), ints, and bools (reference/vdsm-wire.md §5).
STRING_FIELDS = (
    "cpuUser",
    "cpuSys",
    "cpuIdle",
    "cpuUserVdsmd",
    "cpuSysVdsmd",
    "cpuLoad",
    "memUsed",
    "anonHugePages",
    "thpState",
    "elapsedTime",
    "bootTime",
    "dateTime",
    "netConfigDirty",
    "momStatus",
    "rxDropped",
    "txDropped",
)
INT_FIELDS = (
    "memFree",
    "swapTotal",
    "swapFree",
    "memShared",
    "ksmPages",
    "ksmCpu",
    "haScore",
    "vmCount",
    "vmActive",
    "vmMigrating",
    "incomingVmMigrations",
    "outgoingVmMigrations",
)
BOOL_FIELDS = ("ksmState", "ksmMergeAcrossNodes")


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.fixture
def sampled(tmp_path: Path):
    """A sampler with two samples 0.2 s apart, this process busy in between."""
    sampler = HostStatsSampler(state_dir=tmp_path)
    sampler.sample()
    _spin(0.2)
    sampler.sample()
    return sampler


def test_fields_have_vdsm_types(sampled):
    stats = sampled.stats()

    for name in STRING_FIELDS:
        assert type(stats[name]) is str, name
    for name in INT_FIELDS:
        assert type(stats[name]) is int, name
    for name in BOOL_FIELDS:
        assert type(stats[name]) is bool, name
    assert stats["haStats"] == {
        "configured": False,
        "active": False,
        "score": 0,
        "globalMaintenance": False,
        "localMaintenance": False,
    }
    assert stats["storageDomains"] == {}
    assert stats["v2vJobs"] == {}
    assert stats["netConfigDirty"] == "False"
    assert json.loads(json.dumps(stats)) == stats
    assert ujson.loads(ujson.dumps(stats)) == stats


def test_cpu_percentages_come_from_the_two_samples(sampled):
    stats = sampled.stats()

    user, system, idle = (float(stats[k]) for k in ("cpuUser", "cpuSys", "cpuIdle"))
    for value in (user, system, idle):
        assert 0.0 <= value <= 100.0
    assert user + system + idle == pytest.approx(100.0, abs=0.02)
    # This process spun for the whole 0.2 s window: most of one CPU, in user mode.
    assert float(stats["cpuUserVdsmd"]) >= 30.0
    assert 0.0 <= float(stats["cpuSysVdsmd"]) <= 100.0
    assert all(re.fullmatch(r"\d+\.\d\d", stats[k]) for k in ("cpuUser", "cpuSys", "cpuIdle"))


def test_per_cpu_statistics_cover_every_online_cpu(sampled):
    per_cpu = sampled.stats()["cpuStatistics"]

    assert sorted(int(cpu) for cpu in per_cpu) == online_cpus()
    for entry in per_cpu.values():
        assert type(entry["nodeIndex"]) is int
        for key in ("cpuUser", "cpuSys", "cpuIdle"):
            assert type(entry[key]) is str
            assert 0.0 <= float(entry[key]) <= 100.0


def test_one_sample_shows_an_idle_cpu():
    sampler = HostStatsSampler()
    stats = sampler.stats()  # takes the first sample itself

    assert (stats["cpuUser"], stats["cpuSys"], stats["cpuIdle"]) == ("0.00", "0.00", "100.00")
    assert stats["cpuStatistics"] == {}


def test_memory_figures_match_the_kernel(sampled):
    stats = sampled.stats()

    total_mib = psutil.virtual_memory().total // MIB
    assert 0 < stats["memFree"] <= total_mib
    assert 0 <= int(stats["memUsed"]) <= 100
    assert stats["swapTotal"] == psutil.swap_memory().total // MIB
    assert 0 <= stats["swapFree"] <= stats["swapTotal"]
    assert stats["thpState"] in ("always", "madvise", "never")
    for node in stats["numaNodeMemFree"].values():
        assert node["memFree"].isdigit()
        assert type(node["memPercent"]) is int
        assert 0 <= node["memPercent"] <= 100
    sizes = {d.name[10:-2] for d in Path("/sys/kernel/mm/hugepages").iterdir()}
    assert set(stats["hugepages"]) == sizes
    assert all(type(v) is int for size in stats["hugepages"].values() for v in size.values())


def test_disk_stats_report_free_mib_and_zero_for_a_missing_path(tmp_path: Path):
    stats = HostStatsSampler(state_dir=tmp_path).stats()
    disks = stats["diskStats"]

    assert set(disks) == {"/tmp", "/var/log", str(tmp_path)}
    free = int(disks[str(tmp_path)]["free"])
    assert abs(free - shutil.disk_usage(tmp_path).free // MIB) <= 256  # others write too
    missing = HostStatsSampler(state_dir=tmp_path / "absent").stats()["diskStats"]
    assert missing[str(tmp_path / "absent")] == {"free": "0"}


def test_times_are_vdsm_formatted():
    now = [100.0]
    sampler = HostStatsSampler(started_at=40.0, clock=lambda: now[0])
    sampler.sample()
    now[0] = 100.5
    stats = sampler.stats()

    assert stats["elapsedTime"] == "60.50"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d GMT", stats["dateTime"])
    sent = calendar.timegm(time.strptime(stats["dateTime"], "%Y-%m-%dT%H:%M:%S GMT"))
    assert abs(sent - time.time()) < 5
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert abs(int(stats["bootTime"]) - (time.time() - uptime)) <= 2
    assert float(stats["cpuLoad"]) >= 0


def test_extra_fields_are_laid_over_the_defaults(sampled):
    stats = sampled.stats({"vmCount": 3, "vmActive": 2, "elapsedTime": 12})

    assert (stats["vmCount"], stats["vmActive"], stats["vmMigrating"]) == (3, 2, 0)
    assert stats["elapsedTime"] == "12.00"


def test_network_counters_are_cumulative_strings_and_grow(sampled):
    before = sampled.stats()["network"]["lo"]
    payload = b"x" * 65536
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(4):
                tx.sendto(payload[:60000], rx.getsockname())
                rx.recv(65536)
    present = {entry.name for entry in Path("/sys/class/net").iterdir()}
    stats = sampled.stats()
    present &= {entry.name for entry in Path("/sys/class/net").iterdir()}
    after = stats["network"]["lo"]

    assert int(after["rx"]) - int(before["rx"]) >= 4 * 60000
    assert int(after["tx"]) >= int(before["tx"])
    for key in ("rx", "tx", "rxErrors", "txErrors", "rxDropped", "txDropped", "speed"):
        assert after[key].isdigit(), key
    assert after["name"] == "lo"
    assert after["state"] == "up"
    assert type(after["sampleTime"]) is float
    assert after["sampleTime"] > before["sampleTime"]
    assert present <= set(stats["network"])  # every device, not only NICs
    assert stats["rxDropped"].isdigit()
