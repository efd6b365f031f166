"""Bulk sampling and VDSM's per-VM stats, on real guests and on hand-made records."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt
import pytest

from harness.guests import domain_xml, make_halting_base, make_overlay
from harness.waiting import wait_for
from hostvisor.actors.vm.sampling import bulk_sample, sample_domains
from hostvisor.actors.vm.stats import BalloonConfig, DriveInfo, NicInfo, VmSample, vm_stats

MAC = "52:54:00:5a:17:01"


def _start_guest(conn, accelerator, directory: Path, *, name: str, tap: str | None = None):
    base = directory / "halt.qcow2"
    if not base.exists():
        make_halting_base(directory)
    disk = make_overlay(base, directory / f"{name}.qcow2")
    xml = domain_xml(
        name=name, uuid=str(uuid.uuid4()), disk=disk, domain_type=accelerator.domain_type
    )
    if tap is not None:
        # An ethernet NIC needs no bridge: libvirt creates the tap and leaves it unplugged.
        nic = (
            f"<interface type='ethernet'><mac address='{MAC}'/>"
            f"<target dev='{tap}'/><model type='virtio'/></interface>\n    "
        )
        xml = xml.replace("<memballoon", nic + "<memballoon")
    # Persistent, so that the qemu_embed fixture can destroy and undefine it.
    domain = conn.defineXML(xml)
    domain.create()
    return domain


def _tap_name() -> str:
    return f"hvst{uuid.uuid4().hex[:8]}"  # unique on the host, within IFNAMSIZ


# -- real guests --------------------------------------------------------------------------


@pytest.mark.kvm
@pytest.mark.libvirt
def test_bulk_sample_covers_every_active_guest_and_a_subset_on_fallback(
    qemu_embed, accelerator, tmp_path: Path
):
    first = _start_guest(qemu_embed, accelerator, tmp_path, name="bulk-a")
    second = _start_guest(qemu_embed, accelerator, tmp_path, name="bulk-b")
    before = time.monotonic()

    sample = bulk_sample(qemu_embed)

    assert set(sample.records) == {first.UUIDString(), second.UUIDString()}
    assert before <= sample.taken_at <= time.monotonic()
    assert abs(sample.wall_time - time.time()) < 60
    record = sample.records[first.UUIDString()]
    assert record["state.state"] == libvirt.VIR_DOMAIN_RUNNING
    assert record["block.0.name"] == "vda"
    subset = sample_domains(qemu_embed, [second])
    assert set(subset.records) == {second.UUIDString()}
    assert sample_domains(qemu_embed, []).records == {}
    second.destroy()
    assert set(bulk_sample(qemu_embed).records) == {first.UUIDString()}


@pytest.mark.kvm
@pytest.mark.libvirt
def test_a_paused_guest_is_still_sampled_as_paused(qemu_embed, accelerator, tmp_path: Path):
    domain = _start_guest(qemu_embed, accelerator, tmp_path, name="paused")
    domain.suspend()
    wait_for(lambda: domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED, 10, "the pause")

    sample = bulk_sample(qemu_embed).vm_sample(domain.UUIDString())

    assert sample is not None
    assert sample.record["state.state"] == libvirt.VIR_DOMAIN_PAUSED
    assert vm_stats(sample, None)["balloonInfo"]["balloon_max"] == "65536"


@pytest.mark.kvm
@pytest.mark.libvirt
def test_one_sample_gives_counters_and_zero_rates(qemu_embed, accelerator, tmp_path: Path):
    domain = _start_guest(qemu_embed, accelerator, tmp_path, name="once")
    sample = bulk_sample(qemu_embed).vm_sample(domain.UUIDString())
    assert sample is not None

    stats = vm_stats(sample, None)

    assert (stats["cpuUser"], stats["cpuSys"]) == ("0.00", "0.00")
    assert int(stats["cpuUsage"]) > 0  # starting QEMU already cost CPU
    assert stats["vcpuCount"] == "1"
    vda = stats["disks"]["vda"]
    assert (vda["readRate"], vda["writeRate"]) == ("0.0", "0.0")
    assert vda["readLatency"] == vda["writeLatency"] == vda["flushLatency"] == "0"


@pytest.mark.slow
@pytest.mark.kvm
@pytest.mark.libvirt
def test_two_samples_of_a_booted_guest_give_vdsm_stats(qemu_embed, accelerator, tmp_path: Path):
    tap = _tap_name()
    domain = _start_guest(qemu_embed, accelerator, tmp_path, name="booted", tap=tap)
    vm_id = domain.UUIDString()

    def booted() -> VmSample | None:
        taken = bulk_sample(qemu_embed).vm_sample(vm_id)
        return taken if taken and taken.record.get("block.0.rd.reqs") else None

    # SeaBIOS reads the boot sector, then the guest halts (~5 s under nested KVM).
    first = wait_for(booted, 60, "SeaBIOS to read the boot sector")
    usage = int(vm_stats(first, None)["cpuUsage"])

    def used_more_cpu() -> VmSample | None:
        taken = booted()
        return taken if taken and int(vm_stats(taken, None)["cpuUsage"]) > usage else None

    second = wait_for(used_more_cpu, 10, "QEMU to use more CPU")
    stats = vm_stats(second, first, nics={tap: NicInfo(mac=MAC, model="virtio")})

    for field in ("cpuUser", "cpuSys"):
        assert f"{float(stats[field]):.2f}" == stats[field]
        # cpu.time counts QEMU's own threads too, and a loaded host skews the interval:
        # the bound is what one process can use at all, every host CPU.
        assert 0 <= float(stats[field]) <= 100 * (os.cpu_count() or 1)
    assert int(stats["cpuUsage"]) > usage
    assert stats["memUsage"] == "0"  # the halted guest has no balloon driver
    assert "memoryStats" not in stats
    assert stats["balloonInfo"] == {
        "balloon_max": "65536",
        "balloon_min": "0",
        "balloon_cur": "65536",
        "balloon_target": "65536",
        "ballooning_enabled": True,
    }
    vda = stats["disks"]["vda"]
    assert int(vda["readBytes"]) >= 512
    assert int(vda["readOps"]) >= 1
    for field in ("readRate", "writeRate"):
        assert f"{float(vda[field]):.1f}" == vda[field]
        assert float(vda[field]) >= 0
    assert int(vda["truesize"]) > 0
    assert vda["imageID"] == ""
    nic = stats["network"][tap]
    assert (nic["name"], nic["macAddr"], nic["speed"], nic["state"]) == (
        tap,
        MAC,
        "1000",
        "unknown",
    )
    assert all(int(nic[key]) >= 0 for key in ("rx", "tx", "rxErrors", "txDropped"))
    assert nic["sampleTime"] == second.taken_at


# -- hand-made records --------------------------------------------------------------------


FIRST = {
    "state.state": 1,
    "cpu.time": 10_000_000_000,
    "cpu.user": 3_000_000_000,
    "cpu.system": 1_000_000_000,
    "vcpu.current": 2,
    "balloon.current": 1_048_576,
    "balloon.maximum": 2_097_152,
    "balloon.available": 1_000_000,
    "balloon.unused": 250_000,
    "balloon.swap_in": 10,
    "balloon.major_fault": 100,
    "balloon.minor_fault": 1_000,
    "net.count": 1,
    "net.0.name": "vnet0",
    "net.0.rx.bytes": 5_000,
    "net.0.rx.errs": 1,
    "net.0.rx.drop": 2,
    "net.0.tx.bytes": 7_000,
    "net.0.tx.errs": 3,
    "net.0.tx.drop": 4,
    "block.count": 2,
    "block.0.name": "vda",
    "block.0.rd.reqs": 10,
    "block.0.rd.bytes": 4_096,
    "block.0.rd.times": 1_000_000,
    "block.0.wr.reqs": 5,
    "block.0.wr.bytes": 2_048,
    "block.0.wr.times": 500_000,
    "block.0.fl.reqs": 1,
    "block.0.fl.times": 100,
    "block.0.physical": 200_704,
    "block.1.name": "sdc",
}
# Two seconds later; libvirt now lists the disks in the other order.
SECOND = {
    **{key: value for key, value in FIRST.items() if not key.startswith("block.")},
    "cpu.time": 11_000_000_000,
    "cpu.user": 3_400_000_000,
    "cpu.system": 1_100_000_000,
    "balloon.swap_in": 20,
    "balloon.major_fault": 104,
    "balloon.minor_fault": 1_010,
    "net.0.rx.bytes": 6_000,
    "block.count": 2,
    "block.0.name": "sdc",
    "block.1.name": "vda",
    "block.1.rd.reqs": 14,
    "block.1.rd.bytes": 5_096,
    "block.1.rd.times": 1_400_000,
    "block.1.wr.reqs": 5,
    "block.1.wr.bytes": 3_048,
    "block.1.wr.times": 500_000,
    "block.1.fl.reqs": 2,
    "block.1.fl.times": 1_100,
    "block.1.physical": 200_704,
}


def _pair(first: dict[str, Any], second: dict[str, Any]) -> tuple[VmSample, VmSample]:
    return VmSample(taken_at=100.0, record=first), VmSample(taken_at=102.0, record=second)


def test_rates_over_two_samples_are_exact():
    before, after = _pair({k: v for k, v in FIRST.items() if k != "block.1.name"}, SECOND)
    drives = {"vda": DriveInfo(image_id="img-1", apparent_size=1_000, true_size=900)}

    stats = vm_stats(after, before, drives=drives)

    # 0.5 s of user + system over 2 s; the other 0.5 s of cpu.time counts as "user".
    assert (stats["cpuSys"], stats["cpuUser"], stats["cpuUsage"]) == (
        "25.00",
        "25.00",
        "4500000000",
    )
    assert stats["vcpuCount"] == "2"
    assert stats["disks"]["vda"] == {
        "readRate": "500.0",  # 1000 bytes over 2 s
        "writeRate": "500.0",
        "readLatency": "100000.0",  # 400 µs over 4 requests
        "writeLatency": "0",  # no write request in the interval
        "flushLatency": "1000.0",
        "readOps": "14",
        "writeOps": "5",
        "readBytes": "5096",
        "writtenBytes": "3048",
        "apparentsize": "1000",
        "truesize": "900",
        "imageID": "img-1",
    }
    # sdc was unnamed in the first sample: counters, but no rates.
    assert stats["disks"]["sdc"]["readRate"] == "0.0"
    assert stats["disks"]["sdc"]["apparentsize"] == "0"


def test_memory_and_balloon_follow_vdsm():
    before, after = _pair(FIRST, SECOND)

    stats = vm_stats(after, before, balloon=BalloonConfig(minimum_kib=524_288))

    assert stats["memUsage"] == "75"
    assert stats["memoryStats"] == {
        "mem_total": "1000000",
        "mem_unused": "250000",
        "mem_free": "250000",
        "swap_in": 5,
        "swap_out": 0,
        "majflt": 2,
        "minflt": 5,
        "pageflt": 7,
    }
    assert stats["balloonInfo"] == {
        "balloon_max": "2097152",
        "balloon_min": "524288",
        "balloon_cur": "1048576",
        "balloon_target": "1048576",
        "ballooning_enabled": True,
    }


def test_network_counters_are_cumulative_strings():
    before, after = _pair(FIRST, SECOND)

    stats = vm_stats(after, before, nics={"vnet0": NicInfo(mac=MAC, model="rtl8139")})

    assert stats["network"] == {
        "vnet0": {
            "name": "vnet0",
            "macAddr": MAC,
            "speed": "100",
            "state": "unknown",
            "rx": "6000",
            "tx": "7000",
            "rxErrors": "1",
            "rxDropped": "2",
            "txErrors": "3",
            "txDropped": "4",
            "sampleTime": 102.0,
        }
    }


def test_one_sample_or_a_bad_interval_gives_zero_rates():
    before, after = _pair(FIRST, SECOND)
    stale = VmSample(taken_at=after.taken_at, record=before.record)

    for stats in (vm_stats(after, None), vm_stats(after, stale)):
        assert (stats["cpuUser"], stats["cpuSys"]) == ("0.00", "0.00")
        assert stats["cpuUsage"] == "4500000000"
        assert stats["disks"]["vda"]["readRate"] == "0.0"
        assert stats["disks"]["vda"]["readLatency"] == "0"
        assert "swap_in" not in stats["memoryStats"]


def test_counter_resets_and_missing_groups_give_no_negative_or_empty_fields():
    reset = {**SECOND, "cpu.user": 0, "cpu.system": 0, "cpu.time": 0, "block.1.rd.bytes": 0}
    before, after = _pair(FIRST, reset)

    stats = vm_stats(after, before)
    bare = vm_stats(VmSample(taken_at=1.0, record={"state.state": 1}), None)

    assert (stats["cpuSys"], stats["cpuUser"]) == ("0.00", "0.00")
    assert stats["disks"]["vda"]["readRate"] == "0.0"
    assert bare == {"cpuUser": "0.00", "cpuSys": "0.00", "cpuUsage": "0", "memUsage": "0"}
