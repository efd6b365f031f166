"""Host capabilities: VDSM's `getCapabilities`, read from this machine and libvirt.

One blocking function, `capabilities`, assembles the answer. The machine's own facts
(CPU topology, memory, kernel, packages, network) come from the kernel and dpkg; what
the hypervisor can do (CPU models, NUMA cells as libvirt sees them, machine types,
the TSC) comes from the libvirt connection it is given. Field names and types are
VDSM's (`host/caps.py`; reference/vdsm-wire.md §3.2): most values are strings.
"""

from __future__ import annotations

import logging
import os
import platform
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import libvirt

from hostvisor.actors.host import hardware
from hostvisor.actors.host.hardware import read_text
from hostvisor.actors.host.netinfo import network_caps
from hostvisor.actors.host.stats import hugepages_state, read_meminfo

log = logging.getLogger(__name__)

VERSION_NAME = "Snow Man"
SOFTWARE_REVISION = "0"
SUPPORTED_ENGINES = ["4.2", "4.3", "4.4", "4.5"]
RESERVED_MEM_MIB = "321"  # VDSM's host_mem_reserve (256) + extra_mem_reserve (65)
GUEST_OVERHEAD_MIB = "65"
DOMAIN_VERSIONS = [0, 2, 3, 4, 5]
_FILE_BLOCK_SIZES = [0, 512, 4096]  # 0: detect
SUPPORTED_BLOCK_SIZE = {
    "FCP": [512],
    "ISCSI": [512],
    "GLUSTERFS": _FILE_BLOCK_SIZES,
    "LOCALFS": _FILE_BLOCK_SIZES,
    "NFS": _FILE_BLOCK_SIZES,
    "POSIXFS": _FILE_BLOCK_SIZES,
}
# Feature flags the engine reads; the storage and backup ones advertise what VDSM 4.50
# advertises and must stay in step with what the storage actors implement.
FEATURE_FLAGS: dict[str, Any] = {
    "liveSnapshot": "true",
    "liveMerge": "true",
    "backupEnabled": True,
    "coldBackupEnabled": True,
    "clearBitmapsEnabled": True,
    "zerocopy_migrations": False,
    # VDSM's schema says a string ("datatype: boolean"), but VDSM's code
    # (host/caps.py _isVncEncrypted) sends a JSON boolean; the Engine reads either
    # (VdsBrokerObjectsBuilder.assignBoolValue). Hostvisor does what VDSM's code does.
    "vncEncrypted": False,
    "hostedEngineDeployed": False,
    "additionalFeatures": [],
    "deferred_preallocation": True,
    "refresh_disk_supported": True,
    "cd_change_pdiv": True,
    "measure_subchain": True,
    "mailbox_events": True,
    "ovnConfigured": False,
    "hooks": {},
}


def capabilities(
    conn: Any,
    *,
    host_uuid: str,
    software_version: str,
    containers: bool,
    network: Mapping[str, Any] | None = None,
    hooks: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return VDSM's `getCapabilities` result for this host.

    Blocking: reads /proc and /sys, runs dpkg-query once, and asks libvirt for its
    capabilities (slow on a fresh embedded root: QEMU is probed once, then cached).

    Args:
        conn: an open libvirt connection (libvirt-python `virConnect`).
        host_uuid: the host's persistent id, reported as `uuid`.
        software_version: this agent's version, reported as `software_version`
            and as packages2's `vdsm`.
        containers: whether this host runs containers (VDSM 2016-2018, §6).
        network: the network capabilities of the namespace the host manages; None:
            read this process's own namespace now.
        hooks: the installed hooks, `{point: {script: {"checksum": sha256}}}` as
            `Hooks.installed()` reads them (VDSM's `hooks.installed()`); None: none.

    Returns:
        The complete capabilities dictionary, ready to be sent as JSON.
    """
    # libvirt is a trusted local source, not untrusted input.
    host_caps = ET.fromstring(conn.getCapabilities())  # noqa: S314
    kvm = kvm_enabled()
    caps: dict[str, Any] = {}
    caps.update(_cpu_caps(conn, host_caps, kvm=kvm))
    caps.update(_memory_caps(conn, host_caps))
    caps.update(_version_caps(conn, software_version))
    caps.update(hardware.os_info())
    caps.update(_storage_caps())
    caps.update(network if network is not None else network_caps())
    caps.update(FEATURE_FLAGS)
    caps.update(
        hooks=dict(hooks or {}),
        uuid=host_uuid,
        containers=containers,
        vmTypes=["kvm"],
        emulatedMachines=_emulated_machines(host_caps, platform.machine()),
        rngSources=[name for name in ("random", "hwrng") if Path(f"/dev/{name}").exists()],
        hostdevPassthrough=str(_has_iommu()).lower(),
    )
    return caps


def kvm_enabled(device: str = "/dev/kvm") -> bool:
    """Return True if `device` opens read-write (KVM is usable by this process)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


# -- CPU -----------------------------------------------------------------------------------


def _cpu_caps(conn: Any, host_caps: ET.Element, *, kvm: bool) -> dict[str, Any]:
    places = hardware.cpu_places()
    info = hardware.cpu_info()
    counter = host_caps.find("./host/cpu/counter[@name='tsc']")
    return {
        "kvmEnabled": str(kvm).lower(),
        "cpuCores": str(len({(p.socket_id, p.die_id, p.core_id) for p in places})),
        "cpuThreads": str(len(places)),
        "cpuSockets": str(len({p.socket_id for p in places})),
        "onlineCpus": ",".join(str(p.cpu_id) for p in places),
        "cpuTopology": [
            {
                "cpu_id": p.cpu_id,
                "numa_cell_id": p.numa_cell_id,
                "socket_id": p.socket_id,
                "die_id": p.die_id,
                "core_id": p.core_id,
            }
            for p in places
        ],
        "cpuSpeed": info.speed_mhz,
        "cpuModel": info.model,
        "cpuFlags": ",".join(_cpu_flags(conn, host_caps, info.flags, kvm=kvm)),
        "tscFrequency": counter.get("frequency", "") if counter is not None else "",
        "tscScaling": counter is not None and counter.get("scaling") == "yes",
        "vdsmToCpusAffinity": sorted(os.sched_getaffinity(0)),
        "nestedVirtualization": _nested_virtualization(),
    }


def _cpu_flags(conn: Any, host_caps: ET.Element, flags: tuple[str, ...], *, kvm: bool) -> list[str]:
    """/proc/cpuinfo flags, host-model features, then the `model_<name>` entries.

    The models are those libvirt's domain capabilities mark usable in custom mode,
    as VDSM reports them. Only when the driver has no domain capabilities does the
    host CPU model of the plain capabilities stand in: on a nested machine that model
    (e.g. kvm64) is often one libvirt refuses, so it is not offered beside the list.
    """
    arch = host_caps.findtext("./host/cpu/arch") or platform.machine()
    domcaps = _domain_capabilities(conn, arch, kvm=kvm)
    features: list[str] = []
    models: list[str] = []
    if domcaps is not None:
        features = [
            f.get("name", "")
            for f in domcaps.iterfind("./cpu/mode[@name='host-model']/feature")
            if f.get("policy") == "require"
        ]
        custom = domcaps.iterfind("./cpu/mode[@name='custom'][@supported='yes']/model")
        models = sorted({m.text for m in custom if m.text and m.get("usable") == "yes"})
    elif host_caps.findtext("./host/cpu/model"):
        models = [host_caps.findtext("./host/cpu/model", "")]
    if any(model.endswith("-IBRS") for model in models):
        features.append("spec_ctrl")
    combined = dict.fromkeys([*flags, *features])
    return [*combined, *(f"model_{model}" for model in models)]


def _domain_capabilities(conn: Any, arch: str, *, kvm: bool) -> ET.Element | None:
    try:
        xml = conn.getDomainCapabilities(None, arch, None, "kvm" if kvm else "qemu", 0)
    except libvirt.libvirtError as error:
        log.info("no domain capabilities from %s: %s", conn.getURI(), error)
        return None
    return ET.fromstring(xml)  # noqa: S314 - from the local libvirt, trusted


def _nested_virtualization() -> bool:
    return any(
        read_text(Path(f"/sys/module/{module}/parameters/nested")) in ("Y", "1")
        for module in ("kvm_intel", "kvm_amd")
    )


def _emulated_machines(host_caps: ET.Element, arch: str) -> list[str]:
    """Machine types (and their canonical names) QEMU offers for `arch` under KVM."""
    arch_node = host_caps.find(f"./guest/arch[@name='{arch}']")
    if arch_node is None:
        return []
    kvm_node = arch_node.find("./domain[@type='kvm']")
    machines = kvm_node.findall("machine") if kvm_node is not None else []
    machines = machines or arch_node.findall("machine")
    names: dict[str, None] = {}
    for machine in machines:
        names.update(dict.fromkeys(n for n in (machine.text, machine.get("canonical")) if n))
    return list(names)


# -- memory and NUMA -----------------------------------------------------------------------


def _memory_caps(conn: Any, host_caps: ET.Element) -> dict[str, Any]:
    cells = host_caps.findall("./host/topology/cells/cell")
    numa_nodes: dict[str, Any] = {}
    distances: dict[str, list[int]] = {}
    for cell in cells:
        cell_id = cell.get("id", "0")
        numa_nodes[cell_id] = {
            "cpus": [int(cpu.get("id", "0")) for cpu in cell.iterfind("./cpus/cpu")],
            "totalMemory": _cell_memory_mib(conn, cell, whole_host=len(cells) == 1),
            # Keyed by the page size in KiB as an int, as VDSM's numa.pages_by_cell
            # builds it and its schema says (NumaNode.hugepages: uint keys); JSON
            # carries the keys as strings ("2048") either way.
            "hugepages": {
                int(page.get("size", "0")): {"totalPages": page.text or "0"}
                for page in cell.iterfind("pages")
            },
        }
        distances[cell_id] = [
            int(s.get("value", "0")) for s in cell.iterfind("./distances/sibling")
        ]
    balancing = read_text(Path("/proc/sys/kernel/numa_balancing"))
    return {
        "memSize": str(read_meminfo()["MemTotal"] // 1024),
        "reservedMem": RESERVED_MEM_MIB,
        "guestOverhead": GUEST_OVERHEAD_MIB,
        "numaNodes": numa_nodes,
        "numaNodeDistance": distances,
        "autoNumaBalancing": int(balancing) if balancing in ("0", "1") else 2,
        "hugepages": sorted(int(size) for size in hugepages_state()),
    }


def _cell_memory_mib(conn: Any, cell: ET.Element, *, whole_host: bool) -> str:
    """A cell's total MiB from libvirt's node statistics (cell -1 when it is the only one)."""
    index = -1 if whole_host else int(cell.get("id", "0"))
    try:
        return str(conn.getMemoryStats(index, 0)["total"] // 1024)
    except libvirt.libvirtError:
        return str(int(cell.findtext("memory", "0")) // 1024)


# -- versions ----------------------------------------------------------------------------


def _version_caps(conn: Any, software_version: str) -> dict[str, Any]:
    packages = hardware.package_versions()
    packages["vdsm"] = {"version": software_version, "release": SOFTWARE_REVISION}
    qemu = conn.getVersion() if conn.getType() == "QEMU" else 0
    return {
        "version_name": VERSION_NAME,
        "software_version": software_version,
        "software_revision": SOFTWARE_REVISION,
        "supportedENGINEs": list(SUPPORTED_ENGINES),
        "clusterLevels": cluster_levels(conn.getLibVersion(), qemu),
        "packages2": packages,
    }


def cluster_levels(libvirt_version: int, qemu_version: int) -> list[str]:
    """The engine cluster levels this host supports (§3.2).

    Args:
        libvirt_version: as libvirt encodes it, major * 1,000,000 + minor * 1,000 + micro.
        qemu_version: the same encoding; 0 when unknown.
    """
    levels = ["4.2", "4.3", "4.4", "4.5", "4.6"]
    if libvirt_version >= 8_000_000:  # noqa: PLR2004 - libvirt 8.0
        levels.append("4.7")
    if libvirt_version >= 10_010_000 and qemu_version >= 9_001_000:  # noqa: PLR2004
        levels.append("4.8")
    return levels


def _has_iommu() -> bool:
    groups = Path("/sys/kernel/iommu_groups")
    return groups.is_dir() and any(groups.iterdir())


# -- storage -------------------------------------------------------------------------------


def _storage_caps() -> dict[str, Any]:
    initiator = iscsi_initiator_name()
    return {
        "ISCSIInitiatorName": initiator,
        "HBAInventory": {"iSCSI": [{"InitiatorName": initiator}], "FC": _fc_hosts()},
        "domain_versions": list(DOMAIN_VERSIONS),
        "supported_block_size": {k: list(v) for k, v in SUPPORTED_BLOCK_SIZE.items()},
    }


def iscsi_initiator_name(path: Path = Path("/etc/iscsi/initiatorname.iscsi")) -> str:
    """Return this host's iSCSI initiator name, or "" when open-iscsi is not set up."""
    for line in read_text(path).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "InitiatorName":
            return value.strip()
    return ""


def _fc_hosts() -> list[dict[str, str]]:
    return [
        {
            "wwpn": read_text(host / "port_name").removeprefix("0x"),
            "wwnn": read_text(host / "node_name").removeprefix("0x"),
            "model": read_text(host / "symbolic_name"),
        }
        for host in sorted(Path("/sys/class/fc_host").glob("host*"))
    ]
