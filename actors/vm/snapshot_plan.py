"""What a live snapshot does to a VM, worked out from its domain XML (pure functions).

The Engine's `SnapshotVDSCommand` names each disk to snapshot by the volume the VM
runs on (`baseVolumeID`) and the new COW volume it made on top of it with
`Volume.create` (`volumeID`), both in `domainID`/`imageID`. VDSM
(`virt/jobs/snapshot.py`) finds the VM's drive by the base ids, prepares the new
volume and hands libvirt a `<domainsnapshot>` whose disks are external and reuse
that volume (`REUSE_EXT`): qemu opens the Engine's file, whose backing file the
storage already wrote, and writes there from then on. Afterwards the drive's
`volumeID` in the `ovirt-vm` metadata names the new leaf.

While the job runs, its state sits in the metadata too, as VDSM keeps it
(`<ovirt-vm:snapshot_job>` holding JSON): a restarted agent reads it back and
finishes the job from what libvirt and qemu say (`recover` in snapshots.py).

Nothing here blocks or touches libvirt; `SnapshotFailed` is VDSM's code 48.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.vm.domxml import OVIRT_VM

_VM = f"{{{OVIRT_VM}}}vm"
_DEVICE = f"{{{OVIRT_VM}}}device"
_JOB = f"{{{OVIRT_VM}}}snapshot_job"
_AGENT_CHANNEL = "org.qemu.guest_agent.0"
DRIVE_KEYS = ("domainID", "imageID", "volumeID", "baseVolumeID")
"""What the Engine sends for each disk (SnapshotVDSCommand.createDisksMap)."""


class SnapshotFailed(HostvisorError):
    """The live snapshot could not be taken (VDSM's code 48)."""

    code = 48
    message = "Snapshot failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapDrive:
    """One disk to snapshot: the VM's drive `name` and the volume it moves onto.

    `path` and `format` are filled in once the new volume is prepared.
    """

    name: str
    pool_id: str
    domain_id: str
    image_id: str
    base_volume_id: str
    volume_id: str
    disk_type: str = "file"
    path: str = ""

    def record(self) -> dict[str, str]:
        """How the job's metadata keeps it (JSON)."""
        return {
            "name": self.name,
            "poolID": self.pool_id,
            "domainID": self.domain_id,
            "imageID": self.image_id,
            "baseVolumeID": self.base_volume_id,
            "volumeID": self.volume_id,
            "diskType": self.disk_type,
            "path": self.path,
        }

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> SnapDrive:
        """Read back `record()` (raises KeyError, TypeError on a damaged one)."""
        return cls(
            name=str(record["name"]),
            pool_id=str(record["poolID"]),
            domain_id=str(record["domainID"]),
            image_id=str(record["imageID"]),
            base_volume_id=str(record["baseVolumeID"]),
            volume_id=str(record["volumeID"]),
            disk_type=str(record.get("diskType", "file")),
            path=str(record.get("path", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPlan:
    """The disks to move onto new volumes, and those already there (a retry)."""

    drives: tuple[SnapDrive, ...]
    current: tuple[str, ...] = ()
    """Volume ids the VM already runs on: nothing to do for them (VDSM skips them)."""
    others: tuple[str, ...] = field(default=())
    """The VM's other disk targets: left out of the snapshot (`snapshot='no'`)."""


def check_drives(value: Any) -> list[dict[str, str]]:
    """The Engine's `snapDrives`, checked: a list of objects with the four ids as strings.

    Raises:
        InvalidArgument: anything else (VDSM would fail the job; nothing starts).
    """
    if not isinstance(value, list):
        raise InvalidArgument(param="snapDrives", reason="must be a list of disks")
    drives = []
    for index, drive in enumerate(value):
        if not isinstance(drive, dict):
            raise InvalidArgument(param=f"snapDrives[{index}]", reason="must be an object")
        for key in DRIVE_KEYS:
            if not isinstance(drive.get(key), str) or not drive[key]:
                raise InvalidArgument(
                    param=f"snapDrives[{index}].{key}", reason="a volume id string is required"
                )
        drives.append({key: drive[key] for key in DRIVE_KEYS})
    return drives


def plan(xml: str, drives: Sequence[Mapping[str, str]]) -> SnapshotPlan:
    """Match each requested disk to the VM's drive it snapshots (VDSM's `snapshot()`).

    A drive already on its new volume is skipped (a retried request); the base volume
    must be the one a drive runs on now.

    Raises:
        SnapshotFailed: no drive runs on a requested base volume, one is asked for twice,
            or a drive is not a file or block volume.
    """
    disks = _disks(xml)
    metadata = _metadata_devices(xml)
    planned: list[SnapDrive] = []
    current: list[str] = []
    for drive in drives:
        domain_id, image_id = drive["domainID"], drive["imageID"]
        name = _drive_named(metadata, domain_id, image_id, drive["volumeID"])
        if name is not None:
            current.append(drive["volumeID"])
            continue
        name = _drive_named(metadata, domain_id, image_id, drive["baseVolumeID"])
        if name is None:
            raise SnapshotFailed(reason="the base volume does not exist", **drive)
        if any(p.name == name for p in planned):
            raise SnapshotFailed(reason="a disk is asked for twice", drive=name)
        disk_type = disks.get(name)
        if disk_type not in ("file", "block"):
            raise SnapshotFailed(
                reason="the drive is not a volume libvirt can snapshot", drive=name
            )
        planned.append(
            SnapDrive(
                name=name,
                pool_id=metadata[name].get("poolID", ""),
                domain_id=domain_id,
                image_id=image_id,
                base_volume_id=drive["baseVolumeID"],
                volume_id=drive["volumeID"],
                disk_type=disk_type,
            )
        )
    names = {drive.name for drive in planned}
    others = tuple(name for name in disks if name not in names)
    return SnapshotPlan(drives=tuple(planned), current=tuple(current), others=others)


def snapshot_xml(
    drives: Sequence[SnapDrive], others: Sequence[str] = (), memory: str | None = None
) -> str:
    """The `<domainsnapshot>` for libvirt: each drive external on its prepared path.

    Every other disk is named with `snapshot='no'`, so that libvirt never makes an
    overlay of its own for a disk the Engine did not ask for. With `memory`, the
    guest's memory and device state go to that file (VDSM's memory snapshot).
    """
    root = ET.Element("domainsnapshot")
    if memory is not None:
        ET.SubElement(root, "memory", snapshot="external", file=memory)
    disks = ET.SubElement(root, "disks")
    for drive in drives:
        disk = ET.SubElement(disks, "disk", name=drive.name, snapshot="external")
        disk.set("type", drive.disk_type)
        source = ET.SubElement(disk, "source")
        source.set("file" if drive.disk_type == "file" else "dev", drive.path)
        ET.SubElement(disk, "driver", type="qcow2")
    for name in others:
        ET.SubElement(disks, "disk", name=name, snapshot="no")
    return ET.tostring(root, encoding="unicode")


def metadata_with(
    xml: str,
    *,
    volumes: Mapping[str, str] | None = None,
    job: Mapping[str, Any] | None = None,
    clear_job: bool = False,
) -> str | None:
    """The `ovirt-vm:vm` metadata of `xml` with drives' volume ids and the job record set.

    Args:
        xml: the domain's live XML.
        volumes: a drive name -> the volume id it runs on now.
        job: the job record to keep (JSON in `<snapshot_job>`).
        clear_job: drop the job record.

    Returns:
        The element without namespaces, as `setMetadata` takes it (see
        guestagent.mapped_metadata); None when the XML has no oVirt metadata.
    """
    root = _parse(xml)
    meta = root.find(f"metadata/{_VM}")
    if meta is None:
        return None
    for device in meta.iterfind(_DEVICE):
        name = device.get("name", "")
        if device.get("devtype") != "disk" or not volumes or name not in volumes:
            continue
        element = device.find(f"{{{OVIRT_VM}}}volumeID")
        if element is None:
            element = ET.SubElement(device, f"{{{OVIRT_VM}}}volumeID")
        element.text = volumes[name]
    old = meta.find(_JOB)
    if old is not None and (clear_job or job is not None):
        meta.remove(old)
    if job is not None:
        ET.SubElement(meta, _JOB).text = json.dumps(job, sort_keys=True)
    for element in meta.iter():
        element.tag = element.tag.rpartition("}")[2]
    return ET.tostring(meta, encoding="unicode")


def with_disks_of(saved: str, source: str) -> str:
    """The domain XML of a save image with its disks on `source`'s volumes (pure).

    A memory snapshot restored by the Engine's preview runs on new volumes: each disk
    of `saved` whose target `source` also has takes `source`'s `<source>` and format,
    and loses its recorded `<backingStore>` (libvirt reads the chain again), and the
    `<metadata>` is `source`'s (its volume ids). The rest of the saved definition
    (its devices and addresses) stays, as libvirt's restore wants it.
    """
    root, new = _parse(saved), _parse(source)
    wanted: dict[str, ET.Element] = {}
    for disk in new.iterfind("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev"):
            wanted[target.get("dev", "")] = disk
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        other = wanted.get(target.get("dev", "")) if target is not None else None
        found = other.find("source") if other is not None else None
        if other is None or found is None:
            continue
        for old in disk.findall("source") + disk.findall("backingStore"):
            disk.remove(old)
        disk.set("type", other.get("type", "file"))
        disk.insert(0, found)
        driver, format_of = disk.find("driver"), other.find("driver")
        if driver is not None and format_of is not None and format_of.get("type"):
            driver.set("type", format_of.get("type", ""))
    metadata, engine_metadata = root.find("metadata"), new.find("metadata")
    if engine_metadata is not None:  # the Engine's ids of the volumes it runs on now
        if metadata is not None:
            root.remove(metadata)
        root.append(engine_metadata)
    return ET.tostring(root, encoding="unicode")


def job_record(xml: str) -> dict[str, Any] | None:
    """The snapshot job a domain's metadata holds (an agent died in it); None if none."""
    root = _parse(xml)
    element = root.find(f"metadata/{_VM}/{_JOB}")
    if element is None or not (element.text or "").strip():
        return None
    try:
        record = json.loads(element.text or "")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def disk_sources(xml: str) -> dict[str, str]:
    """Each disk target's source path (file or dev) in a domain XML."""
    root = _parse(xml)
    sources = {}
    for disk in root.iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is None or source is None:
            continue
        path = source.get("file") or source.get("dev") or ""
        if target.get("dev") and path:
            sources[target.get("dev", "")] = path
    return sources


def agent_connected(xml: str) -> bool:
    """Whether the live XML says qemu's guest agent channel is connected."""
    root = _parse(xml)
    for channel in root.iterfind("devices/channel"):
        target = channel.find("target")
        if target is not None and target.get("name") == _AGENT_CHANNEL:
            return target.get("state") == "connected"
    return False


def has_agent_channel(xml: str) -> bool:
    """Whether the domain has a qemu guest agent channel at all."""
    root = _parse(xml)
    return any(
        (target := channel.find("target")) is not None and target.get("name") == _AGENT_CHANNEL
        for channel in root.iterfind("devices/channel")
    )


def _disks(xml: str) -> dict[str, str]:
    """Each snapshot-able disk's target name -> its type (file, block, network...)."""
    root = _parse(xml)
    disks: dict[str, str] = {}
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        if disk.get("device", "disk") not in ("disk", "lun") or target is None:
            continue
        if disk.find("readonly") is not None or not target.get("dev"):
            continue
        disks[target.get("dev", "")] = disk.get("type", "file")
    return disks


def _metadata_devices(xml: str) -> dict[str, dict[str, str]]:
    """Each disk device's storage ids from the `ovirt-vm` metadata, by drive name."""
    root = _parse(xml)
    devices: dict[str, dict[str, str]] = {}
    for device in root.iterfind(f"metadata/{_VM}/{_DEVICE}"):
        if device.get("devtype") != "disk" or not device.get("name"):
            continue
        devices[device.get("name", "")] = {
            child.tag.rpartition("}")[2]: (child.text or "").strip() for child in device
        }
    return devices


def _drive_named(
    devices: Mapping[str, Mapping[str, str]], domain_id: str, image_id: str, volume_id: str
) -> str | None:
    for name, ids in devices.items():
        if (ids.get("domainID"), ids.get("imageID"), ids.get("volumeID")) == (
            domain_id,
            image_id,
            volume_id,
        ):
            return name
    return None


def _parse(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    except ET.ParseError as error:
        raise SnapshotFailed(reason=f"the domain XML is not readable: {error}") from None


class GuestAgentUnresponsive(HostvisorError):
    """The qemu guest agent did not answer (VDSM's `nonresp`, code 19)."""

    code = 19
    message = "Guest agent non-responsive"


class FreezeFailed(HostvisorError):
    """The guest's file systems were not frozen (VDSM's `freezeErr`, code 76)."""

    code = 76
    message = "Unable to freeze guest filesystems"


class ThawFailed(HostvisorError):
    """The guest's file systems were not thawed (VDSM's `thawErr`, code 77)."""

    code = 77
    message = "Unable to thaw guest filesystems"
