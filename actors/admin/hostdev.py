"""Host devices as VDSM reports them, from libvirt's node devices (lib/vdsm/common/hostdev.py).

`Host.hostdevListByCaps` answers `{device name: {"params": {...}}}`, one entry per
libvirt node device, with VDSM's fields: `capability` (libvirt's capability
type), `parent`, `driver`, `vendor`/`vendor_id`, `product`/`product_id`,
`interface` (a NIC's name), `address` (PCI domain/bus/slot/function, USB
bus/device, SCSI host/bus/target/lun), `iommu_group`, `numa_node`, `physfn`,
`totalvfs`, `mdev` (types a PCI device offers), `udev_path`, `block_path` and
`is_assignable` ("true"/"false": a PCI device is assignable when it is an endpoint,
i.e. its config header type is 0, and not a bridge).

Node devices need libvirt's node device driver: `qemu:///system` has it (a
libvirtd with its udev backend); the embedded `qemu:///embed` does not, and
there the list is empty (logged once), as on a host without devices. VDSM's
extras that read other sources are read the same way here: the PCI config
header and `sriov_totalvfs` from sysfs, mdev descriptions from sysfs. NVDIMMs
(through `ndctl`) are not reported.

All of it blocks (libvirt calls, sysfs reads) and runs on a worker of the
devices actor; the parsing (`device_params`) is pure but for those sysfs reads.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hostvisor.actors.admin.errors import HostdevError

log = logging.getLogger(__name__)

PCI_DEVICES = Path("/sys/bus/pci/devices")
HEADER_TYPE_OFFSET = 0x0E
ENDPOINT = 0

CAPABILITY_FLAGS = {
    "system": 1 << 0,
    "pci": 1 << 1,
    "usb_device": 1 << 2,
    "usb": 1 << 3,
    "net": 1 << 4,
    "scsi_host": 1 << 5,
    "scsi_target": 1 << 6,
    "scsi": 1 << 7,
    "storage": 1 << 8,
    "fc_host": 1 << 9,
    "vports": 1 << 10,
    "scsi_generic": 1 << 11,
    "mdev_types": 1 << 13,
    "mdev": 1 << 14,
}
"""libvirt's VIR_CONNECT_LIST_NODE_DEVICES_CAP_* by capability name; VDSM's names. An
unknown name counts as `system`, as in VDSM."""

_ADDRESS_FIELDS = {
    "pci": ("domain", "bus", "slot", "function"),
    "scsi": ("host", "bus", "target", "lun"),
    "usb_device": ("bus", "device"),
}


def flags_of(caps: Iterable[str]) -> int:
    """The listAllDevices flags selecting `caps` (0: every device)."""
    return sum({CAPABILITY_FLAGS.get(cap, CAPABILITY_FLAGS["system"]) for cap in caps})


# -- one device's params (VDSM's data processors) ---------------------------------------------


def pci_sysfs_name(device_name: str) -> str:
    """pci_0000_00_02_0 -> 0000:00:02.0 (VDSM's name_to_pci_path)."""
    return device_name[4:].replace("_", ".").replace(".", ":", 2)


def pci_header_type(device_name: str, root: Path = PCI_DEVICES) -> int | None:
    """The PCI config header type (without the multi-function bit), or None if unreadable."""
    try:
        with (root / pci_sysfs_name(device_name) / "config").open("rb") as config:
            config.seek(HEADER_TYPE_OFFSET)
            byte = config.read(1)
    except OSError:
        return None
    return byte[0] & 0x7F if byte else None


def _sriov_totalvfs(device_name: str, root: Path) -> int | None:
    try:
        return int((root / pci_sysfs_name(device_name) / "sriov_totalvfs").read_text())
    except (OSError, ValueError):
        return None


def _text(element: ET.Element | None) -> str | None:
    return None if element is None else element.text


def device_params(xml: str, *, pci_root: Path = PCI_DEVICES) -> dict[str, Any]:
    """Return VDSM's params of the node device `xml` (reads the PCI sysfs extras).

    Raises:
        ET.ParseError: `xml` is not a node device's XML.
    """
    device = ET.fromstring(xml)  # noqa: S314 - libvirt's own output
    capability = device.find("capability")
    if capability is None:
        raise ET.ParseError("no capability")
    cap = capability.get("type", "")
    params: dict[str, Any] = {"capability": cap, "is_assignable": "true"}
    name = _text(device.find("name")) or ""
    if name != "computer":
        params["parent"] = _text(device.find("parent")) or ""
    driver = _text(device.find("driver/name"))
    if driver is not None:
        params["driver"] = driver
    params.update(_product_info(capability))
    if cap in _ADDRESS_FIELDS:
        params["address"] = {key: _text(capability.find(key)) for key in _ADDRESS_FIELDS[cap]}
    if cap == "pci":
        params.update(_pci_params(device, capability, name, pci_root))
    extra = _EXTRA_TEXT.get(cap)
    if extra is not None and capability.find(extra[0]) is not None:
        params[extra[1]] = _text(capability.find(extra[0]))
    return params


_EXTRA_TEXT = {"scsi_generic": ("char", "udev_path"), "storage": ("model", "product")}
"""Capability -> (element whose text VDSM reports, under which param)."""


def _product_info(capability: ET.Element) -> dict[str, str]:
    """vendor/product/interface names and ids, as VDSM's _process_productinfo."""
    params = {}
    for child in capability:
        if child.tag in {"vendor", "product", "interface"}:
            if "id" in child.attrib:
                params[f"{child.tag}_id"] = child.attrib["id"]
            if child.text:
                params[child.tag] = child.text
    return params


def _pci_params(
    device: ET.Element, capability: ET.Element, name: str, pci_root: Path
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    inner = capability.find("capability")
    bridge = inner is not None and inner.get("type") in {"pci-bridge", "cardbus-bridge"}
    endpoint = pci_header_type(name, pci_root) == ENDPOINT
    params["is_assignable"] = "true" if endpoint and not bridge else "false"
    mdev = _mdev_types(device, capability)
    if mdev:
        params["mdev"] = mdev
    totalvfs = _sriov_totalvfs(name, pci_root)
    if totalvfs is not None:
        params["totalvfs"] = totalvfs
    group = capability.find("iommuGroup")
    if group is not None:
        params["iommu_group"] = group.get("number")
    if inner is not None and inner.get("type") == "phys_function":
        address = inner.find("address")
        if address is not None:
            params["physfn"] = "pci_{}_{}_{}_{}".format(
                *(address.get(key, "0x")[2:] for key in ("domain", "bus", "slot", "function"))
            )
    numa = capability.find("numa")
    if numa is not None:
        params["numa_node"] = numa.get("node")
    return params


def _mdev_types(device: ET.Element, capability: ET.Element) -> dict[str, dict[str, str]]:
    types = capability.find("capability[@type='mdev_types']")
    if types is None:
        return {}
    path = _text(device.find("path")) or ""
    found: dict[str, dict[str, str]] = {}
    for mdev_type in types.findall("type"):
        type_id = mdev_type.get("id", "")
        instances = _text(mdev_type.find("availableInstances"))
        if not type_id or instances is None:
            continue  # VDSM leaves out the types it cannot describe
        entry = {"name": _text(mdev_type.find("name")) or type_id, "available_instances": instances}
        try:
            description = Path(path, "mdev_supported_types", type_id, "description").read_text()
        except OSError:
            pass
        else:
            entry["description"] = description.strip()
        found[type_id] = entry
    return found


# -- every device ---------------------------------------------------------------------------------


def scsi_extras(devices: Mapping[str, dict[str, Any]]) -> None:
    """Give each SCSI device its storage child's vendor/product and its sg node (in place)."""
    children: dict[tuple[str, str], dict[str, Any]] = {}
    for params in devices.values():
        parent = params.get("parent")
        if parent is not None:
            children[(params["capability"], parent)] = params
    for name, params in devices.items():
        if params["capability"] != "scsi":
            continue
        storage = children.get(("storage", name))
        if storage is not None:
            for key in ("vendor", "product"):
                if key in storage:
                    params[key] = storage[key]
        generic = children.get(("scsi_generic", name))
        if generic is not None and "udev_path" in generic:
            params["udev_path"] = generic["udev_path"]


def list_by_caps(
    connection: Callable[[], Any], caps: Sequence[str] = (), *, pci_root: Path = PCI_DEVICES
) -> dict[str, dict[str, Any]]:
    """Return hostdevListByCaps' `deviceList` (blocking: libvirt and sysfs).

    An empty `caps` lists every device. A connection without node devices
    (qemu:///embed) lists none.
    """
    import libvirt  # noqa: PLC0415 - only where libvirt is used

    conn = connection()
    try:
        found = conn.listAllDevices(flags_of(caps))
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            log.info("libvirt %s has no node devices: no host devices", conn.getURI())
            return {}
        raise
    devices: dict[str, dict[str, Any]] = {}
    for node in found:
        try:
            devices[node.name()] = device_params(node.XMLDesc(0), pci_root=pci_root)
        except libvirt.libvirtError:
            continue  # gone since it was listed: gone for us too
    scsi_extras(devices)
    return {name: {"params": params} for name, params in devices.items()}


def change_numvfs(
    connection: Callable[[], Any],
    device_name: str,
    numvfs: int,
    *,
    pci_root: Path = PCI_DEVICES,
) -> None:
    """Set the number of virtual functions of SR-IOV device `device_name` (blocking).

    Raises:
        HostdevError: no such PCI device, it has no SR-IOV, or `numvfs` exceeds its
            `totalvfs` (VDSM answers these with its general exception); nothing changes.
        OSError: the kernel refused the new count.
    """
    if not device_name.startswith("pci_"):
        raise HostdevError(device=device_name, reason="not a PCI device")
    devices = list_by_caps(connection, ("pci",), pci_root=pci_root)
    if device_name not in devices:
        raise HostdevError(device=device_name, reason="no such device")
    totalvfs = devices[device_name]["params"].get("totalvfs")
    if totalvfs is None:
        raise HostdevError(device=device_name, reason="the device does not support SR-IOV")
    if numvfs > totalvfs:
        raise HostdevError(device=device_name, reason=f"at most {totalvfs} VFs")
    numvfs_file = pci_root / pci_sysfs_name(device_name) / "sriov_numvfs"
    numvfs_file.write_text("0")  # the kernel only changes a count from zero
    numvfs_file.write_text(str(numvfs))
