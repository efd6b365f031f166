"""I/O tune and the VM's QoS policy: VM.setIoTune, getIoTune, updateVmPolicy.

As VDSM (`vm.py` `setIoTune`, `io_tune_values`, `updateVmPolicy`, `vmtune.py`):
- **setIoTune** takes `[{name | path, ioTune: {total_bytes_sec, read_bytes_sec,
  write_bytes_sec, total_iops_sec, read_iops_sec, write_iops_sec}}]`, merges each
  change into the disk's current limits, checks them (whole numbers >= 0, no total
  limit together with a read or write one of the same unit) and sets them with
  `setBlockIoTune(dev, values, AFFECT_LIVE)`.
- **getIoTune** answers `[{name, path, ioTune}]` per disk, the six values read
  with `blockIoTune(dev, AFFECT_LIVE)`.
- **updateVmPolicy** (`UpdateVmPolicyVDSCommand`: `{vmId, vcpuLimit: "<percent>",
  ioTune: [{domainID, poolID, imageID, volumeID, maximum, guaranteed}]}`) keeps
  the policy in the domain's `<ovirt-tune:qos>` metadata (`<vcpuLimit>`,
  `<ioTune><device name path><maximum>…</maximum><guaranteed>…</guaranteed>`),
  where VDSM keeps it. VDSM leaves applying it to MOM; Hostvisor has no MOM, so it
  applies it at once, as MOM's policy would: the vCPU quota becomes
  `period * host CPUs * limit% / vCPUs` (MOM's cputune rule; period 100 ms), and
  each disk's `maximum` limits are set as its I/O tune.

The functions that take a `domain` block on libvirt and run on a worker; the rest
are pure.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import libvirt

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.device_errors import CpuTuneError, UpdateIoTuneError, UpdateVmPolicyFailed
from hostvisor.actors.vm.errors import MissingParameter

IOTUNE_KEYS = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
)
STORAGE_IDS = ("domainID", "poolID", "imageID", "volumeID")
CPU_PERIOD_US = 100_000
"""The vCPU scheduling period MOM uses (libvirt's default too)."""
MIN_QUOTA_US = 1000
"""The smallest vCPU quota libvirt takes."""
_QOS = f"{{{domxml.OVIRT_TUNE}}}qos"
_META_VM = f"{{{domxml.OVIRT_VM}}}vm"
_META_DEVICE = f"{{{domxml.OVIRT_VM}}}device"


@dataclass(frozen=True, slots=True)
class Disk:
    """A disk of the live XML: target name, source path, current limits, storage ids."""

    name: str
    path: str
    iotune: dict[str, int] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)


def disks(xml: str) -> list[Disk]:
    """The domain's disks (not CD-ROMs or floppies), in XML order. Pure."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    ids = _storage_ids(root)
    found = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        target, source = disk.find("target"), disk.find("source")
        name = target.get("dev", "") if target is not None else ""
        if not name:
            continue
        path = ""
        if source is not None:
            path = source.get("file") or source.get("dev") or source.get("name") or ""
        tune = disk.find("iotune")
        limits = {}
        if tune is not None:
            for key in IOTUNE_KEYS:
                text = tune.findtext(key)
                if text is not None and text.strip().isdigit():
                    limits[key] = int(text)
        found.append(Disk(name=name, path=path, iotune=limits, ids=ids.get(name, {})))
    return found


def _storage_ids(root: ET.Element) -> dict[str, dict[str, str]]:
    """Each disk's storage ids from the `ovirt-vm` metadata, by target name."""
    ids: dict[str, dict[str, str]] = {}
    meta = root.find(f"metadata/{_META_VM}")
    if meta is None:
        return ids
    for device in meta.iterfind(_META_DEVICE):
        if device.get("devtype") == "disk" and device.get("name"):
            ids[device.get("name", "")] = {
                key: (device.findtext(f"{{{domxml.OVIRT_VM}}}{key}") or "").strip()
                for key in STORAGE_IDS
            }
    return ids


def check_io_tune(values: Mapping[str, Any], where: str = "ioTune") -> dict[str, int]:
    """The six limits, checked as VDSM's `validate_io_tune_params`. Pure.

    Raises:
        UpdateIoTuneError: an unknown key, a value that is not a whole number >= 0,
            or a total limit together with a read or write limit of the same unit.
    """
    if not isinstance(values, Mapping):
        raise UpdateIoTuneError(param=where, reason="not an object")
    checked = {}
    for key, value in values.items():
        if key not in IOTUNE_KEYS:
            raise UpdateIoTuneError(param=where, key=key, reason="unknown limit")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UpdateIoTuneError(param=where, key=key, reason="not a whole number >= 0")
        checked[key] = value
    for unit in ("bytes", "iops"):
        total = checked.get(f"total_{unit}_sec", 0)
        if total and (checked.get(f"read_{unit}_sec", 0) or checked.get(f"write_{unit}_sec", 0)):
            raise UpdateIoTuneError(
                param=where, reason=f"a total {unit} limit excludes read and write ones"
            )
    return checked


def tune_changes(tunables: Any) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    """Read setIoTune's `tunables` into (name, path, ioTune) triples. Pure.

    Raises:
        InvalidArgument: not a list of objects, or an entry names no disk.
        MissingParameter: an entry without `ioTune`.
    """
    if not isinstance(tunables, list):
        raise InvalidArgument(param="tunables", reason="not a list")
    changes = []
    for index, change in enumerate(tunables):
        if not isinstance(change, dict):
            raise InvalidArgument(param=f"tunables[{index}]", reason="not an object")
        name, path = change.get("name"), change.get("path")
        if not isinstance(name, str | None) or not isinstance(path, str | None):
            raise InvalidArgument(param=f"tunables[{index}]", reason="name/path not strings")
        if not name and not path:
            raise InvalidArgument(param=f"tunables[{index}]", reason="names no disk")
        if "ioTune" not in change:
            raise MissingParameter(param=f"tunables[{index}].ioTune")
        if not isinstance(change["ioTune"], dict):
            raise InvalidArgument(param=f"tunables[{index}].ioTune", reason="not an object")
        changes.append((name, path, change["ioTune"]))
    return changes


def find_disk(found: list[Disk], name: str | None, path: str | None) -> Disk:
    """The disk named `name` or at `path` (VDSM `find_device_by_name_or_path`). Pure."""
    for disk in found:
        if (name is not None and disk.name == name) or (path is not None and disk.path == path):
            return disk
    raise UpdateIoTuneError(reason=f"Device {name or path} not found")


def set_io_tune(domain: Any, changes: list[tuple[str | None, str | None, dict[str, Any]]]) -> None:
    """Merge and set each change's limits on the running domain (blocks on libvirt).

    Raises:
        UpdateIoTuneError: no such disk, bad values, or libvirt refused them.
        libvirt.libvirtError: the domain is gone (VIR_ERR_NO_DOMAIN).
    """
    found = disks(domain.XMLDesc(0))
    planned = []
    for name, path, values in changes:  # check every change before setting any
        disk = find_disk(found, name, path)
        merged = {**disk.iotune, **values}
        planned.append((disk, check_io_tune(merged)))
    for disk, values in planned:
        _set_block_io_tune(domain, disk.name, values)


def _set_block_io_tune(domain: Any, name: str, values: Mapping[str, int]) -> None:
    try:
        domain.setBlockIoTune(name, dict(values), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise
        raise UpdateIoTuneError(disk=name, reason=str(error)) from None


def io_tune_values(domain: Any) -> list[dict[str, Any]]:
    """VM.getIoTune's list: each disk's name, path and live limits (blocks on libvirt).

    Raises:
        UpdateIoTuneError: libvirt could not read a disk's limits.
        libvirt.libvirtError: the domain is gone (VIR_ERR_NO_DOMAIN).
    """
    answer = []
    for disk in disks(domain.XMLDesc(0)):
        try:
            read = domain.blockIoTune(disk.name, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise
            raise UpdateIoTuneError(disk=disk.name, reason=str(error)) from None
        answer.append(
            {
                "name": disk.name,
                "path": disk.path,
                "ioTune": {key: int(read.get(key, 0)) for key in IOTUNE_KEYS},
            }
        )
    return answer


# -- updateVmPolicy -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A checked updateVmPolicy request."""

    vcpu_limit: int | None = None
    io_tune: tuple[dict[str, Any], ...] = ()
    unknown: tuple[str, ...] = ()


def policy_change(params: Mapping[str, Any]) -> PolicyChange:
    """Read updateVmPolicy's params (without `vmId`). Pure.

    Raises:
        MissingParameter: an empty policy (VDSM: MissParam), or an ioTune entry
            naming its disk by none of name, path or the four storage ids.
        InvalidArgument: a value of the wrong type.
    """
    rest = {key: value for key, value in params.items() if key != "vmId"}
    if not rest:
        raise MissingParameter(reason="updateVmPolicy got an empty policy")
    limit = None
    if "vcpuLimit" in rest:
        raw = rest["vcpuLimit"]
        try:
            limit = int(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            limit = None
        if limit is None or limit < 0:
            raise InvalidArgument(param="params.vcpuLimit", reason="not a whole percentage")
    tunes: list[dict[str, Any]] = []
    raw_tunes = rest.get("ioTune", [])
    if not isinstance(raw_tunes, list) or not all(isinstance(t, dict) for t in raw_tunes):
        raise InvalidArgument(param="params.ioTune", reason="not a list of objects")
    for index, tune in enumerate(raw_tunes):
        named = tune.get("name") or tune.get("path")
        if not named and not all(tune.get(key) for key in STORAGE_IDS):
            raise MissingParameter(param=f"params.ioTune[{index}]", reason="names no disk")
        for part in ("maximum", "guaranteed"):
            if part in tune:
                check_io_tune(tune[part], f"params.ioTune[{index}].{part}")
        tunes.append(dict(tune))
    unknown = tuple(sorted(set(rest) - {"vcpuLimit", "ioTune"}))
    return PolicyChange(vcpu_limit=limit, io_tune=tuple(tunes), unknown=unknown)


def vcpu_quota(limit: int, *, host_cpus: int, vcpus: int) -> int:
    """MOM's vCPU quota (µs per period) for a limit in percent of the host; -1: none."""
    if limit <= 0 or limit >= 100:  # noqa: PLR2004 - a percentage
        return -1
    quota = CPU_PERIOD_US * host_cpus * limit // (100 * max(1, vcpus))
    return max(MIN_QUOTA_US, quota)


def apply_policy(domain: Any, change: PolicyChange) -> tuple[str, dict[str, int] | None]:
    """Store `change` in the `ovirt-tune:qos` metadata and apply it (blocks on libvirt).

    Returns:
        The live XML afterwards, and the vCPU tune libvirt reports once the limit is
        set (None when the policy has no limit).

    Raises:
        UpdateVmPolicyFailed: a disk the ioTune names is not the VM's, or libvirt
            refused the metadata or the limits.
        libvirt.libvirtError: the domain is gone (VIR_ERR_NO_DOMAIN).
    """
    live = domain.XMLDesc(0)
    found = disks(live)
    resolved = []
    for tune in change.io_tune:
        disk = _policy_disk(found, tune)
        resolved.append({**tune, "name": disk.name, "path": disk.path})
    qos = _qos(live)
    if change.vcpu_limit is not None:
        for old in qos.findall("vcpuLimit"):
            qos.remove(old)
        ET.SubElement(qos, "vcpuLimit").text = str(change.vcpu_limit)
    if resolved:
        _merge_io_tune(qos, resolved)
    try:
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            ET.tostring(qos, encoding="unicode"),
            "ovirt-tune",
            domxml.OVIRT_TUNE,
            libvirt.VIR_DOMAIN_AFFECT_LIVE,
        )
        if change.vcpu_limit is not None:
            vcpus = _online_vcpus(live)
            quota = vcpu_quota(change.vcpu_limit, host_cpus=os.cpu_count() or 1, vcpus=vcpus)
            domain.setSchedulerParametersFlags(
                {"vcpu_period": CPU_PERIOD_US, "vcpu_quota": quota},
                libvirt.VIR_DOMAIN_AFFECT_LIVE,
            )
        for tune in resolved:
            if tune.get("maximum"):
                domain.setBlockIoTune(
                    tune["name"], dict(tune["maximum"]), libvirt.VIR_DOMAIN_AFFECT_LIVE
                )
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise
        raise UpdateVmPolicyFailed(reason=str(error)) from None
    after: str = domain.XMLDesc(0)
    return after, (cpu_tune(domain) if change.vcpu_limit is not None else None)


def set_cpu_tune(domain: Any, name: str, value: int) -> dict[str, int]:
    """Set `vcpu_quota` or `vcpu_period` live; the vCPU tune after (blocks on libvirt).

    Raises:
        CpuTuneError: libvirt refused the value.
        libvirt.libvirtError: the domain is gone (VIR_ERR_NO_DOMAIN).
    """
    try:
        domain.setSchedulerParametersFlags({name: value}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise
        raise CpuTuneError(param=name, value=value, reason=str(error)) from None
    return cpu_tune(domain)


def cpu_tune(domain: Any) -> dict[str, int]:
    """The vCPU quota and period libvirt reports (it may adjust what was set)."""
    read = domain.schedulerParameters()
    return {key: int(read[key]) for key in ("vcpu_quota", "vcpu_period") if key in read}


def cpu_tune_fields(tune: Mapping[str, int] | None) -> dict[str, Any]:
    """VM stats' `vcpuQuota` (a string) and `vcpuPeriod`, as VDSM reports them. Pure."""
    if not tune:
        return {}
    fields: dict[str, Any] = {}
    if tune.get("vcpu_quota", 0) != 0:
        fields["vcpuQuota"] = str(tune["vcpu_quota"])
    if tune.get("vcpu_period", 0) != 0:
        fields["vcpuPeriod"] = tune["vcpu_period"]
    return fields


def io_tune_policy(live: str) -> list[dict[str, Any]]:
    """VM.getIoTunePolicy: the stored `<ioTune>` policy, VDSM's dictionaries. Pure."""
    root = ET.fromstring(live)  # noqa: S314 - libvirt's own XML
    found = root.find(f"metadata/{_QOS}")
    if found is None:
        return []
    return _io_tune_entries(_local(found).find("ioTune"))


def _online_vcpus(live: str) -> int:
    """The guest's online vCPUs: `<vcpu current=…>`, else the `<vcpu>` count."""
    vcpu = ET.fromstring(live).find("vcpu")  # noqa: S314 - libvirt's own XML
    if vcpu is None:
        return 1
    text = vcpu.get("current") or vcpu.text or "1"
    return int(text) if text.strip().isdigit() else 1


def _policy_disk(found: list[Disk], tune: Mapping[str, Any]) -> Disk:
    for disk in found:
        if tune.get("name") and disk.name == tune["name"]:
            return disk
        if tune.get("path") and disk.path == tune["path"]:
            return disk
        if disk.ids and all(disk.ids.get(key) == tune.get(key) for key in STORAGE_IDS):
            return disk
    ids = {key: tune.get(key) for key in ("name", "path", *STORAGE_IDS) if tune.get(key)}
    raise UpdateVmPolicyFailed(reason=f"no such disk: {ids}")


def _qos(live: str) -> ET.Element:
    """The current `<qos>` policy (namespace-free, as setMetadata takes it)."""
    root = ET.fromstring(live)  # noqa: S314 - libvirt's own XML
    found = root.find(f"metadata/{_QOS}")
    qos = ET.Element("qos")
    if found is not None:
        for child in found:
            qos.append(_local(child))
    return qos


def _local(element: ET.Element) -> ET.Element:
    """A copy of `element` with its tags stripped of their namespace."""
    copy = ET.Element(element.tag.rpartition("}")[2], element.attrib)
    copy.text = element.text
    for child in element:
        copy.append(_local(child))
    return copy


def _merge_io_tune(qos: ET.Element, changes: list[dict[str, Any]]) -> None:
    """VDSM's `io_tune_update_list` over the `<ioTune>` of `qos`."""
    element = qos.find("ioTune")
    current = _io_tune_entries(element)
    if element is not None:
        qos.remove(element)
    for change in changes:
        old = next((t for t in current if t.get("name") == change["name"]), None)
        if old is None:
            old = {"name": change["name"]}
            current.append(old)
        old["path"] = change["path"]
        for part in ("maximum", "guaranteed"):
            old.setdefault(part, {}).update(change.get(part, {}))
    element = ET.SubElement(qos, "ioTune")
    for tune in current:
        device = ET.SubElement(element, "device", {k: tune[k] for k in ("name", "path")})
        for part in ("maximum", "guaranteed"):
            limits = ET.SubElement(device, part)
            for key in IOTUNE_KEYS:
                if key in tune.get(part, {}):
                    ET.SubElement(limits, key).text = str(tune[part][key])


def _io_tune_entries(element: ET.Element | None) -> list[dict[str, Any]]:
    """The `<device>` entries of a stored `<ioTune>`, as VDSM's dictionaries."""
    entries: list[dict[str, Any]] = []
    for device in element.iterfind("device") if element is not None else ():
        entry: dict[str, Any] = {k: device.get(k, "") for k in ("name", "path")}
        for part in ("maximum", "guaranteed"):
            limits = device.find(part)
            if limits is not None:
                entry[part] = {c.tag: int(c.text or 0) for c in limits}
        entries.append(entry)
    return entries


def policy_fields(live: str) -> dict[str, Any]:
    """What VM stats report of the stored policy: `vcpuUserLimit` (int, VDSM's schema). Pure."""
    try:
        root = ET.fromstring(live)  # noqa: S314 - libvirt's own XML
    except ET.ParseError:
        return {}
    limit = (root.findtext(f"metadata/{_QOS}/{{{domxml.OVIRT_TUNE}}}vcpuLimit") or "").strip()
    return {"vcpuUserLimit": int(limit)} if limit.isdigit() else {}
