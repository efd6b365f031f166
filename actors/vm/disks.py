"""The VM disks the Engine names by storage ids, and where they are on this host.

The Engine's domain XML describes each disk twice: a `<disk>` device with a target
(`vda`), and an `<ovirt-vm:device devtype="disk" name="vda">` in the metadata with
the disk's `poolID`, `domainID`, `imageID` and `volumeID`. The path in the device
is the Engine's guess; the host prepares the volume and puts its own path (and the
volume's format) into the device before the VM starts, so the XML runs unchanged.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm.domxml import NAMESPACES

_IDS = ("poolID", "domainID", "imageID", "volumeID")


@dataclass(frozen=True, slots=True)
class DiskVolume:
    """One disk of a VM, by its target name and its storage ids."""

    name: str
    pool_id: str
    domain_id: str
    image_id: str
    volume_id: str


@dataclass(frozen=True, slots=True)
class PreparedDisk:
    """Where a prepared volume is, and qemu's name of its format ("qcow2", "raw")."""

    path: str
    format: str


def disk_volumes(xml: str) -> list[DiskVolume]:
    """The disks of `xml` whose metadata names a storage volume."""
    root = _parse(xml)
    disks = []
    for device in root.iterfind("metadata/ovirt-vm:vm/ovirt-vm:device", NAMESPACES):
        if device.get("devtype") != "disk":
            continue
        ids = {key: _child_text(device, key) for key in _IDS}
        if not all(ids.values()):
            continue  # a disk that is not on a storage domain (a host path, a LUN)
        disks.append(
            DiskVolume(
                name=device.get("name", ""),
                pool_id=ids["poolID"],
                domain_id=ids["domainID"],
                image_id=ids["imageID"],
                volume_id=ids["volumeID"],
            )
        )
    return disks


def with_disk_paths(xml: str, prepared: Mapping[str, PreparedDisk]) -> str:
    """Return `xml` with each named disk's source and driver format set.

    Raises:
        InvalidArgument: a disk named in the metadata has no `<disk>` device.
    """
    root = _parse(xml)
    devices = root.find("devices")
    targets: dict[str, ET.Element] = {}
    if devices is not None:
        for disk in devices.iterfind("disk"):
            target = disk.find("target")
            dev = target.get("dev") if target is not None else None
            if dev:
                targets[dev] = disk
    for name, where in prepared.items():
        found = targets.get(name)
        if found is None:
            raise InvalidArgument(param="xml", reason=f"no <disk> device with target {name!r}")
        disk = found
        disk.set("type", "file")
        source = disk.find("source")
        if source is None:
            source = ET.SubElement(disk, "source")
        source.attrib.clear()
        source.set("file", where.path)
        driver = disk.find("driver")
        if driver is None:
            driver = ET.SubElement(disk, "driver", name="qemu")
        driver.set("type", where.format)
    return ET.tostring(root, encoding="unicode")


def _parse(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - trusted peers; no entity expansion in ET
    except ET.ParseError as error:
        raise InvalidArgument(param="xml", reason=f"not well-formed XML: {error}") from None


def _child_text(element: ET.Element, name: str) -> str:
    child = element.find(f"ovirt-vm:{name}", NAMESPACES)
    return (child.text or "").strip() if child is not None else ""
