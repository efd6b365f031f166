"""The domain XML the Engine sends, and the oVirt metadata inside it.

Since oVirt 4.2 `VM.create` carries a complete libvirt domain XML with the
Engine's data under `<metadata>` in the `ovirt-vm` namespace. Everything a
VmActor needs to rebuild itself after a restart lives there too: the launch
options, the start time (written when the VM is launched), and the custom
properties (`containerType` and friends).
"""

from __future__ import annotations

import math
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

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
    """Read a domain XML. Pure; runs in the caller's thread and does not block.

    Recovery parses every running domain's XML, so this stays on C's fast paths:
    tags are looked up by their Clark name (`{uri}local`) among direct children,
    never through namespace-prefixed ElementPath queries.

    Raises:
        InvalidArgument: not XML, not a domain, or no valid `<uuid>`.
    """
    try:
        root = ET.fromstring(xml)  # noqa: S314 - trusted peers; no entity expansion in ET
    except ET.ParseError as error:
        raise InvalidArgument(param="xml", reason=f"not well-formed XML: {error}") from None
    if root.tag != "domain":
        raise InvalidArgument(param="xml", reason=f"expected <domain>, got <{root.tag}>")
    vm_id = _text(root.find("uuid"))
    try:
        vm_id = str(uuid.UUID(vm_id))
    except ValueError:
        raise InvalidArgument(param="xml", reason="the domain has no valid <uuid>") from None
    meta = _ovirt_vm(root)
    return DomainSpec(
        vm_id=vm_id,
        name=_text(root.find("name")) or vm_id,
        xml=xml,
        launch_paused=meta is not None and _text(meta.find(_LAUNCH_PAUSED)).lower() == "true",
        start_time=None if meta is None else _float_or_none(_text(meta.find(_START_TIME))),
        memory_kib=_memory_kib(root.find("memory")),
        vcpus=_count(root.find("vcpu"), "vcpu", default=1),
        domain_type=root.get("type", "kvm"),
        custom={} if meta is None else _custom(meta.find(_CUSTOM)),
        managed=meta is not None,
    )


MAX_XML_CHARS = 4 * 1024 * 1024
"""The largest domain XML a client may send (the Engine's run to tens of KiB)."""
MAX_DEPTH = 64
"""The deepest element nesting a client's domain XML may have (libvirt's is under 10)."""
MAX_ELEMENTS = 50_000
"""The most elements a client's domain XML may have (the Engine's hold a few hundred)."""


def parse_untrusted(xml: str) -> DomainSpec:
    """Read a domain XML a client sent: `parse`, after `check_untrusted`.

    Raises:
        InvalidArgument: too large, too deep, a DTD or entity declaration, or as `parse`.
    """
    check_untrusted(xml)
    return parse(xml)


def check_untrusted(xml: str) -> None:
    """Refuse XML no domain needs and that could make its handling blow up.

    A domain XML needs no DTD and no entities (they are how entity-expansion bombs
    work), is far below MAX_XML_CHARS and MAX_ELEMENTS, and nests a few levels:
    serialising it again (`with_start_time`) recurses once per level. Read with
    expat's callbacks, no tree built: a document past a limit is refused where it
    passes it, before the rest is read (a 100,000-deep one costs about a millisecond
    and no memory; a tree of it took 0.4 s and 38 MiB). Pure; runs on the caller's
    thread (the API loop), does not block.

    Raises:
        InvalidArgument: it breaks one of these limits, or is not well-formed (a lone
            surrogate, which JSON can carry, is no XML character).
    """
    if len(xml) > MAX_XML_CHARS:
        raise InvalidArgument(
            param="xml", reason=f"larger than {MAX_XML_CHARS} characters ({len(xml)})"
        )
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        raise InvalidArgument(param="xml", reason="DTDs and entity declarations are refused")
    depth, elements = 0, 0

    def start(_name: str, _attributes: Any) -> None:
        nonlocal depth, elements
        depth += 1
        elements += 1
        if depth > MAX_DEPTH:
            raise InvalidArgument(param="xml", reason=f"nested deeper than {MAX_DEPTH}")
        if elements > MAX_ELEMENTS:
            raise InvalidArgument(param="xml", reason=f"more than {MAX_ELEMENTS} elements")

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    def refuse_declaration(*_args: Any) -> None:
        raise InvalidArgument(param="xml", reason="DTDs and entity declarations are refused")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = refuse_declaration
    parser.EntityDeclHandler = refuse_declaration
    try:
        parser.Parse(xml, True)  # noqa: FBT003 - expat takes no keywords; True: the last part
    except expat.ExpatError as error:
        raise InvalidArgument(param="xml", reason=f"not well-formed XML: {error}") from None
    except UnicodeEncodeError as error:  # a lone surrogate: no XML character, no UTF-8
        reason = f"not well-formed XML: no character at {error.start}"
        raise InvalidArgument(param="xml", reason=reason) from None


def with_start_time(xml: str, started: float) -> str:
    """Return `xml` with `ovirt-vm:startTime` set to `started` (seconds since the epoch)."""
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
    element.text = f"{started:.3f}"
    return ET.tostring(root, encoding="unicode")


_VM = f"{{{OVIRT_VM}}}vm"
_LAUNCH_PAUSED = f"{{{OVIRT_VM}}}launchPaused"
_START_TIME = f"{{{OVIRT_VM}}}startTime"
_CUSTOM = f"{{{OVIRT_VM}}}custom"
_MEMORY_UNITS = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "m": 1024,
    "mib": 1024,
    "g": 1024**2,
    "gib": 1024**2,
}


def _ovirt_vm(root: ET.Element) -> ET.Element | None:
    """The first `<metadata><ovirt-vm:vm>` of the domain, if any."""
    for child in root:
        if child.tag == "metadata":
            meta = child.find(_VM)
            if meta is not None:
                return meta
    return None


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _custom(custom: ET.Element | None) -> dict[str, str]:
    if custom is None:
        return {}
    return {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in custom}


def _memory_kib(element: ET.Element | None) -> int:
    text = _text(element)
    if element is None or not text:
        return 0
    factor = _MEMORY_UNITS.get(element.get("unit", "KiB").lower(), 1)
    return int(_count(element, "memory", default=0) * factor)


_MAX_DIGITS = 18
"""A count longer than this does not fit libvirt's 64-bit fields."""


def _count(element: ET.Element | None, what: str, *, default: int) -> int:
    """The element's text as a whole number >= 0. Raises InvalidArgument otherwise."""
    text = _text(element)
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise InvalidArgument(param="xml", reason=f"<{what}> is not a count: {text[:40]!r}")
    return int(text)


def _float_or_none(text: str) -> float | None:
    """The text as a finite number, else None ("nan" and "inf" are no start time)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def describe(spec: DomainSpec) -> dict[str, Any]:
    """Return the VM's static facts in VDSM's getInfo/getStats field names."""
    return {"vmName": spec.name, "vmType": spec.domain_type, "vcpuCount": str(spec.vcpus)}
