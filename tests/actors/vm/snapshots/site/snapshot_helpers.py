"""What the snapshot tests share: the Engine's snapshot flow and what they look at."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.engine import (
    COW,
    RAW,
    DataCenter,
    MiB,
    engine_vm_xml,
    new_id,
    succeeded,
    write_halting_boot_sector,
)
from harness.guests import StatusEvents
from harness.waiting import wait_for

OVIRT_VM = "{http://ovirt.org/vm/1.0}"


@dataclass
class SnapVm:
    """A running guest whose disk vda is the image `img`: `vols` base first, leaf last."""

    dc: DataCenter
    vm_id: str
    img: str
    vols: list[str] = field(default_factory=list)
    size: int = 16 * MiB

    def path(self, vol: str) -> Path:
        return Path(self.dc.connection["connection"]) / self.dc.sd / "images" / self.img / vol

    def prepared(self, cli: Any, vol: str) -> str:
        """The path the host runs the volume from (Image.prepare)."""
        return self.dc.prepare(cli, self.img, vol)

    def new_leaf(self, cli: Any) -> str:
        """Volume.create a COW volume over the leaf, as the Engine does before a snapshot."""
        vol = new_id()
        parent = self.vols[-1]
        succeeded(
            cli, self.dc.create_volume(cli, self.img, vol, fmt=COW, parent=parent, size=self.size)
        )
        return vol

    def drive(self, new: str, base: str | None = None) -> dict[str, str]:
        """One entry of snapDrives (SnapshotVDSCommand.createDisksMap)."""
        return {
            "domainID": self.dc.sd,
            "imageID": self.img,
            "volumeID": new,
            "baseVolumeID": base or self.vols[-1],
        }


def make_image(cli: Any, dc: DataCenter, size: int = 16 * MiB) -> tuple[str, list[str]]:
    """An image of a raw base that halts at boot and a qcow2 leaf on it."""
    img, base, leaf = new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=size))
    write_halting_boot_sector(dc.prepare(cli, img, base))
    succeeded(cli, dc.create_volume(cli, img, leaf, fmt=COW, parent=base, size=size))
    return img, [base, leaf]


def start_vm(cli: Any, dc: DataCenter, img: str, leaf: str, kind: str) -> str:
    vm_id = new_id()
    events = StatusEvents(cli)
    xml = engine_vm_xml(name=f"sn-{vm_id[:8]}", vm_id=vm_id, dc=dc, img=img, vol=leaf, kind=kind)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    events.until(vm_id, "Up")
    return vm_id


# -- what the tests look at ------------------------------------------------------------------


def virt_job(cli: Any, job_id: str) -> dict[str, Any] | None:
    """The job as the Engine polls it (VirtJobCallback): Host.getJobs(virt, [id])."""
    jobs: dict[str, Any] = cli.Host.getJobs(job_type="virt", job_ids=[job_id])
    return jobs.get(job_id)


def wait_job(cli: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the job until it has ended; return its entry."""

    def ended() -> dict[str, Any] | None:
        job = virt_job(cli, job_id)
        return job if job is not None and job["status"] not in ("pending", "running") else None

    found: dict[str, Any] = wait_for(ended, timeout, f"virt job {job_id} to end")
    return found


def snapshot(cli: Any, vm: SnapVm, new: str, **params: Any) -> dict[str, Any]:
    """VM.snapshot of vda onto `new`, as the Engine sends it; wait for the job's end."""
    job_id = new_id()
    cli.VM.snapshot(
        vmID=vm.vm_id,
        snapDrives=[vm.drive(new)],
        frozen=params.pop("frozen", False),
        jobUUID=job_id,
        freeze_timeout=params.pop("freeze_timeout", 8),
        **params,
    )
    return wait_job(cli, job_id)


def live_xml(cli: Any, vm_id: str) -> ET.Element:
    return ET.fromstring(cli.Host.dumpxmls(vmList=[vm_id])[vm_id])  # noqa: S314


def disk_source(cli: Any, vm_id: str) -> str:
    source = live_xml(cli, vm_id).find("devices/disk/source")
    assert source is not None
    return source.get("file", "")


def metadata_volume(cli: Any, vm_id: str) -> str:
    """The vda volume id the VM's metadata names (what a restart or a migration reads)."""
    root = live_xml(cli, vm_id)
    for device in root.iterfind(f"metadata/{OVIRT_VM}vm/{OVIRT_VM}device"):
        if device.get("name") == "vda":
            return (device.findtext(f"{OVIRT_VM}volumeID") or "").strip()
    return ""


class MemoryVolumes:
    """The two volumes the Engine makes for a hibernation (each its own image)."""

    def __init__(self, cli: Any, dc: Any) -> None:
        self.dc = dc
        self.dump_img, self.dump_vol = new_id(), new_id()
        self.conf_img, self.conf_vol = new_id(), new_id()
        succeeded(cli, dc.create_volume(cli, self.dump_img, self.dump_vol, fmt=RAW, size=512 * MiB))
        succeeded(cli, dc.create_volume(cli, self.conf_img, self.conf_vol, fmt=RAW, size=MiB))

    def handle(self) -> str:
        """HibernateVDSCommand's hibernationVolHandle."""
        dc = self.dc
        return f"{dc.sd},{dc.sp},{self.dump_img},{self.dump_vol},{self.conf_img},{self.conf_vol}"

    def restore_params(self) -> dict[str, Any]:
        """What CreateBrokerVDSCommand adds to vmParams to restore (4.2+)."""
        dc = self.dc
        return {
            "memoryDumpVolume": {
                "poolID": dc.sp,
                "domainID": dc.sd,
                "imageID": self.dump_img,
                "volumeID": self.dump_vol,
            },
            "memoryConfVolume": {
                "poolID": dc.sp,
                "domainID": dc.sd,
                "imageID": self.conf_img,
                "volumeID": self.conf_vol,
            },
        }
