"""A live merge's parts: the job record, the drive's chain in the live XML, libvirt calls.

Pure functions read the XML; the blocking ones (libvirt, storage) are called from
workers by `BlockJobs` (actors/vm/blockjobs.py), never on the VM actor's thread.

The job record is VDSM's (virt/livemerge.py `Job.to_dict`), kept as JSON in the
domain's `<ovirt-vm:jobs>` metadata, so that a restarted agent finds the merges it
had started: COMMIT (libvirt's block job runs) or CLEANUP (pivot and chain sync).
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import libvirt

from hostvisor.actors.errors import CallerError, InvalidArgument
from hostvisor.actors.vm.domxml import NAMESPACES, OVIRT_VM
from hostvisor.actors.vm.metadata_lock import editing

COMMIT = "COMMIT"
CLEANUP = "CLEANUP"
INIT = "INIT"
JOBS = "jobs"
REPLICA = "diskReplicate"
"""A disk device's replication in progress (VDSM's name), in its metadata."""
"""The `ovirt-vm` metadata element that holds the jobs (VDSM's name)."""
PIVOT_WAIT = 30.0
"""Seconds to wait for libvirt's XML to show the pivot (VDSM waits without bound)."""
_DRIVE_KEYS = ("poolID", "domainID", "imageID", "volumeID")


class ImageFileNotFound(CallerError):
    """No drive of the VM is that volume (VDSM's code 13)."""

    code = 13
    message = "Drive image file could not be found"


class MergeFailed(CallerError):
    """The merge could not start (VDSM's code 52)."""

    code = 52
    message = "Merge failed"


class Chains(Protocol):
    """A live merge's reach into storage (actors/storage/merging.py `VolumeChains`)."""

    def info(self, sd: str, img: str, vol: str) -> dict[str, Any]:
        """Volume.getInfo of a volume (blocks)."""
        ...

    def sync(self, sd: str, img: str, vol: str, actual: list[str]) -> None:
        """Make the chain's metadata follow `actual` (blocks)."""
        ...

    def grow_capacity(self, sd: str, img: str, base: str, top: str) -> None:
        """The base's CAP follows a larger top (blocks)."""
        ...

    def prepare(self, sd: str, img: str, vol: str) -> tuple[str, str]:
        """A volume's chain prepared: (path, qemu format) (blocks)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Disk:
    """A drive's storage ids (the Engine's `drive` of VM.merge)."""

    pool: str
    domain: str
    image: str
    volume: str

    @classmethod
    def from_wire(cls, wire: Any) -> Disk:
        """Check `{poolID, domainID, imageID, volumeID}`. Raises InvalidArgument."""
        if not isinstance(wire, Mapping):
            raise InvalidArgument(param="drive", reason="must be an object")
        values = {}
        for key in _DRIVE_KEYS:
            value = wire.get(key)
            if not isinstance(value, str) or not value:
                raise InvalidArgument(param=f"drive.{key}", reason="a UUID string is required")
            values[key] = value
        return cls(
            pool=values["poolID"],
            domain=values["domainID"],
            image=values["imageID"],
            volume=values["volumeID"],
        )

    def to_dict(self) -> dict[str, str]:
        """The wire (and VDSM's job record) form."""
        return {
            "poolID": self.pool,
            "domainID": self.domain,
            "imageID": self.image,
            "volumeID": self.volume,
        }


@dataclass(slots=True, kw_only=True)
class MergeJob:
    """One live merge (VDSM's livemerge.Job); owned by the VM actor's thread."""

    id: str
    drive: str
    disk: Disk
    base: str
    top: str
    bandwidth: int
    state: str = INIT
    pivot: bool | None = None
    live: dict[str, int] = field(default_factory=dict)
    """libvirt's last blockJobInfo (cur, end, bandwidth); not persisted."""
    cleaning: bool = False
    """A cleanup runs on a worker now (not persisted)."""
    retry_at: float = 0.0
    """Monotonic time before which a failed cleanup is not tried again (not persisted)."""
    finished: bool = False
    """Cleaned up: reported until the metadata without it is written (not persisted)."""

    @property
    def active(self) -> bool:
        """Whether the top is the drive's active layer (a commit with pivot)."""
        return self.top == self.disk.volume

    def info(self) -> dict[str, Any]:
        """The job as `vmJobs` reports it (VDSM's Job.info: cursors as strings)."""
        live = self.live
        return {
            "blockJobType": "commit",
            "drive": self.drive,
            "id": self.id,
            "imgUUID": self.disk.image,
            "jobType": "block",
            "bandwidth": live.get("bandwidth", 0),
            "cur": str(live.get("cur", 0)),
            "end": str(live.get("end", 0)),
        }

    def to_dict(self) -> dict[str, Any]:
        """The persisted record (VDSM's Job.to_dict)."""
        return {
            "id": self.id,
            "drive": self.drive,
            "disk": self.disk.to_dict(),
            "base": self.base,
            "top": self.top,
            "bandwidth": self.bandwidth,
            "state": self.state,
            "extend": None,
            "pivot": self.pivot,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> MergeJob:
        """Read a persisted record. Raises KeyError, TypeError, ValueError, InvalidArgument."""
        return cls(
            id=str(record["id"]),
            drive=str(record["drive"]),
            disk=Disk.from_wire(record["disk"]),
            base=str(record["base"]),
            top=str(record["top"]),
            bandwidth=int(record["bandwidth"]),
            state=str(record["state"]),
            pivot=record.get("pivot"),
        )

    def snapshot(self) -> MergeJob:
        """A copy for a worker to read (the actor keeps changing the original)."""
        return replace(self, live=dict(self.live))  # the rest is immutable


def jobs_of(xml: str) -> dict[str, MergeJob]:
    """The merges a domain XML's `<ovirt-vm:jobs>` records (unreadable ones skipped)."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's XML
    except ET.ParseError:
        return {}
    text = root.findtext("metadata/ovirt-vm:vm/ovirt-vm:jobs", namespaces=NAMESPACES)
    if not text or not text.strip():
        return {}
    try:
        records = json.loads(text)
        jobs = {str(key): MergeJob.from_dict(value) for key, value in records.items()}
    except (ValueError, TypeError, KeyError, AttributeError, InvalidArgument):
        return {}
    return {job_id: job for job_id, job in jobs.items() if job.state in (COMMIT, CLEANUP)}


# -- the drive's chain in the live XML ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layer:
    """One volume of a drive's chain as libvirt shows it."""

    volume: str
    path: str
    index: str | None


def live_chain(xml: str, drive: str) -> list[Layer] | None:
    """The drive's chain in a live domain XML, base first; None if no such file disk."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's XML
    except ET.ParseError:
        return None
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        if target is None or target.get("dev") != drive:
            continue
        layers: list[Layer] = []
        node: ET.Element | None = disk
        while node is not None:
            source = node.find("source")
            path = source.get("file") if source is not None else None
            if not path:
                break
            index = source.get("index") if source is not None else None
            layers.append(Layer(Path(path).name, path, index or node.get("index")))
            node = node.find("backingStore")
        layers.reverse()
        return layers
    return None


def mirror_ready(xml: str, drive: str) -> bool:
    """Whether libvirt shows the drive's active commit ready to pivot (`<mirror ready='yes'>`)."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's XML
    except ET.ParseError:
        return False
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == drive:
            return disk.find("mirror[@ready='yes']") is not None
    return False


def target_of(layer: Layer, drive: str) -> str:
    """How blockCommit names a layer: `vda[N]` when libvirt gave it an index, else its path."""
    return f"{drive}[{layer.index}]" if layer.index else layer.path


# -- blocking steps (workers only) ---------------------------------------------------------


def check_merge(domain: Any, job: MergeJob, chains: Chains) -> list[Layer]:
    """Check the volumes and the live chain before a merge starts; return the chain.

    Raises:
        MergeFailed: a volume unknown to storage, a SHARED base, base or top not in
            the drive's chain as qemu uses it.
    """
    disk = job.disk
    try:
        base = chains.info(disk.domain, disk.image, job.base)
        chains.info(disk.domain, disk.image, job.top)
    except Exception as error:  # noqa: BLE001 - VDSM: any storage failure is MergeFailed
        raise MergeFailed(job=job.id, reason=str(error)) from None
    if base.get("voltype") == "SHARED":
        raise MergeFailed(job=job.id, reason="Base volume is shared", base=job.base)
    chain = live_chain(domain.XMLDesc(0), job.drive)
    if chain is None:
        raise MergeFailed(job=job.id, reason="Cannot get drive actual volume chain")
    volumes = [layer.volume for layer in chain]
    for vol in (job.base, job.top):
        if vol not in volumes:
            raise MergeFailed(job=job.id, reason="volume not in the drive's chain", volume=vol)
    if volumes.index(job.base) >= volumes.index(job.top):
        raise MergeFailed(job=job.id, reason="the base is not below the top", chain=volumes)
    return chain


def start_commit(domain: Any, job: MergeJob, chain: list[Layer]) -> None:
    """Start libvirt's block commit (with ACTIVE for the active layer; relative names).

    Raises:
        MergeFailed: libvirt refused.
    """
    layers = {layer.volume: layer for layer in chain}
    flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_RELATIVE
    if job.active:
        flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
    base = target_of(layers[job.base], job.drive)
    top = target_of(layers[job.top], job.drive)
    try:
        domain.blockCommit(job.drive, base, top, job.bandwidth, flags)
    except libvirt.libvirtError as error:
        raise MergeFailed(job=job.id, reason=str(error)) from None


def poll(domain: Any, job: MergeJob) -> tuple[dict[str, int], bool]:
    """Libvirt's view of the job: (blockJobInfo, {} once gone; ready to pivot)."""
    info: dict[str, int] = domain.blockJobInfo(job.drive, 0) or {}
    ready = False
    if job.active and info and info.get("cur") == info.get("end"):
        ready = mirror_ready(domain.XMLDesc(0), job.drive)
    return info, ready


def cleanup(domain: Any, job: MergeJob, chains: Chains) -> str:
    """Pivot if due, then make storage's chain follow qemu's; return the new leaf.

    VDSM's CleanupThread: the base's capacity follows the top; before a pivot the
    leaf is marked ILLEGAL (a crash then leaves an ILLEGAL leaf the Engine knows to
    drop), then libvirt pivots, then the metadata is synced with the chain qemu uses.
    A failed pivot makes the leaf LEGAL again and raises MergeFailed (retried).
    """
    disk = job.disk
    chains.grow_capacity(disk.domain, disk.image, job.base, job.top)
    chain = _volumes(domain, job.drive)
    # libvirt may have lost the job meanwhile (an agent restart, QEMU's own end):
    # then there is nothing to pivot, and the chain is whatever qemu uses.
    if job.pivot and job.top in chain and domain.blockJobInfo(job.drive, 0):
        chains.sync(disk.domain, disk.image, disk.volume, [v for v in chain if v != job.top])
        try:
            domain.blockJobAbort(job.drive, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
        except libvirt.libvirtError as error:
            chains.sync(disk.domain, disk.image, disk.volume, chain)
            raise MergeFailed(job=job.id, reason=f"pivot failed: {error}") from None
        chain = _await_pivot(domain, job)
    chains.sync(disk.domain, disk.image, disk.volume, chain)
    return chain[-1]


def _volumes(domain: Any, drive: str) -> list[str]:
    chain = live_chain(domain.XMLDesc(0), drive)
    if chain is None:
        raise MergeFailed(reason="Cannot get drive actual volume chain", drive=drive)
    return [layer.volume for layer in chain]


def _await_pivot(domain: Any, job: MergeJob) -> list[str]:
    """Wait for libvirt's XML to drop the old leaf (it may lag blockJobAbort)."""
    deadline = time.monotonic() + PIVOT_WAIT
    while True:
        chain = _volumes(domain, job.drive)
        if job.top not in chain:
            return chain
        if time.monotonic() > deadline:
            raise MergeFailed(job=job.id, reason="the pivot never showed", chain=chain)
        time.sleep(0.05)


def write_metadata(
    domain: Any,
    jobs: Mapping[str, MergeJob],
    updates: Mapping[str, Mapping[str, str]],
    replicas: Mapping[str, Mapping[str, str] | None] | None = None,
) -> str:
    """`_write_metadata` under the domain's metadata lock (see `metadata_lock`)."""
    with editing(domain):
        return _write_metadata(domain, jobs, updates, replicas)


def _write_metadata(
    domain: Any,
    jobs: Mapping[str, MergeJob],
    updates: Mapping[str, Mapping[str, str]],
    replicas: Mapping[str, Mapping[str, str] | None] | None = None,
) -> str:
    """Write the jobs, drives' changed ids and replications into the domain's metadata.

    `updates` maps a drive's name to the ids it now has (`volumeID` after a pivot,
    `domainID` too after a replication); `replicas` maps a drive's name to its
    replication's destination (VDSM's `diskReplicate` of the drive's device), None
    to drop it. Blocking (libvirt): a read-modify-write of the `ovirt-vm` element
    that keeps everything else in it. Returns the live XML afterwards.

    Raises:
        libvirt.libvirtError: the domain is gone, or libvirt refused the metadata.
    """
    try:
        text: str | None = domain.metadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, OVIRT_VM, libvirt.VIR_DOMAIN_AFFECT_LIVE
        )
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        text = None
    root = ET.fromstring(text) if text else ET.Element("vm")  # noqa: S314 - libvirt's
    for element in root.iter():  # libvirt adds the namespace itself: local names only
        element.tag = element.tag.rpartition("}")[2]
    record = root.find(JOBS)
    if record is None:
        record = ET.SubElement(root, JOBS)
    record.text = json.dumps({job_id: job.to_dict() for job_id, job in jobs.items()})
    for device in root.iterfind("device"):
        name = device.get("name", "")
        if device.get("devtype") != "disk":
            continue
        for key, value in updates.get(name, {}).items():
            field_ = device.find(key)
            if field_ is not None:
                field_.text = value
        if replicas is not None and name in replicas:
            _set_replica(device, replicas[name])
    domain.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        ET.tostring(root, encoding="unicode"),
        "ovirt-vm",
        OVIRT_VM,
        libvirt.VIR_DOMAIN_AFFECT_LIVE,
    )
    live: str = domain.XMLDesc(0)
    return live


def _set_replica(device: ET.Element, replica: Mapping[str, str] | None) -> None:
    for old in device.findall(REPLICA):
        device.remove(old)
    if replica is not None:
        element = ET.SubElement(device, REPLICA)
        for key, value in replica.items():
            ET.SubElement(element, key).text = value


def replicas_of(xml: str) -> dict[str, dict[str, str]]:
    """Each drive's replication in progress, as the metadata records it (by drive name)."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's XML
    except ET.ParseError:
        return {}
    found: dict[str, dict[str, str]] = {}
    for device in root.iterfind("metadata/ovirt-vm:vm/ovirt-vm:device", NAMESPACES):
        replica = device.find(f"ovirt-vm:{REPLICA}", NAMESPACES)
        if replica is not None and device.get("devtype") == "disk":
            found[device.get("name", "")] = {
                child.tag.rpartition("}")[2]: (child.text or "").strip() for child in replica
            }
    return found
