"""Helpers of the block-job tests (importable: conftest.py puts this directory on sys.path)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
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


@dataclass
class ChainVm:
    """A running guest whose disk vda is the image `img`: `vols` base first."""

    dc: DataCenter
    vm_id: str
    img: str
    vols: list[str]

    def drive(self, leaf: str | None = None) -> dict[str, str]:
        return {
            "poolID": self.dc.sp,
            "domainID": self.dc.sd,
            "imageID": self.img,
            "volumeID": leaf or self.vols[-1],
        }

    def path(self, vol: str) -> Path:
        return Path(self.dc.connection["connection"]) / self.dc.sd / "images" / self.img / vol


def make_chain(
    cli: Any, dc: DataCenter, layers: int, size: int = 16 * MiB
) -> tuple[str, list[str]]:
    """An image: a raw base that halts at boot, then `layers - 1` qcow2 layers."""
    img, vols = new_id(), [new_id() for _ in range(layers)]
    succeeded(cli, dc.create_volume(cli, img, vols[0], fmt=RAW, size=size))
    write_halting_boot_sector(dc.prepare(cli, img, vols[0]))
    for parent, vol in itertools.pairwise(vols):
        succeeded(cli, dc.create_volume(cli, img, vol, fmt=COW, size=size, parent=parent))
    return img, vols


def start_vm(cli: Any, dc: DataCenter, img: str, leaf: str, kind: str) -> str:
    vm_id = new_id()
    events = StatusEvents(cli)
    xml = engine_vm_xml(name=f"bj-{vm_id[:8]}", vm_id=vm_id, dc=dc, img=img, vol=leaf, kind=kind)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    events.until(vm_id, "Up")
    return vm_id


def vm_jobs(cli: Any, vm_id: str) -> dict[str, Any]:
    stats = cli.VM.getStats(vmID=vm_id)[0]
    jobs: dict[str, Any] = stats.get("vmJobs", {})
    return jobs


def wait_job_gone(cli: Any, vm_id: str, job_id: str, timeout: float = 60) -> None:
    wait_for(lambda: job_id not in vm_jobs(cli, vm_id), timeout, f"merge job {job_id} to end")
