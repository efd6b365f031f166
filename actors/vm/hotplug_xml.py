"""The XML of hotplug: the Engine's `<hotplug>`/`<hotunplug>` documents and the live domain.

The Engine sends each device the way `LibvirtVmXmlBuilder.buildHotplugDisk` /
`buildHotplugNic` write it (ovirt-engine vdsbroker/builder/vminfo):

    <hotplug>
      <devices><disk …><target dev="vda" bus="virtio"/><alias name="ua-…"/>…</disk></devices>
      <metadata><ovirt-vm:vm><ovirt-vm:device devtype="disk" name="vda">
        <ovirt-vm:poolID>…</ovirt-vm:poolID>…</ovirt-vm:device></ovirt-vm:vm></metadata>
    </hotplug>

and an unplug as `Hotunplug` marshals it (vdsbroker/libvirt/Hotunplug.java): only the
device's alias, `<hotunplug><devices><disk><alias name="ua-…"/></disk></devices></hotunplug>`
(`<interface>` for a NIC). A disk's target name is only a hint ("vda" for the first
virtio disk, whatever the VM has): the host picks a free one, as VDSM's
`updateDriveIndex`, and names the metadata after it.

Everything here is pure: strings in, strings out; the metadata comes out with local
names (`<vm><device …>`), as `virDomainSetMetadata` takes it.
"""

from __future__ import annotations

import copy
import string
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.actors.vm.domxml import NAMESPACES, OVIRT_VM

_VM = f"{{{OVIRT_VM}}}vm"
_DEVICE = f"{{{OVIRT_VM}}}device"
_IDS = ("poolID", "domainID", "imageID", "volumeID")
_PREFIXES = {"ide": "hd", "scsi": "sd", "sata": "sd", "virtio": "vd", "fdc": "fd", "usb": "sd"}
"""A bus's disk name prefix (VDSM `drivename.make`)."""
PARAM = "params.xml"


@dataclass(frozen=True, slots=True)
class DeviceDoc:
    """One device of an Engine hotplug document, and its `ovirt-vm:device` metadata."""

    element: ET.Element
    meta: tuple[ET.Element, ...]

    @property
    def alias(self) -> str | None:
        """The device's `<alias name>`, if it has one."""
        return alias_of(self.element)

    @property
    def mac(self) -> str | None:
        """A NIC's `<mac address>`, lower case, if it has one."""
        mac = self.element.find("mac")
        address = mac.get("address") if mac is not None else None
        return address.lower() if address else None


def _parse(xml: str, param: str = PARAM) -> ET.Element:
    """Parse the Engine's device XML, checked first as any XML a client sends.

    `domxml.check_untrusted`: size, depth, no DTD or entities, no lone surrogates.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise InvalidArgument(param=param, reason="the device XML is required")
    try:
        domxml.check_untrusted(xml)
    except InvalidArgument as error:
        raise InvalidArgument(param=param, reason=error.context.get("reason", "")) from None
    try:
        return ET.fromstring(xml)  # noqa: S314 - checked above; ET expands no entities
    except ET.ParseError as error:
        raise InvalidArgument(param=param, reason=f"not well-formed XML: {error}") from None


def read_device(xml: str, kind: str) -> DeviceDoc:
    """The `kind` device (disk, interface, memory) of an Engine `<hotplug>` document.

    A bare device element is taken too. Pure.

    Raises:
        InvalidArgument: `xml` is not XML, or holds no `kind` device.
    """
    root = _parse(xml)
    if root.tag == kind:
        return DeviceDoc(root, ())
    element = root.find(f"devices/{kind}")
    if element is None:
        raise InvalidArgument(param=PARAM, reason=f"no <devices><{kind}> in the document")
    meta = tuple(root.iterfind("metadata/ovirt-vm:vm/ovirt-vm:device", NAMESPACES))
    return DeviceDoc(element, meta)


def alias_of(element: ET.Element) -> str | None:
    """A device element's `<alias name>`, if any."""
    alias = element.find("alias")
    name = alias.get("name") if alias is not None else None
    return name or None


def _ids(device: ET.Element) -> dict[str, str]:
    found = {}
    for key in _IDS:
        child = device.find(f"ovirt-vm:{key}", NAMESPACES)
        found[key] = (child.text or "").strip() if child is not None else ""
    return found


def _volume(name: str, ids: Mapping[str, str]) -> DiskVolume | None:
    if not all(ids.get(key) for key in _IDS):
        return None
    return DiskVolume(
        name=name,
        pool_id=ids["poolID"],
        domain_id=ids["domainID"],
        image_id=ids["imageID"],
        volume_id=ids["volumeID"],
    )


def disk_volume(doc: DeviceDoc) -> DiskVolume | None:
    """The storage volume a hotplugged disk's metadata names (None: a path or a LUN)."""
    target = doc.element.find("target")
    name = target.get("dev", "") if target is not None else ""
    for device in doc.meta:
        if device.get("devtype") == "disk" and device.get("name") in (name, None):
            return _volume(device.get("name", name), _ids(device))
    return None


def with_prepared(xml: str, prepared: PreparedDisk) -> str:
    """The hotplug document `xml` with its disk's source and format those of `prepared`."""
    root = _parse(xml)
    disk = root if root.tag == "disk" else root.find("devices/disk")
    if disk is None:
        raise InvalidArgument(param=PARAM, reason="no <devices><disk> in the document")
    disk.set("type", "file")
    source = disk.find("source")
    if source is None:
        source = ET.SubElement(disk, "source")
    for key in [key for key in source.attrib if key in ("file", "dev", "name", "protocol")]:
        del source.attrib[key]
    source.set("file", prepared.path)
    driver = disk.find("driver")
    if driver is None:
        driver = ET.SubElement(disk, "driver", name="qemu")
    driver.set("type", prepared.format)
    return ET.tostring(root, encoding="unicode")


# -- the live domain --------------------------------------------------------------------


def _devices(live: str) -> ET.Element:
    root = _parse(live, "xml")
    devices = root.find("devices")
    return devices if devices is not None else ET.Element("devices")


def targets(live: str) -> set[str]:
    """The target names of the live domain's disks."""
    return {
        dev
        for disk in _devices(live).iterfind("disk")
        if (target := disk.find("target")) is not None and (dev := target.get("dev"))
    }


def disk_name(bus: str, index: int) -> str:
    """VDSM's `drivename.make`: the `index`-th disk name on `bus` ("hdc" for ide, 2).

    Raises:
        InvalidArgument: an unknown bus or a negative index.
    """
    prefix = _PREFIXES.get(bus)
    if prefix is None or index < 0:
        raise InvalidArgument(param="driveSpec", iface=bus, index=index, reason="no such drive")
    letters = string.ascii_lowercase
    suffix = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        suffix = letters[rest] + suffix
    return prefix + suffix


def plan_disk(doc: DeviceDoc, taken: set[str]) -> tuple[str, str, list[ET.Element]]:
    """The disk's XML to attach, its target name, and its metadata, named after it.

    Keeps the Engine's target if free, else takes the first free name on its bus.

    Raises:
        InvalidArgument: the disk has no target.
    """
    element = copy.deepcopy(doc.element)
    target = element.find("target")
    hint = target.get("dev") if target is not None else None
    if target is None or not hint:
        raise InvalidArgument(param=PARAM, reason="the disk has no <target dev>")
    name = hint
    if name in taken:
        bus = target.get("bus") or next(
            (bus for bus, prefix in _PREFIXES.items() if hint.startswith(prefix)), "virtio"
        )
        name = next(disk_name(bus, i) for i in range(702) if disk_name(bus, i) not in taken)
    target.set("dev", name)
    meta = []
    for device in doc.meta:
        renamed = copy.deepcopy(device)
        if renamed.get("devtype") == "disk" and renamed.get("name") == hint:
            renamed.set("name", name)
        meta.append(renamed)
    return ET.tostring(element, encoding="unicode"), name, meta


def live_device(
    live: str, kind: str, *, alias: str | None = None, mac: str | None = None
) -> ET.Element | None:
    """The live domain's `kind` device with that alias (or, for a NIC, that MAC)."""
    for element in _devices(live).iterfind(kind):
        if alias is not None and alias_of(element) == alias:
            return element
    if mac is not None:
        for element in _devices(live).iterfind(kind):
            found = element.find("mac")
            if found is not None and (found.get("address") or "").lower() == mac:
                return element
    return None


def disk_metadata(live: str, name: str) -> DiskVolume | None:
    """The storage volume the live metadata names for disk `name` (None: none)."""
    for device in _meta_devices(_parse(live, "xml")):
        if device.get("devtype") == "disk" and device.get("name") == name:
            return _volume(name, _ids(device))
    return None


def disk_of_image(live: str, domain_id: str, image_id: str) -> tuple[str, str] | None:
    """The (target name, qemu format) of the live disk whose metadata names that image."""
    root = _parse(live, "xml")
    for device in _meta_devices(root):
        ids = _ids(device)
        if device.get("devtype") != "disk" or ids["imageID"] != image_id:
            continue
        if ids["domainID"] and ids["domainID"] != domain_id:
            continue
        name = device.get("name", "")
        for disk in _devices(live).iterfind("disk"):
            target = disk.find("target")
            if target is not None and target.get("dev") == name:
                driver = disk.find("driver")
                return name, (driver.get("type", "raw") if driver is not None else "raw")
    return None


def cdrom(live: str, name: str | None) -> ET.Element | None:
    """The live CD-ROM named `name` (None: the first CD-ROM)."""
    for disk in _devices(live).iterfind("disk"):
        if disk.get("device") != "cdrom":
            continue
        target = disk.find("target")
        if name is None or (target is not None and target.get("dev") == name):
            return disk
    return None


def cdrom_with(element: ET.Element, path: str) -> str:
    """The CD-ROM `element` loaded with `path`, or ejected when `path` is empty."""
    disk = copy.deepcopy(element)
    disk.set("type", "file")
    for child in [c for c in disk if c.tag in ("source", "backingStore")]:
        disk.remove(child)
    if path:
        source = ET.Element("source", file=path)
        disk.insert(1 if disk.find("driver") is not None else 0, source)
    return ET.tostring(disk, encoding="unicode")


def memory_xml(memory: Mapping[str, Any]) -> str:
    """VDSM's `memory_xml`: a DIMM of `size` MiB on NUMA node `node`.

    Raises:
        InvalidArgument: size or node missing or not whole numbers.
    """
    try:
        size = int(memory["size"])
        node = int(memory.get("node", 0))
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument(
            param="params.memory", reason="size (MiB) and node must be whole numbers"
        ) from None
    if size <= 0 or node < 0:
        raise InvalidArgument(param="params.memory", size=size, node=node, reason="out of range")
    element = ET.Element("memory", model="dimm")
    target = ET.SubElement(element, "target")
    ET.SubElement(target, "size", unit="KiB").text = str(size * 1024)
    ET.SubElement(target, "node").text = str(node)
    alias = memory.get("alias")
    if isinstance(alias, str) and alias:
        ET.SubElement(element, "alias", name=alias)
    address = memory.get("address")
    if isinstance(address, Mapping) and address:
        ET.SubElement(element, "address", {str(k): str(v) for k, v in address.items()})
    return ET.tostring(element, encoding="unicode")


# -- metadata ---------------------------------------------------------------------------


def _meta_devices(root: ET.Element) -> list[ET.Element]:
    return list(root.iterfind("metadata/ovirt-vm:vm/ovirt-vm:device", NAMESPACES))


def _vm_meta(live: str) -> ET.Element:
    root = _parse(live, "xml")
    meta = root.find(f"metadata/{_VM}")
    return copy.deepcopy(meta) if meta is not None else ET.Element(_VM)


def _local(meta: ET.Element) -> str:
    for element in meta.iter():
        element.tag = element.tag.rpartition("}")[2]
    return ET.tostring(meta, encoding="unicode")


def metadata_with(
    live: str, devices: Iterable[ET.Element], replaces: Callable[[ET.Element], bool]
) -> str:
    """The live `ovirt-vm:vm` metadata with `devices` added; those `replaces` names go."""
    meta = _vm_meta(live)
    for device in [d for d in meta.iterfind(_DEVICE) if replaces(d)]:
        meta.remove(device)
    for device in devices:
        meta.append(copy.deepcopy(device))
    return _local(meta)


def metadata_without(live: str, match: Callable[[ET.Element], bool]) -> str | None:
    """The live metadata without the devices `match` names; None if it has none."""
    meta = _vm_meta(live)
    doomed = [d for d in meta.iterfind(_DEVICE) if match(d)]
    if not doomed:
        return None
    for device in doomed:
        meta.remove(device)
    return _local(meta)


def disk_meta_named(name: str) -> Callable[[ET.Element], bool]:
    """Matches the metadata of disk `name`."""
    return lambda d: d.get("devtype") == "disk" and d.get("name") == name


def nic_meta_of(alias: str | None, mac: str | None) -> Callable[[ET.Element], bool]:
    """Matches the metadata of the NIC with that alias (or MAC)."""

    def match(device: ET.Element) -> bool:
        if alias is not None and device.get("alias") == alias:
            return True
        return mac is not None and (device.get("mac_address") or "").lower() == mac

    return match


def cd_meta(name: str, volume: DiskVolume | None) -> ET.Element:
    """The metadata of CD `name` holding `volume` (its ids)."""
    device = ET.Element(_DEVICE, devtype="disk", name=name)
    if volume is not None:
        values = (volume.pool_id, volume.domain_id, volume.image_id, volume.volume_id)
        for key, value in zip(_IDS, values, strict=True):
            ET.SubElement(device, f"{{{OVIRT_VM}}}{key}").text = value
    return device


def disk_named(live: str, name: str | None) -> ET.Element | None:
    """The live disk whose target is `name` (None: none)."""
    if not name:
        return None
    for disk in _devices(live).iterfind("disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == name:
            return disk
    return None


def with_guaranteed(live: str, megabytes: int) -> str:
    """The live metadata with `minGuaranteedMemoryMb` set (VDSM `_update_mem_guaranteed_size`)."""
    meta = _vm_meta(live)
    element = meta.find(f"{{{OVIRT_VM}}}minGuaranteedMemoryMb")
    if element is None:
        element = ET.SubElement(meta, f"{{{OVIRT_VM}}}minGuaranteedMemoryMb", type="int")
    element.text = str(megabytes)
    return _local(meta)


def _cpu_range(part: str) -> range:
    first, _dash, last = part.strip().partition("-")
    low, high = int(first), int(last or first)
    return range(low, high + 1) if 0 <= low <= high else range(0)


def cpusets(sets: Iterable[str], count: int) -> list[frozenset[int]]:
    """The host CPUs of each vCPU's cpuset ("1,3-5"), one per vCPU (VDSM `cpulist_parse`).

    Raises:
        InvalidArgument: not `count` cpusets, or one is not a list of CPUs and ranges.
    """
    parsed = []
    for text in sets:
        try:
            ranges = [_cpu_range(part) for part in str(text).split(",")]
        except ValueError:
            ranges = []
        if not ranges or not all(ranges):
            raise InvalidArgument(param="cpusets", cpuset=text, reason="not like 1,3-5")
        parsed.append(frozenset(cpu for cpus in ranges for cpu in cpus))
    if len(parsed) != count:
        raise InvalidArgument(
            param="cpusets", reason=f"length {len(parsed)} must match numberOfCpus {count}"
        )
    return parsed


def cpumap(cpus: frozenset[int], host_cpus: int) -> tuple[bool, ...]:
    """The CPU map (libvirt's) of `cpus` on a host with `host_cpus` CPUs.

    Raises:
        InvalidArgument: a CPU the host does not have.
    """
    beyond = sorted(cpu for cpu in cpus if cpu >= host_cpus)
    if beyond:
        raise InvalidArgument(param="cpusets", cpus=beyond, reason=f"the host has {host_cpus}")
    return tuple(cpu in cpus for cpu in range(host_cpus))


def without_stale(live: str) -> str | None:
    """The live metadata without the devices the domain no longer has; None if none.

    A disk's metadata names its target, a NIC's its alias: an entry whose device left
    the live XML (an unplug that ended while nobody waited for it, such as across an
    agent restart) goes, as VDSM's `onDeviceRemoved` drops it.
    """
    disks = targets(live)
    nics = {alias_of(nic) for nic in _devices(live).iterfind("interface")}

    def stale(device: ET.Element) -> bool:
        if device.get("devtype") == "disk":
            return device.get("name") not in disks
        alias = device.get("alias")
        return device.get("mac_address") is not None and alias is not None and alias not in nics

    return metadata_without(live, stale)
