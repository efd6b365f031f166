"""The domain XML the Engine sends, and the oVirt metadata inside it.

Since oVirt 4.2 `VM.create` carries a complete libvirt domain XML with the
Engine's data under `<metadata>` in the `ovirt-vm` namespace. Everything a
VmActor needs to rebuild itself after a restart lives there too: the launch
options, the start time (written when the VM is launched), and the custom
properties (`containerType` and friends).
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.errors import InvalidArgument

OVIRT_VM = "http://ovirt.org/vm/1.0"
OVIRT_TUNE = "http://ovirt.org/vm/tune/1.0"
NAMESPACES = {"ovirt-vm": OVIRT_VM, "ovirt-tune": OVIRT_TUNE}

for _prefix, _uri in NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainSpec:
    """What Hostvisor reads from a domain XML."""

    vm_id: str
    name: str
    xml: str
    launch_paused: bool = False
    start_time: float | None = None
    """Wall-clock start (epoch seconds), from `ovirt-vm:startTime`."""
    memory_kib: int = 0
    vcpus: int = 1
    domain_type: str = "kvm"
    custom: dict[str, str] = field(default_factory=dict)
    managed: bool = False
    """Whether the XML carries `ovirt-vm` metadata (a VM of the Engine's or ours)."""

    @property
    def container_type(self) -> str | None:
        """The `containerType` custom property, if any (a container VM)."""
        return self.custom.get("containerType")


def parse(xml: str) -> DomainSpec:
    """Read a domain XML.

    Raises:
        InvalidArgument: not XML, not a domain, or no valid `<uuid>`.
    """
    try:
        root = ET.fromstring(xml)  # noqa: S314 - trusted peers; no entity expansion in ET
    except ET.ParseError as error:
        raise InvalidArgument(param="xml", reason=f"not well-formed XML: {error}") from None
    if root.tag != "domain":
        raise InvalidArgument(param="xml", reason=f"expected <domain>, got <{root.tag}>")
    vm_id = _text(root, "uuid")
    try:
        vm_id = str(uuid.UUID(vm_id))
    except ValueError:
        raise InvalidArgument(param="xml", reason="the domain has no valid <uuid>") from None
    meta = root.find("metadata/ovirt-vm:vm", NAMESPACES)
    return DomainSpec(
        vm_id=vm_id,
        name=_text(root, "name") or vm_id,
        xml=xml,
        launch_paused=_meta_text(meta, "launchPaused").lower() == "true",
        start_time=_float_or_none(_meta_text(meta, "startTime")),
        memory_kib=_memory_kib(root),
        vcpus=int(_text(root, "vcpu") or 1),
        domain_type=root.get("type", "kvm"),
        custom=_custom(meta),
        managed=meta is not None,
    )


def with_start_time(xml: str, started: float | None = None) -> str:
    """Return `xml` with `ovirt-vm:startTime` set (now, by default)."""
    root = ET.fromstring(xml)  # noqa: S314
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    meta = metadata.find("ovirt-vm:vm", NAMESPACES)
    if meta is None:
        meta = ET.SubElement(metadata, f"{{{OVIRT_VM}}}vm")
    element = meta.find("ovirt-vm:startTime", NAMESPACES)
    if element is None:
        element = ET.SubElement(meta, f"{{{OVIRT_VM}}}startTime")
    element.text = f"{time.time() if started is None else started:.3f}"
    return ET.tostring(root, encoding="unicode")


def _text(root: ET.Element, path: str) -> str:
    element = root.find(path)
    return (element.text or "").strip() if element is not None else ""


def _meta_text(meta: ET.Element | None, name: str) -> str:
    if meta is None:
        return ""
    element = meta.find(f"ovirt-vm:{name}", NAMESPACES)
    return (element.text or "").strip() if element is not None else ""


def _custom(meta: ET.Element | None) -> dict[str, str]:
    if meta is None:
        return {}
    custom = meta.find("ovirt-vm:custom", NAMESPACES)
    if custom is None:
        return {}
    return {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in custom}


def _memory_kib(root: ET.Element) -> int:
    element = root.find("memory")
    if element is None or not (element.text or "").strip():
        return 0
    units = {
        "b": 1 / 1024,
        "bytes": 1 / 1024,
        "k": 1,
        "kib": 1,
        "m": 1024,
        "mib": 1024,
        "g": 1024**2,
        "gib": 1024**2,
    }
    factor = units.get(element.get("unit", "KiB").lower(), 1)
    return int(int((element.text or "0").strip()) * factor)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def describe(spec: DomainSpec) -> dict[str, Any]:
    """Return the VM's static facts in VDSM's getInfo/getStats field names."""
    return {"vmName": spec.name, "vmType": spec.domain_type, "vcpuCount": str(spec.vcpus)}
