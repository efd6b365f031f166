"""What the machine is and runs: DMI identity, CPUs, kernel, OS and packages.

Plain blocking readers of /sys, /proc, /etc and dpkg, with no state. Each returns
what this machine says about itself; nothing here asks libvirt. `hardware_info` is
VDSM's `Host.getHardwareInfo` (reference/vdsm-wire.md §3.1); the rest feeds
`getCapabilities` (§3.2, assembled in `caps.py`).
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_DMI = Path("/sys/class/dmi/id")
_CPU = Path("/sys/devices/system/cpu")

# VDSM's getHardwareInfo field → the DMI attribute it comes from.
_DMI_FIELDS = {
    "systemManufacturer": "sys_vendor",
    "systemProductName": "product_name",
    "systemVersion": "product_version",
    "systemSerialNumber": "product_serial",
    "systemUUID": "product_uuid",
    "systemFamily": "product_family",
}


def hardware_info(dmi: Path = _DMI) -> dict[str, str]:
    """Return VDSM's `Host.getHardwareInfo` result for this machine.

    Args:
        dmi: the DMI directory to read (tests may point it elsewhere).

    Returns:
        Every field of the verb, as strings; a field the kernel does not expose,
        or that only root may read (the serial number and UUID), is "".
    """
    return {field: read_text(dmi / attribute) for field, attribute in _DMI_FIELDS.items()}


def read_text(path: Path, default: str = "") -> str:
    """Return the stripped text of a small file, or `default` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return default


def parse_cpu_list(text: str) -> list[int]:
    """Parse a kernel CPU list such as "0-3,8,10-11" into sorted CPU ids."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return sorted(cpus)


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuPlace:
    """Where one online logical CPU sits: VDSM's `cpuTopology` entry."""

    cpu_id: int
    numa_cell_id: int
    socket_id: int
    die_id: int
    core_id: int


def online_cpus(cpu_root: Path = _CPU) -> list[int]:
    """Return the ids of the online logical CPUs (all CPUs the scheduler may use)."""
    text = read_text(cpu_root / "online")
    if text:
        return parse_cpu_list(text)
    return sorted(os.sched_getaffinity(0))


def cpu_places(cpu_root: Path = _CPU) -> list[CpuPlace]:
    """Return the socket, die, core and NUMA cell of every online CPU, by id."""
    return [_cpu_place(cpu_root, cpu) for cpu in online_cpus(cpu_root)]


def _cpu_place(cpu_root: Path, cpu: int) -> CpuPlace:
    directory = cpu_root / f"cpu{cpu}"
    topology = directory / "topology"
    nodes = sorted(entry.name for entry in directory.glob("node[0-9]*"))
    return CpuPlace(
        cpu_id=cpu,
        numa_cell_id=int(nodes[0].removeprefix("node")) if nodes else 0,
        socket_id=_int(topology / "physical_package_id"),
        die_id=_int(topology / "die_id"),
        core_id=_int(topology / "core_id", default=cpu),
    )


def _int(path: Path, default: int = 0) -> int:
    try:
        return int(read_text(path))
    except ValueError:
        return default


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuInfo:
    """The first processor's entry of /proc/cpuinfo, as VDSM reports it."""

    model: str
    speed_mhz: str
    flags: tuple[str, ...]


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Return the model name, clock (MHz, as the kernel writes it) and flags of CPU 0."""
    fields: dict[str, str] = {}
    for line in read_text(path).splitlines():
        if not line.strip():
            break  # the end of the first processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CpuInfo(
        model=fields.get("model name", fields.get("cpu", "")),
        speed_mhz=fields.get("cpu MHz", fields.get("clock", "")).removesuffix("MHz"),
        flags=tuple(fields.get("flags", fields.get("Features", "")).split()),
    )


# -- kernel, operating system and packages ------------------------------------------------


# packages2 name → Debian package names, the first installed one wins.
_PACKAGES = {
    "libvirt": ("libvirt-daemon", "libvirt0"),
    "qemu-kvm": ("qemu-system-x86", "qemu-kvm"),
    "qemu-img": ("qemu-utils",),
    "spice-server": ("libspice-server1",),
    "mom": ("mom",),
    "librbd1": ("librbd1",),
    "openvswitch": ("openvswitch-switch",),
    "glusterfs-cli": ("glusterfs-cli",),
}


def package_versions() -> dict[str, dict[str, str]]:
    """packages2 without `vdsm`: {name: {version, release}}; absent packages are omitted."""
    kernel_version, _, kernel_release = platform.release().partition("-")
    result = {"kernel": {"version": kernel_version, "release": kernel_release}}
    installed = _dpkg_versions([name for names in _PACKAGES.values() for name in names])
    for name, candidates in _PACKAGES.items():
        found = next((installed[c] for c in candidates if c in installed), None)
        if found is not None:
            result[name] = found
    return result


def _dpkg_versions(names: list[str]) -> dict[str, dict[str, str]]:
    """Installed Debian packages among `names`, their versions split the way rpm does.

    "1:7.2+dfsg-7+deb12u7" becomes version "7.2" and release "7+deb12u7": the epoch
    and the repackaging suffix go, the Debian revision is the release.
    """
    fmt = "${Package}\\t${db:Status-Abbrev}\\t${Version}\\n"
    try:
        run = subprocess.run(
            ["/usr/bin/dpkg-query", "-W", "-f", fmt, *names],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("cannot list package versions: %s", error)
        return {}
    found = {}
    for line in run.stdout.splitlines():
        package, status, version = [*line.split("\t"), "", ""][:3]
        if status.startswith("ii") and version:
            found[package] = split_debian_version(version)
    return found


def split_debian_version(version: str) -> dict[str, str]:
    """Split "[epoch:]upstream[-revision]" into packages2's {version, release}."""
    without_epoch = version.split(":", 1)[-1]
    upstream, dash, revision = without_epoch.rpartition("-")
    if not dash:
        upstream, revision = without_epoch, ""
    return {"version": upstream.split("+")[0].split("~")[0], "release": revision}


def os_info() -> dict[str, Any]:
    """Return the kernel and OS fields of getCapabilities (operatingSystem, selinux...)."""
    release = _os_release()
    name = {"debian": "Debian", "fedora": "Fedora", "rhel": "RHEL", "centos": "RHEL"}
    os_id = release.get("ID", "")
    version = release.get("VERSION_ID", "")
    if os_id == "debian":
        version = read_text(Path("/etc/debian_version"), version)
    enforce = read_text(Path("/sys/fs/selinux/enforce"))
    return {
        "operatingSystem": {
            "name": name.get(os_id, release.get("NAME", "unknown")),
            "version": version,
            "release": "",
            "pretty_name": release.get("PRETTY_NAME", ""),
        },
        "kernelArgs": read_text(Path("/proc/cmdline")),
        "realtimeKernel": "PREEMPT_RT" in platform.version(),
        "kernelFeatures": _kernel_features(),
        "selinux": {"mode": enforce if enforce in ("0", "1") else "-1"},
        "kdumpStatus": _kdump_status(),
        "fipsEnabled": read_text(Path("/proc/sys/crypto/fips_enabled")) == "1",
        "boot_uuid": read_text(Path("/proc/sys/kernel/random/boot_id")),
    }


def _os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    fields = {}
    for line in read_text(path).splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def _kernel_features() -> dict[str, int]:
    """Whether PTI, IBPB and IBRS are active (1), inactive (0) or unknown (-1)."""
    vulnerabilities = Path("/sys/devices/system/cpu/vulnerabilities")
    meltdown = read_text(vulnerabilities / "meltdown")
    spectre = read_text(vulnerabilities / "spectre_v2")
    return {
        "pti": int("PTI" in meltdown) if meltdown else -1,
        "ibpb": int("IBPB" in spectre) if spectre else -1,
        "ibrs": int("IBRS" in spectre) if spectre else -1,
    }


def _kdump_status() -> int:
    """1 if a crash kernel is loaded and fence_kdump configured, 0 if not, -1 if unknown."""
    loaded = read_text(Path("/sys/kernel/kexec_crash_loaded"))
    if loaded not in ("0", "1"):
        return -1
    if loaded == "0":
        return 0
    conf = read_text(Path("/etc/kdump.conf"))
    return int(any(line.startswith("fence_kdump_nodes") for line in conf.splitlines()))
