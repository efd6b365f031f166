"""The qemu guest agent's facts about a guest, as VDSM reports them.

VDSM's `QemuGuestAgentPoller` (virt/qemuguestagent.py, with guestagenthelpers.py)
reads the agent through libvirt (`virDomainGetGuestInfo`, `virDomainInterfaceAddresses`
with the agent as source, `virDomainGetGuestVcpus`, and the raw `guest-info` command
for the agent's version) and merges the answers into the VM's stats. The fields and
their types on the wire:

| field | type | from |
|---|---|---|
| `guestName`, `guestFQDN` | str | the guest's host name |
| `guestOs` | str | the kernel release (Linux) |
| `guestOsInfo` | {type, arch, kernel, distribution, version, codename}: str | `guest-get-osinfo` |
| `guestTimezone` | {offset: int minutes, zone: str} | `guest-get-timezone` |
| `username` | str, ", "-joined `user@domain`s ("Unknown" until read) | `guest-get-users` |
| `disksUsage` | [{path, total, used, fs}], sizes as str bytes | `guest-get-fsinfo` |
| `netIfaces` | [{name, hw, inet: [str], inet6: [str]}] | `guest-network-get-interfaces` |
| `guestCPUCount` | int (-1 until read) | `guest-get-vcpus` |
| `appsList` | [str]: `kernel-<release>`, `qemu-guest-agent-<version>` | VDSM's fake list |
| `guestIPs` | str | see below |
| `session` | str, "Unknown" | oVirt's own agent only |

The disk mapping (`guest-get-disks`: each disk's serial -> its device name in the
guest) is not a stats field: VDSM writes it into the domain's metadata, as an
`<ovirt-vm:guestName>` in the `<ovirt-vm:device>` of the disk whose image id starts
the serial (virtio truncates serials to 20 characters), and folds it into the devices
`hash`, so the Engine reads it from `Host.dumpxmls` (VmDevicesConverter.parseDiskMapping).

One departure: VDSM leaves `guestIPs` empty with qemu-ga ("not used in oVirt Engine
since 4.2"); Hostvisor fills it as oVirt's own agent did, the guest's addresses
space-separated, loopback and link-local left out.

`translate` is pure. `read_facts` and `write_disk_mapping` block (each agent command
is bounded by `timeout` seconds) and run on a worker, never on an actor's thread.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import libvirt

from hostvisor.actors.vm.domxml import OVIRT_VM
from hostvisor.actors.vm.metadata_lock import editing

log = logging.getLogger(__name__)

INFO_TYPES = (
    libvirt.VIR_DOMAIN_GUEST_INFO_USERS
    | libvirt.VIR_DOMAIN_GUEST_INFO_OS
    | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE
    | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
    | libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM
    | getattr(libvirt, "VIR_DOMAIN_GUEST_INFO_DISKS", 0)
)
"""What VDSM asks `guestInfo` for (it asks for interfaces separately)."""
DEFAULTS: Mapping[str, Any] = {
    "username": "Unknown",
    "session": "Unknown",
    "guestCPUCount": -1,
    "appsList": [],
    "guestIPs": "",
    "guestFQDN": "",
}
"""What a running VM reports before its agent has answered (VDSM `getGuestInfo`)."""
_WINDOWS = "mswindows"
_ARCHES = {"i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86", "amd64": "x86_64"}


@dataclass(frozen=True, slots=True)
class GuestFacts:
    """What the agent said: stats fields, and the disk mapping (serial -> guest device)."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    disk_mapping: Mapping[str, str] = field(default_factory=dict)


def read_facts(domain: Any, *, timeout: int) -> GuestFacts:
    """Ask the guest's agent for its facts (blocks up to about `timeout` s per command).

    Raises:
        libvirt.libvirtError: the agent is not connected or did not answer.
    """
    domain.agentSetResponseTimeout(timeout)
    info = domain.guestInfo(INFO_TYPES, 0)
    interfaces = domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
    version = _agent_version(domain, timeout)
    cpus = _online_cpus(domain)
    return translate(info, interfaces, agent_version=version, online_cpus=cpus)


def _agent_version(domain: Any, timeout: int) -> str | None:
    try:
        import libvirt_qemu  # type: ignore[import-untyped]  # noqa: PLC0415 - libvirt-python's

        answer = libvirt_qemu.qemuAgentCommand(domain, '{"execute":"guest-info"}', timeout, 0)
        version: str = json.loads(answer)["return"]["version"]
    except (libvirt.libvirtError, ImportError, ValueError, KeyError, TypeError):
        return None
    return version


def _online_cpus(domain: Any) -> str | None:
    try:
        vcpus = domain.guestVcpus(0)
    except libvirt.libvirtError:
        return None
    online = vcpus.get("online") if isinstance(vcpus, dict) else None
    return online if isinstance(online, str) else None


def translate(
    info: Mapping[str, Any],
    interfaces: Mapping[str, Any],
    *,
    agent_version: str | None = None,
    online_cpus: str | None = None,
) -> GuestFacts:
    """Turn libvirt's guest info and agent interface addresses into VDSM's fields. Pure."""
    fields: dict[str, Any] = {}
    if "hostname" in info:
        fields["guestName"] = fields["guestFQDN"] = str(info["hostname"])
    if "os.id" in info:
        fields.update(_os_info(info))
    apps = []
    if "os.kernel-release" in info and info.get("os.id") != _WINDOWS:
        apps.append(f"kernel-{info['os.kernel-release']}")
    if agent_version is not None:
        apps.append(f"qemu-guest-agent-{agent_version}")
    if apps:
        fields["appsList"] = apps
    if "timezone.offset" in info:
        fields["guestTimezone"] = {
            "offset": int(info["timezone.offset"]) // 60,
            "zone": str(info.get("timezone.name", "unknown")),
        }
    if "user.count" in info:
        fields["username"] = ", ".join(_users(info))
    if "fs.count" in info:
        fields["disksUsage"] = _filesystems(info)
    if online_cpus is not None:
        fields["guestCPUCount"] = _cpu_count(online_cpus)
    nics = _interfaces(interfaces)
    fields["netIfaces"] = nics
    fields["guestIPs"] = " ".join(
        address for nic in nics for address in (*nic["inet"], *nic["inet6"]) if _reachable(address)
    )
    return GuestFacts(fields=fields, disk_mapping=_disks(info))


def _os_info(info: Mapping[str, Any]) -> dict[str, Any]:
    def get(key: str) -> str:
        return str(info.get(f"os.{key}", ""))

    machine = get("machine")
    arch = _ARCHES.get(machine, machine)
    if get("id") == _WINDOWS:
        return {
            "guestOs": get("pretty-name"),
            "guestOsInfo": {
                "type": "windows",
                "arch": arch,
                "kernel": "",
                "distribution": "",
                "version": get("kernel-version"),
                "codename": get("pretty-name"),
            },
        }
    return {
        "guestOs": get("kernel-release"),
        "guestOsInfo": {
            "type": "linux",
            "arch": arch,
            "kernel": get("kernel-release"),
            "distribution": get("name"),
            "version": get("version-id"),
            "codename": get("variant"),
        },
    }


def _users(info: Mapping[str, Any]) -> list[str]:
    users = []
    for index in range(int(info["user.count"])):
        name = str(info.get(f"user.{index}.name", ""))
        domain = str(info.get(f"user.{index}.domain", ""))
        users.append(f"{name}@{domain}" if domain else name)
    return users


def _filesystems(info: Mapping[str, Any]) -> list[dict[str, str]]:
    disks = []
    for index in range(int(info["fs.count"])):
        prefix = f"fs.{index}."
        total, used = info.get(prefix + "total-bytes"), info.get(prefix + "used-bytes")
        if total is None or used is None:
            continue  # VDSM skips filesystems without sizes (Windows' reserved volumes)
        disks.append(
            {
                "path": str(info.get(prefix + "mountpoint", "")),
                "total": str(total),
                "used": str(used),
                "fs": str(info.get(prefix + "fstype", "")),
            }
        )
    return disks


def _disks(info: Mapping[str, Any]) -> dict[str, str]:
    mapping = {}
    for index in range(int(info.get("disk.count", 0))):
        serial = info.get(f"disk.{index}.serial")
        name = info.get(f"disk.{index}.name")
        if serial and name:
            mapping[str(serial)] = str(name)
    return mapping


def _interfaces(interfaces: Mapping[str, Any]) -> list[dict[str, Any]]:
    nics = []
    for name, params in interfaces.items():
        inet: list[str] = []
        inet6: list[str] = []
        for address in params.get("addrs") or ():
            value = address.get("addr")
            if value is None:
                continue
            if address.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                inet.append(value)
            elif address.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV6:
                inet6.append(value)
        nics.append({"name": name, "hw": params.get("hwaddr") or "", "inet": inet, "inet6": inet6})
    return nics


def _reachable(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (parsed.is_loopback or parsed.is_link_local)


def _cpu_count(cpulist: str) -> int:
    """How many CPUs a list like "0-3,6" names."""
    count = 0
    for part in cpulist.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return -1
        count += int(high) - int(low) + 1 if high else 1
    return count


# -- the disk mapping, written into the domain's metadata ---------------------------------

_VM = f"{{{OVIRT_VM}}}vm"
_DEVICE = f"{{{OVIRT_VM}}}device"
_IMAGE = f"{{{OVIRT_VM}}}imageID"
_GUEST_NAME = f"{{{OVIRT_VM}}}guestName"
SERIAL_PREFIX = 20
"""Characters of a disk's id a virtio serial keeps."""


def mapped_metadata(xml: str, mapping: Mapping[str, str]) -> str | None:
    """The `ovirt-vm:vm` metadata of `xml` with each mapped disk's `guestName` set.

    The element comes without its namespace (`<vm><device …>`), as `setMetadata` takes it.

    A disk matches a serial the guest reports when the first 20 characters of its
    imageID are in it (VDSM `update_guest_disk_mapping`). Returns None when nothing
    changes (or there is no metadata). Pure.
    """
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's XML
    except ET.ParseError:
        return None
    meta = root.find(f"metadata/{_VM}")
    if meta is None:
        return None
    changed = False
    for device in meta.iterfind(_DEVICE):
        image = (device.findtext(_IMAGE) or "").strip()
        if device.get("devtype") != "disk" or not image:
            continue
        name = next(
            (guest for serial, guest in mapping.items() if image[:SERIAL_PREFIX] in serial), None
        )
        element = device.find(_GUEST_NAME)
        if name is None or (element is not None and element.text == name):
            continue
        if element is None:
            element = ET.SubElement(device, _GUEST_NAME)
        element.text = name
        changed = True
    if not changed:
        return None
    # libvirt puts the namespace on every element itself (setMetadata's key and uri)
    # and refuses an element that already has it: hand it the local names, as VDSM.
    for element in meta.iter():
        element.tag = element.tag.rpartition("}")[2]
    return ET.tostring(meta, encoding="unicode")


def write_disk_mapping(domain: Any, xml: str, mapping: Mapping[str, str]) -> str | None:
    """Write the guest's disk mapping into the running domain's metadata (blocking).

    Returns:
        The domain's live XML afterwards, or None when the metadata already said so.

    Raises:
        libvirt.libvirtError: libvirt refused the metadata or the domain is gone.
    """
    if mapped_metadata(xml, mapping) is None:
        return None  # as `xml` says, already mapped: no write, no lock
    with editing(domain):  # `xml` may be seconds old (agent calls): read it again
        metadata = mapped_metadata(domain.XMLDesc(0), mapping)
        if metadata is None:
            return None
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            metadata,
            "ovirt-vm",
            OVIRT_VM,
            libvirt.VIR_DOMAIN_AFFECT_LIVE,
        )
    live: str = domain.XMLDesc(0)
    return live
