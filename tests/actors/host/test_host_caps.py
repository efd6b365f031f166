"""getCapabilities and getHardwareInfo, read from this machine and real libvirt."""

from __future__ import annotations

import json
import os
import platform
import re
import uuid
from pathlib import Path

import psutil
import pytest
import ujson

from hostvisor.actors.host.caps import capabilities, cluster_levels, iscsi_initiator_name
from hostvisor.actors.host.hardware import (
    cpu_info,
    hardware_info,
    online_cpus,
    parse_cpu_list,
    split_debian_version,
)

MIB = 1024 * 1024
HOST_UUID = "7c9d6e1a-3f21-4a7e-9b0c-2d4e5f607182"

# Fields VDSM sends as strings (reference/vdsm-wire.md §3.2).
STRING_FIELDS = (
    "kvmEnabled",
    "cpuCores",
    "cpuThreads",
    "cpuSockets",
    "onlineCpus",
    "cpuSpeed",
    "cpuModel",
    "cpuFlags",
    "tscFrequency",
    "memSize",
    "reservedMem",
    "guestOverhead",
    "version_name",
    "software_version",
    "software_revision",
    "kernelArgs",
    "liveSnapshot",
    "liveMerge",
    "hostdevPassthrough",
    "ISCSIInitiatorName",
    "boot_uuid",
    "uuid",
    "netConfigDirty",
)
INT_FIELDS = ("autoNumaBalancing", "kdumpStatus")


def _on_the_wire(caps: dict) -> dict:
    """`caps` as JSON carries it: the same, but for the int keys of each NUMA node's
    hugepages (page sizes, `uint` keys in VDSM's schema), which become strings."""
    nodes = {
        cell: {**node, "hugepages": {str(size): v for size, v in node["hugepages"].items()}}
        for cell, node in caps["numaNodes"].items()
    }
    assert all(
        isinstance(size, int) for node in caps["numaNodes"].values() for size in node["hugepages"]
    )
    return {**caps, "numaNodes": nodes}


BOOL_FIELDS = (
    "containers",
    "tscScaling",
    "nestedVirtualization",
    "fipsEnabled",
    "realtimeKernel",
    "backupEnabled",
    "coldBackupEnabled",
    "hostedEngineDeployed",
    "vncEncrypted",
    "supportsIPv6",
    "deferred_preallocation",
    "refresh_disk_supported",
)


def _caps(conn, *, containers: bool = False):
    return capabilities(conn, host_uuid=HOST_UUID, software_version="0.1.0", containers=containers)


def _assert_types(caps):
    for name in STRING_FIELDS:
        assert type(caps[name]) is str, name
    for name in INT_FIELDS:
        assert type(caps[name]) is int, name
    for name in BOOL_FIELDS:
        assert type(caps[name]) is bool, name


# -- the embedded QEMU driver: what production sees ---------------------------------------


@pytest.mark.slow  # the first capabilities call on a fresh embed root probes QEMU (~8 s)
@pytest.mark.libvirt
def test_capabilities_on_embedded_qemu_have_vdsm_types(qemu_embed, accelerator):
    caps = _caps(qemu_embed, containers=True)

    _assert_types(caps)
    assert caps["kvmEnabled"] == ("true" if accelerator.value == "kvm" else "false")
    assert caps["uuid"] == HOST_UUID
    assert caps["containers"] is True
    assert caps["version_name"] == "Snow Man"
    assert caps["reservedMem"] == "321"
    assert caps["guestOverhead"] == "65"
    assert caps["vmTypes"] == ["kvm"]
    assert caps["domain_versions"] == [0, 2, 3, 4, 5]
    assert caps["selinux"]["mode"] in ("-1", "0", "1")
    assert caps["HBAInventory"]["iSCSI"] == [{"InitiatorName": caps["ISCSIInitiatorName"]}]
    assert uuid.UUID(caps["boot_uuid"])
    assert json.loads(json.dumps(caps)) == _on_the_wire(caps)
    assert ujson.loads(ujson.dumps(caps)) == _on_the_wire(caps)


@pytest.mark.libvirt
def test_cpu_figures_match_the_kernel(qemu_embed):
    caps = _caps(qemu_embed)

    assert caps["cpuThreads"] == str(psutil.cpu_count(logical=True))
    assert caps["cpuCores"] == str(psutil.cpu_count(logical=False))
    assert [int(c) for c in caps["onlineCpus"].split(",")] == online_cpus()
    assert [p["cpu_id"] for p in caps["cpuTopology"]] == online_cpus()
    assert all(type(v) is int for p in caps["cpuTopology"] for v in p.values())
    assert float(caps["cpuSpeed"]) > 0
    assert caps["cpuModel"]
    assert re.fullmatch(r"\d*", caps["tscFrequency"])


@pytest.mark.libvirt
def test_cpu_flags_hold_cpuinfo_flags_and_usable_libvirt_models(qemu_embed):
    flags = _caps(qemu_embed)["cpuFlags"].split(",")

    assert set(cpu_info().flags) <= set(flags)
    models = [f for f in flags if f.startswith("model_")]
    assert models, "libvirt reports no usable CPU model"
    assert flags[-len(models) :] == models, "the models come last, as in VDSM"
    assert len(flags) == len(set(flags))


@pytest.mark.libvirt
def test_memory_and_numa_match_the_kernel(qemu_embed):
    caps = _caps(qemu_embed)

    assert caps["memSize"] == str(psutil.virtual_memory().total // MIB)
    nodes = caps["numaNodes"]
    assert nodes
    assert sorted(cpu for node in nodes.values() for cpu in node["cpus"]) == online_cpus()
    for node in nodes.values():
        assert node["totalMemory"].isdigit()
        assert all(page["totalPages"].isdigit() for page in node["hugepages"].values())
    if len(nodes) == 1:
        assert next(iter(nodes.values()))["totalMemory"] == caps["memSize"]
    assert set(caps["numaNodeDistance"]) == set(nodes)
    sizes = sorted(int(d.name[10:-2]) for d in Path("/sys/kernel/mm/hugepages").iterdir())
    assert caps["hugepages"] == sizes


@pytest.mark.libvirt
def test_versions_packages_and_machines_come_from_the_host(qemu_embed):
    caps = _caps(qemu_embed)

    major, rest = divmod(qemu_embed.getLibVersion(), 1_000_000)
    minor, micro = divmod(rest, 1000)
    assert caps["clusterLevels"][:5] == ["4.2", "4.3", "4.4", "4.5", "4.6"]
    assert ("4.7" in caps["clusterLevels"]) == (major >= 8)
    packages = caps["packages2"]
    assert packages["libvirt"]["version"] == f"{major}.{minor}.{micro}"
    assert packages["vdsm"] == {"version": "0.1.0", "release": "0"}
    assert platform.release().startswith(packages["kernel"]["version"])
    assert all(set(p) == {"version", "release"} for p in packages.values())
    assert all(type(v) is str for p in packages.values() for v in p.values())
    assert caps["operatingSystem"]["pretty_name"]
    if platform.machine() == "x86_64":
        assert {"pc", "q35"} <= set(caps["emulatedMachines"])


@pytest.mark.libvirt
def test_network_section_is_part_of_the_capabilities(qemu_embed):
    caps = _caps(qemu_embed)

    for key in ("networks", "bridges", "nics", "bondings", "vlans", "nameservers"):
        assert key in caps
    assert caps["networks"] == {}
    assert caps["netConfigDirty"] == "False"
    assert "lo" not in caps["nics"]


# -- the test driver: no domain capabilities, no node statistics ----------------------------


@pytest.mark.libvirt
def test_the_test_driver_gives_caps_without_cpu_models(libvirt_test):
    caps = _caps(libvirt_test)

    _assert_types(caps)
    assert not [f for f in caps["cpuFlags"].split(",") if f.startswith("model_")]
    # Its two fake cells come from the capabilities XML (2 and 4 GiB).
    assert {k: v["totalMemory"] for k, v in caps["numaNodes"].items()} == {
        "0": "2048",
        "1": "4096",
    }
    assert caps["numaNodeDistance"] == {"0": [], "1": []}
    # The machine's own CPU figures are still the kernel's, not the driver's.
    assert caps["cpuThreads"] == str(psutil.cpu_count(logical=True))
    assert caps["containers"] is False
    assert json.loads(json.dumps(caps)) == _on_the_wire(caps)


# -- pure rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("libvirt_version", "qemu_version", "last"),
    [
        (7_000_000, 0, "4.6"),
        (8_000_000, 7_002_000, "4.7"),
        (10_010_000, 9_000_000, "4.7"),
        (10_010_000, 9_001_000, "4.8"),
        (10_009_000, 9_002_000, "4.7"),
    ],
)
def test_cluster_levels_follow_libvirt_and_qemu(libvirt_version, qemu_version, last):
    levels = cluster_levels(libvirt_version, qemu_version)
    assert levels[0] == "4.2"
    assert levels[-1] == last


@pytest.mark.parametrize(
    ("debian", "version", "release"),
    [
        ("1:7.2+dfsg-7+deb12u7", "7.2", "7+deb12u7"),
        ("9.0.0-4+deb12u2", "9.0.0", "4+deb12u2"),
        ("0.15.1-1", "0.15.1", "1"),
        ("2.0", "2.0", ""),
        ("1.2~rc1-3", "1.2", "3"),
    ],
)
def test_debian_versions_split_like_rpm(debian, version, release):
    assert split_debian_version(debian) == {"version": version, "release": release}


def test_cpu_lists_parse_like_the_kernel_writes_them():
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("5") == [5]
    assert parse_cpu_list("") == []
    assert len(online_cpus()) == os.cpu_count()


def test_iscsi_initiator_name_is_read_or_empty(tmp_path: Path):
    conf = tmp_path / "initiatorname.iscsi"
    assert iscsi_initiator_name(conf) == ""
    conf.write_text("## comment\nInitiatorName=iqn.2004-10.com.example:host1\n")
    assert iscsi_initiator_name(conf) == "iqn.2004-10.com.example:host1"


# -- getHardwareInfo ------------------------------------------------------------------------

HARDWARE_FIELDS = {
    "systemManufacturer",
    "systemProductName",
    "systemVersion",
    "systemSerialNumber",
    "systemUUID",
    "systemFamily",
}


def test_hardware_info_of_this_machine_is_all_strings():
    info = hardware_info()
    assert set(info) == HARDWARE_FIELDS
    assert all(type(v) is str for v in info.values())
    vendor = Path("/sys/class/dmi/id/sys_vendor")
    expected = vendor.read_text().strip() if vendor.exists() else ""
    assert info["systemManufacturer"] == expected


def test_hardware_info_reads_dmi_and_blanks_what_is_missing(tmp_path: Path):
    (tmp_path / "sys_vendor").write_text("Acme Computers\n")
    (tmp_path / "product_name").write_text("Anvil 9000\n")
    info = hardware_info(tmp_path)
    assert info["systemManufacturer"] == "Acme Computers"
    assert info["systemProductName"] == "Anvil 9000"
    assert info["systemUUID"] == ""
    assert info["systemSerialNumber"] == ""
