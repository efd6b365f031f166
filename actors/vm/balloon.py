"""The balloon facts a VM keeps in its domain metadata, as VDSM keeps them.

VDSM writes the balloon target it last set into the running domain's `ovirt-vm`
metadata (`<ovirt-vm:balloonTarget type="int">KiB</…>`, `Vm._update_metadata`) and
reads it back when it recovers the VM, so a restarted agent reports the target that
was set, not the balloon's size of the moment. The guaranteed memory the Engine
sends (`<ovirt-vm:minGuaranteedMemoryMb>`) is the balloon's floor: VDSM reports it,
in KiB, as `balloonInfo.balloon_min`.

`target_of` and `guaranteed_kib` are pure; `persist_target` blocks on libvirt and runs
on a worker.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from hostvisor.actors.vm.domxml import OVIRT_VM
from hostvisor.actors.vm.metadata_lock import editing

__all__ = ["guaranteed_kib", "persist_target", "target_of", "with_target"]

TARGET = "balloonTarget"
GUARANTEED = "minGuaranteedMemoryMb"


def _ovirt_value(xml: str, name: str) -> int | None:
    """The whole number in `<metadata><ovirt-vm:vm><ovirt-vm:NAME>` of a domain XML."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's or the Engine's domain XML
    except ET.ParseError:
        return None
    text = root.findtext(f"metadata/{{{OVIRT_VM}}}vm/{{{OVIRT_VM}}}{name}")
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def target_of(xml: str) -> int | None:
    """The balloon target (KiB) a domain XML's metadata keeps; None if none was set. Pure."""
    target = _ovirt_value(xml, TARGET)
    return target if target is not None and target >= 0 else None


def guaranteed_kib(xml: str) -> int:
    """The VM's guaranteed memory (`minGuaranteedMemoryMb`) in KiB; 0 if absent. Pure."""
    mib = _ovirt_value(xml, GUARANTEED)
    return max(0, mib or 0) * 1024


def with_target(metadata: str | None, target_kib: int) -> str:
    """The `ovirt-vm` metadata element (as `domain.metadata` gives it) with the target set.

    libvirt hands the element over, and takes it back, in local names (`<vm>…`): it
    adds the namespace itself. None (no metadata yet) makes a new element. Pure.

    Raises:
        ET.ParseError: `metadata` is not XML.
    """
    root = ET.fromstring(metadata) if metadata else ET.Element("vm")  # noqa: S314 - libvirt's
    element = root.find(TARGET)
    if element is None:
        element = ET.SubElement(root, TARGET, {"type": "int"})
    element.text = str(target_kib)
    return ET.tostring(root, encoding="unicode")


def persist_target(domain: Any, target_kib: int) -> str:
    """Write the balloon target into the running domain's metadata; return its live XML.

    Blocking (libvirt). The read-modify-write (under the domain's metadata lock) keeps
    whatever else the metadata holds.

    Raises:
        libvirt.libvirtError: the domain is gone, or libvirt refused the metadata.
    """
    with editing(domain):
        try:
            metadata: str | None = domain.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, OVIRT_VM, libvirt.VIR_DOMAIN_AFFECT_LIVE
            )
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                raise
            metadata = None
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            with_target(metadata, target_kib),
            "ovirt-vm",
            OVIRT_VM,
            libvirt.VIR_DOMAIN_AFFECT_LIVE,
        )
    live: str = domain.XMLDesc(0)
    return live
