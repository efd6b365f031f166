"""What a running VM reports from its live domain XML (VDSM `vm.py` `_getRunningVmStats`).

- `hash`: VDSM reports `str(hash((devices_hash, disk_mapping_hash)))`, where the
  devices hash is that of the serialised `<devices>` element and the mapping hash
  that of the guest's disk mapping as JSON. The Engine keeps the string and calls
  `Host.dumpxmls` when it changes (VdsBrokerObjectsBuilder.getVmDevicesHash). Python's
  `hash` of a string changes from one process to the next, so VDSM's value changes
  on every VDSM restart (and makes the Engine re-read every VM); Hostvisor uses a
  stable digest instead (a signed 64-bit integer, as a string like VDSM's) of the
  devices and of the disk mapping as the metadata holds it (each disk's
  `ovirt-vm:guestName`, which the guest agent's answers are written into): it
  changes exactly when what the Engine reads from dumpxmls changes, and survives an
  agent restart.
- `displayInfo`: one `{type, port, tlsPort, ipAddress}` per `<graphics>`, strings, an
  absent attribute as "" and an absent listen address as "0" (VDSM
  `vmdevices/graphics.display_info`).
- `timeOffset`: the guest clock's offset from UTC in seconds, as a string. VDSM
  starts from the `timeOffset` of its legacy vmParams ("0" for an XML-created VM) and
  follows RTC-change events; libvirt keeps that same running sum in the live XML's
  `<clock offset="variable" adjustment=…>`, which is read here (the VM actor reads
  the live XML again at each guest-agent poll, so the offset follows the guest).

- `nics` and `drives`: what the sampled figures need of each device, by the target
  name libvirt's bulk stats use: a NIC's MAC address and model (the Engine matches a
  VM NIC's statistics by `macAddr`: VmAnalyzer.updateInterfaceStatistics), a disk's
  image id, or a direct LUN's GUID, from the Engine's `ovirt-vm:device` metadata (the
  Engine keeps disk statistics by `imageID`: VdsBrokerObjectsBuilder.buildVmDiskStatistics
  skips a disk without one). Passed to `stats.vm_stats` as its `nics` and `drives`.

Pure functions of the XML text; the caller caches them per XML.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.vm.domxml import OVIRT_VM
from hostvisor.actors.vm.stats import DriveInfo, NicInfo


@dataclass(frozen=True, slots=True)
class Reported:
    """The fields a running VM's stats take from its domain XML."""

    devices_hash: str = "0"
    display_info: tuple[dict[str, str], ...] = ()
    time_offset: str = "0"
    disk_mapping: tuple[tuple[str, str], ...] = ()
    """(imageID, guestName) of each disk the metadata maps."""
    agent_channel: bool = False
    """Whether the domain has the qemu guest agent's channel (something to poll)."""
    nics: Mapping[str, NicInfo] = field(default_factory=dict)
    """Each NIC's MAC and model, by its target (host-side) device name."""
    drives: Mapping[str, DriveInfo] = field(default_factory=dict)
    """Each disk's image id (or LUN GUID), by its target name ("vda")."""

    def fields(self) -> dict[str, Any]:
        """`hash`, `displayInfo` and `timeOffset`, typed as VDSM sends them."""
        return {
            "hash": self.devices_hash,
            "displayInfo": [dict(info) for info in self.display_info],
            "timeOffset": self.time_offset,
        }


def read(xml: str) -> Reported:
    """Read what a VM reports from its domain XML; an unreadable XML reports defaults."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's or a checked client's XML
    except ET.ParseError:
        return Reported()
    devices = root.find("devices")
    # The `<devices>` element as libvirt wrote it (its XML is canonical): hashing the
    # text is ~50 times cheaper than serialising the parsed element again.
    start, end = xml.find("<devices"), xml.rfind("</devices>")
    text = xml[start:end] if 0 <= start < end else ""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    infos = []
    if devices is not None:
        for graphics in devices.iterfind("graphics"):
            listen = graphics.find("listen")
            address = listen.get("address") if listen is not None else None
            infos.append(
                {
                    "type": graphics.get("type", ""),
                    "port": graphics.get("port", ""),
                    "tlsPort": graphics.get("tlsPort", ""),
                    "ipAddress": address or "0",
                }
            )
    clock = root.find("clock")
    offset = "0"
    if clock is not None and clock.get("offset") == "variable":
        offset = str(_int(clock.get("adjustment", "0")))
    mapping = _disk_mapping(root)
    return Reported(
        devices_hash=devices_hash(digest, dict(mapping)),
        display_info=tuple(infos),
        time_offset=offset,
        disk_mapping=mapping,
        agent_channel=devices is not None
        and any(
            target.get("name") == AGENT_CHANNEL for target in devices.iterfind("channel/target")
        ),
        nics=_nics(devices),
        drives=_drives(root, devices),
    )


AGENT_CHANNEL = "org.qemu.guest_agent.0"
_VM = f"{{{OVIRT_VM}}}vm"
_DEVICE = f"{{{OVIRT_VM}}}device"
_IMAGE = f"{{{OVIRT_VM}}}imageID"
_GUID = f"{{{OVIRT_VM}}}GUID"
_GUEST_NAME = f"{{{OVIRT_VM}}}guestName"


def _nics(devices: ET.Element | None) -> dict[str, NicInfo]:
    """Each `<interface>` with a target device: its MAC address and model."""
    nics: dict[str, NicInfo] = {}
    for interface in devices.iterfind("interface") if devices is not None else ():
        target = interface.find("target")
        name = target.get("dev") if target is not None else None
        if not name:
            continue
        mac, model = interface.find("mac"), interface.find("model")
        nics[name] = NicInfo(
            mac=mac.get("address") if mac is not None else None,
            model=model.get("type") if model is not None else None,
        )
    return nics


def _drives(root: ET.Element, devices: ET.Element | None) -> dict[str, DriveInfo]:
    """Each disk's image id or LUN GUID, from its `ovirt-vm:device` metadata by name.

    A disk the metadata does not name (a plain file, a CD-ROM without an image) has no
    entry: it has no image in VDSM either.
    """
    if devices is None:
        return {}
    meta = root.find(f"metadata/{_VM}")
    named = {
        device.get("name", ""): device
        for device in (meta.iterfind(_DEVICE) if meta is not None else ())
        if device.get("devtype") == "disk"
    }
    drives: dict[str, DriveInfo] = {}
    for disk in devices.iterfind("disk"):
        target = disk.find("target")
        name = target.get("dev") if target is not None else None
        device = named.get(name or "")
        if not name or device is None:
            continue
        image = (device.findtext(_IMAGE) or "").strip()
        guid = (device.findtext(_GUID) or "").strip()
        if image or guid:
            drives[name] = DriveInfo(image_id=image, lun_guid=guid)
    return drives


def _disk_mapping(root: ET.Element) -> tuple[tuple[str, str], ...]:
    meta = root.find(f"metadata/{_VM}")
    if meta is None:
        return ()
    return tuple(
        sorted(
            ((device.findtext(_IMAGE) or "").strip(), (device.findtext(_GUEST_NAME) or "").strip())
            for device in meta.iterfind(_DEVICE)
            if device.get("devtype") == "disk" and device.find(_GUEST_NAME) is not None
        )
    )


def devices_hash(devices_digest: bytes, disk_mapping: Mapping[str, str]) -> str:
    """The devices hash: a signed 64-bit integer as a string, like VDSM's `hash()`."""
    mapping = json.dumps(dict(disk_mapping), sort_keys=True).encode()
    digest = hashlib.blake2b(devices_digest + b"\0" + mapping, digest_size=8).digest()
    return str(int.from_bytes(digest, "big", signed=True))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
