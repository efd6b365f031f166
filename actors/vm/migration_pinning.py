"""Re-pinning a migrating guest for its destination: the Engine's `cpusets` and `numaNodesets`.

Pure functions; nothing here calls libvirt. The migration request
(`actors/vm/migration.py`) checks the two params with these, and the destination's
domain XML (libvirt's `VIR_MIGRATE_PARAM_DEST_XML`, and the `_srcDomXML` the
destination agent is given) is rewritten with `retarget`.

The Engine (ovirt-engine `bll/MigrateVmCommand.java`, sent by
`vdsbroker/MigrateBrokerVDSCommand.java` under `VdsProperties.MIGRATION_CPUSETS` and
`MIGRATION_NUMA_NODE_SETS`) sends them only for a VM whose CPU pinning policy is an
exclusive one (dedicated, isolate-threads, siblings), computed for the destination
host, both JSON arrays of strings:

- `cpusets`: one entry per vCPU, in vCPU order, each the destination's pCPU for it
  ("7"); VDSM's schema allows any cpulist ("1,3-5") and a null entry (leave that vCPU
  unpinned);
- `numaNodesets`: one entry per vNUMA cell, in cell order, each the destination's
  host NUMA nodes for its memory ("0" or "0,1"); absent when the VM has no vNUMA.

VDSM (`lib/vdsm/virt/vm.py` `_validate_migration_cpusets`/`_numa_nodesets`,
`virt/cpumanagement.py` `replace_cpu_pinning`, `virt/migration.py` `_migration_params`)
refuses a list whose length is not the VM's vCPU count or vNUMA cell count, or an
entry that is not a cpulist, with InvalidParameter (91); before migrating it drops
every `<cputune><vcpupin>` but those a "manual" policy VM was pinned to by the
Engine, sets the requested ones, and sets each `<numatune><memnode cellid=N>`'s
`nodeset` to entry N. Everything else in `<cputune>` (shares, emulatorpin,
iothreadpin) and `<numatune>` (`<memory>`) stays as it is.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import domxml

CPU_POLICY_NONE = "none"
CPU_POLICY_MANUAL = "manual"
"""The Engine pinned some vCPUs by hand: those pins travel unchanged."""

_VM = f"{{{domxml.OVIRT_VM}}}vm"
_POLICY = f"{{{domxml.OVIRT_VM}}}cpuPolicy"
_MANUALLY_PINNED = f"{{{domxml.OVIRT_VM}}}manuallyPinedCPUs"  # sic: VDSM's spelling
_CPULIST_ITEM = re.compile(r"^(?:(\d{1,5})-(\d{1,5})|\^?(\d{1,5}))$")

_MAX_DIGITS = 9
"""The longest vCPU or cell number read (libvirt's are far below a billion)."""

CpuSets = tuple[str | None, ...]
NodeSets = tuple[str, ...]


# -- the cpulist syntax ------------------------------------------------------------------


def parse_cpulist(text: str) -> frozenset[int]:
    """Read the kernel's cpulist syntax ("0-2,5", "^3" excludes), as VDSM's `cpulist_parse`.

    Stricter than VDSM's on what it would only have failed on later in libvirt: no
    blanks, no reversed range, at least one item.

    Raises:
        ValueError: not a cpulist.
    """
    cpus: set[int] = set()
    excluded: set[int] = set()
    for item in text.split(","):
        match = _CPULIST_ITEM.match(item)
        if match is None:
            raise ValueError(f"not a cpulist item: {item!r}")
        first, last, single = match.groups()
        if single is not None:
            (excluded if item.startswith("^") else cpus).add(int(single))
        elif int(first) > int(last):
            raise ValueError(f"reversed range: {item!r}")
        else:
            cpus.update(range(int(first), int(last) + 1))
    return frozenset(cpus - excluded)


# -- the params, as the Engine sends them ------------------------------------------------


def cpusets_from_wire(value: Any) -> CpuSets | None:
    """Check the shape of `cpusets`: absent, or a list of cpulist strings (or nulls).

    Raises:
        InvalidArgument: not a list, or an entry neither null nor a cpulist string
            (VDSM's "One or more invalid cpuset list descriptions").
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgument(param="cpusets", reason="must be a list of cpuset strings")
    if not all(entry is None or _is_cpulist(entry) for entry in value):
        reason = f"One or more invalid cpuset list descriptions in: {value!r}"
        raise InvalidArgument(param="cpusets", reason=reason)
    return tuple(value)


def nodesets_from_wire(value: Any) -> NodeSets | None:
    """Check the shape of `numaNodesets`: absent, or a list of nodeset strings.

    Raises:
        InvalidArgument: not a list, or an entry that is not a nodeset string
            (VDSM's "One or more invalid node set descriptions").
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgument(param="numaNodesets", reason="must be a list of nodeset strings")
    if not all(_is_cpulist(entry) for entry in value):
        reason = f"One or more invalid node set descriptions in: {value!r}"
        raise InvalidArgument(param="numaNodesets", reason=reason)
    return tuple(value)


def _is_cpulist(entry: Any) -> bool:
    if not isinstance(entry, str):
        return False
    try:
        parse_cpulist(entry)
    except ValueError:
        return False
    return True


def check_against(xml: str, cpusets: CpuSets | None, nodesets: NodeSets | None) -> None:
    """Check the lists' lengths against the VM's domain XML, as VDSM's `Vm.migrate` does.

    Pure; the caller's thread.

    Raises:
        InvalidArgument: `cpusets` not one entry per vCPU (`<vcpu current=…>`, else its
            text), or `numaNodesets` not one per vNUMA cell (`<cpu><numa><cell>`).
    """
    if cpusets is None and nodesets is None:
        return
    root = _parse(xml)
    if cpusets is not None and len(cpusets) != (vcpus := vcpu_count(root)):
        reason = f"length of cpusets ({len(cpusets)}) must match number of CPUs ({vcpus})"
        raise InvalidArgument(param="cpusets", reason=reason)
    if nodesets is not None and len(nodesets) != (cells := vnuma_count(root)):
        reason = (
            f"length of numaNodesets ({len(nodesets)}) must match number of vNUMA nodes ({cells})"
        )
        raise InvalidArgument(param="numaNodesets", reason=reason)


def vcpu_count(root: ET.Element) -> int:
    """The VM's vCPUs now: `<vcpu current=…>`, else the element's text (1 if none)."""
    vcpu = root.find("vcpu")
    if vcpu is None:
        return 1
    text = (vcpu.get("current") or vcpu.text or "1").strip()
    return int(text) if _digits(text) else 1


def vnuma_count(root: ET.Element) -> int:
    """The VM's vNUMA cells (`<cpu><numa><cell>`); 0 without vNUMA."""
    return len(root.findall("cpu/numa/cell"))


# -- the rewrite -------------------------------------------------------------------------


def retarget(xml: str, cpusets: CpuSets | None, nodesets: NodeSets | None) -> str:
    """Return `xml` pinned for the destination (VDSM's `replace_cpu_pinning` and memnodes).

    Every `<vcpupin>` goes, but a "manual" policy VM's hand-made pins; then each vCPU
    with a `cpusets` entry is pinned to it (an existing pin rewritten in place, else a
    new `<vcpupin>` appended to `<cputune>`, made if missing). Each `<numatune>
    <memnode cellid=N>` gets `nodesets[N]` when there is one. An XML with nothing to
    change comes back as it was, the same string. Pure; the caller's thread.

    Raises:
        InvalidArgument: not a domain XML.
    """
    root = _parse(xml)
    changed = _replace_cpu_pinning(root, cpusets)
    changed |= _replace_memnodes(root, nodesets)
    return ET.tostring(root, encoding="unicode") if changed else xml


def _replace_cpu_pinning(root: ET.Element, cpusets: CpuSets | None) -> bool:
    cputune = root.find("cputune")
    changed = False
    if cputune is not None:
        kept = _manually_pinned(root, cputune)
        for pin in cputune.findall("vcpupin"):
            if _vcpu_of(pin) not in kept:
                cputune.remove(pin)
                changed = True
    if not cpusets:
        return changed
    targets: list[str | None] = list(cpusets)
    if cputune is None:
        cputune = ET.SubElement(root, "cputune")
    for pin in cputune.findall("vcpupin"):
        vcpu = _vcpu_of(pin)
        if 0 <= vcpu < len(targets) and targets[vcpu] is not None:
            pin.set("cpuset", str(targets[vcpu]))
            targets[vcpu] = None
    for vcpu, cpuset in enumerate(targets):
        if cpuset is not None:
            ET.SubElement(cputune, "vcpupin", {"vcpu": str(vcpu), "cpuset": cpuset})
    return True


def _replace_memnodes(root: ET.Element, nodesets: NodeSets | None) -> bool:
    numatune = root.find("numatune")
    if nodesets is None or numatune is None:
        return False
    changed = False
    for memnode in numatune.findall("memnode"):
        cell = memnode.get("cellid", "")
        if _digits(cell) and int(cell) < len(nodesets):
            memnode.set("nodeset", nodesets[int(cell)])
            changed = True
    return changed


def _manually_pinned(root: ET.Element, cputune: ET.Element) -> frozenset[int]:
    """The vCPUs whose pins travel as they are: a "manual" policy VM's hand-made ones.

    As VDSM: the policy is `ovirt-vm:cpuPolicy`, else "manual" when the XML pins any
    vCPU; the hand-pinned vCPUs are `ovirt-vm:manuallyPinedCPUs` (a cpulist), else
    every vCPU the XML pins.
    """
    meta = _ovirt_vm(root)
    policy = _text(meta, _POLICY)
    pins = {_vcpu_of(pin) for pin in cputune.findall("vcpupin") if pin.get("cpuset")}
    if (policy or (CPU_POLICY_MANUAL if pins else CPU_POLICY_NONE)) != CPU_POLICY_MANUAL:
        return frozenset()
    listed = _text(meta, _MANUALLY_PINNED)
    if listed:
        try:
            return parse_cpulist(listed)
        except ValueError:
            pass  # unreadable metadata: keep every pin, the safe side for a manual VM
    return frozenset(pins)


def _ovirt_vm(root: ET.Element) -> ET.Element | None:
    for metadata in root.findall("metadata"):
        meta = metadata.find(_VM)
        if meta is not None:
            return meta
    return None


def _vcpu_of(pin: ET.Element) -> int:
    text = pin.get("vcpu", "")
    return int(text) if _digits(text) else -1


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS


def _text(meta: ET.Element | None, tag: str) -> str:
    element = None if meta is None else meta.find(tag)
    return "" if element is None else (element.text or "").strip()


def _parse(xml: str) -> ET.Element:
    try:
        root = ET.fromstring(xml)  # noqa: S314 - our own or libvirt's XML; no entities in ET
    except ET.ParseError as error:
        raise InvalidArgument(param="xml", reason=f"not well-formed XML: {error}") from None
    if root.tag != "domain":
        raise InvalidArgument(param="xml", reason=f"expected <domain>, got <{root.tag}>")
    return root


def pinned(xml: str) -> dict[int, str]:
    """The XML's vCPU pins, vCPU → cpuset (for callers and tests that read them back)."""
    cputune = _parse(xml).find("cputune")
    if cputune is None:
        return {}
    return {_vcpu_of(pin): pin.get("cpuset", "") for pin in cputune.findall("vcpupin")}


def memnodes(xml: str) -> dict[int, str]:
    """The XML's `<numatune><memnode>`s, cell → nodeset."""
    numatune = _parse(xml).find("numatune")
    if numatune is None:
        return {}
    return {
        int(node.get("cellid", "-1")): node.get("nodeset", "")
        for node in numatune.findall("memnode")
    }
