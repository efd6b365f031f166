"""Live snapshots through Hostvisor against the same libvirt calls made directly, same run.

    .venv/bin/python tests/benchmarks/bench_snapshots.py [--rounds N] [--size MiB]
                                                         [--data MiB] [--no-kvm]

One in-process host (`qemu:///embed`, KVM unless --no-kvm) with a LOCALFS data center
made the Engine's way, and two guests, each on a --size MiB disk (a raw base that
halts at boot under a qcow2 layer holding --data MiB, written with qemu-io before the
guest starts):

- snapshot, by Hostvisor: the Engine's flow over the wire — `Volume.create` of a COW
  volume over the guest's leaf (not timed: the Engine does it before), then
  `VM.snapshot` timed from the call until the job's `|jobs|status|<id>` event says
  done (the volume prepared, the job's record kept, libvirt's switch, the metadata
  written);
- snapshot, by libvirt: the other guest, on plain files, an overlay made with
  qemu-img (not timed), then the calls Hostvisor makes, timed: `XMLDesc`,
  `setMetadata` (the job's record), `snapshotCreateXML(DISK_ONLY | REUSE_EXT |
  NO_METADATA)`, `XMLDesc`, `setMetadata` (the volume ids), `XMLDesc`.

Each round snapshots both guests once more (their chains grow), in alternating order.
Medians of --rounds rounds; the target is Hostvisor <= 1.2x libvirt. Not a test: it
never gates CI.

Live merge: H2's half is `tests/benchmarks/bench_merge.py` (the same layout of guest
and data center); `merge_half` below is where it joins this one if the two are run as
one benchmark.
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # the tests' harness

from bench_merge import engine_host, fill, merge_half, verdict, wait  # noqa: E402

from harness.engine import (  # noqa: E402
    COW,
    RAW,
    MiB,
    engine_vm_xml,
    new_id,
    succeeded,
    write_halting_boot_sector,
)
from hostvisor.actors.hypervisor.connection import (  # noqa: E402
    detect_accelerator,
)
from hostvisor.actors.vm import snapshot_plan, snapshot_work  # noqa: E402

TARGET = 1.2
TIMEOUT = 120.0
EVENTS = "jms.queue.events"


class HostvisorGuest:
    """A guest on the data center's volumes; snapshots the Engine's way."""

    def __init__(self, cli: Any, dc: Any, size: int, data: int, kind: str) -> None:
        self.cli, self.dc, self.size = cli, dc, size
        self.img, base, top, self.vm_id = new_id(), new_id(), new_id(), new_id()
        succeeded(cli, dc.create_volume(cli, self.img, base, fmt=RAW, size=size * MiB))
        write_halting_boot_sector(dc.prepare(cli, self.img, base))
        succeeded(cli, dc.create_volume(cli, self.img, top, fmt=COW, size=size * MiB, parent=base))
        fill(Path(dc.prepare(cli, self.img, top)), data)
        self.leaf = top
        xml = engine_vm_xml(
            name=f"hv-{self.vm_id[:8]}", vm_id=self.vm_id, dc=dc, img=self.img, vol=top, kind=kind
        )
        cli.VM.create(vmID=self.vm_id, vmParams={"xml": xml})
        wait(lambda: cli.VM.getStats(vmID=self.vm_id)[0]["status"] == "Up", "the guest Up")
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        cli.subscribe(EVENTS, self.events)
        cli.Host.ping()

    def snapshot(self) -> float:
        cli, dc = self.cli, self.dc
        new, job = new_id(), new_id()
        succeeded(
            cli,
            dc.create_volume(cli, self.img, new, fmt=COW, size=self.size * MiB, parent=self.leaf),
        )
        drive = {
            "domainID": dc.sd,
            "imageID": self.img,
            "volumeID": new,
            "baseVolumeID": self.leaf,
        }
        started = time.monotonic()
        cli.VM.snapshot(vmID=self.vm_id, snapDrives=[drive], frozen=True, jobUUID=job)
        while True:
            method, params = self.events.get(timeout=TIMEOUT)
            if method == f"|jobs|status|{job}":
                break
        elapsed = time.monotonic() - started
        if params.get("status") != "done":
            raise RuntimeError(f"the snapshot failed: {params}")
        self.leaf = new
        return elapsed


class LibvirtGuest:
    """A guest on plain files; snapshots with the libvirt calls Hostvisor makes."""

    def __init__(
        self, conn: Any, directory: Path, size: int, data: int, kind: str, dc: Any
    ) -> None:
        self.folder = directory / f"plain-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir()
        base, top = self.folder / "base", self.folder / "top"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), f"{size}M"], check=True)
        write_halting_boot_sector(str(base))
        self._overlay(top, "base", "raw", size)
        fill(top, data)
        self.size, self.leaf = size, top
        self.vm_id = new_id()
        xml = engine_vm_xml(
            name=f"lv-{self.vm_id[:8]}", vm_id=self.vm_id, dc=dc, img="x", vol="y", kind=kind
        )
        xml = xml.replace(f"/rhev/data-center/{dc.sp}/{dc.sd}/images/x/y", str(top))
        self.domain = conn.createXML(xml, 0)

    def _overlay(self, path: Path, backing: str, fmt: str, size: int) -> None:
        subprocess.run(
            [
                *("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1"),
                *("-b", backing, "-F", fmt, str(path), f"{size}M"),
            ],
            check=True,
            cwd=self.folder,
        )

    def snapshot(self) -> float:
        new = self.folder / f"layer-{uuid.uuid4().hex[:8]}"
        self._overlay(new, self.leaf.name, "qcow2", self.size)
        drive = snapshot_plan.SnapDrive(
            name="vda",
            pool_id="",
            domain_id="",
            image_id="",
            base_volume_id=self.leaf.name,
            volume_id=new.name,
            path=str(new),
        )
        record = {"jobUUID": new_id(), "newDrives": [drive.record()]}
        domain = self.domain
        started = time.monotonic()
        live = domain.XMLDesc(0)
        _set_metadata(domain, snapshot_plan.metadata_with(live, job=record))
        domain.snapshotCreateXML(snapshot_plan.snapshot_xml([drive]), snapshot_work.SNAPSHOT_FLAGS)
        live = domain.XMLDesc(0)
        _set_metadata(domain, snapshot_plan.metadata_with(live, volumes={"vda": new.name}))
        domain.XMLDesc(0)
        elapsed = time.monotonic() - started
        self.leaf = new
        return elapsed

    def destroy(self) -> None:
        self.domain.destroy()


def _set_metadata(domain: Any, metadata: str | None) -> None:
    if metadata is not None:
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            metadata,
            "ovirt-vm",
            "http://ovirt.org/vm/1.0",
            libvirt.VIR_DOMAIN_AFFECT_LIVE,
        )


def snapshot_half(args: argparse.Namespace, cli: Any, conn: Any, dc: Any, directory: Path) -> None:
    """Snapshots of a --size MiB disk: Hostvisor vs the same libvirt calls, printed."""
    kind = "qemu" if args.no_kvm else detect_accelerator().domain_type
    ours = HostvisorGuest(cli, dc, args.size, args.data, kind)
    theirs = LibvirtGuest(conn, directory, args.size, args.data, kind, dc)
    hostvisor: list[float] = []
    direct: list[float] = []
    try:
        for index in range(args.rounds):
            order = (ours, theirs) if index % 2 == 0 else (theirs, ours)
            for guest in order:
                (hostvisor if guest is ours else direct).append(guest.snapshot())
            print(
                f"round {index + 1}: hostvisor {hostvisor[-1] * 1000:.1f} ms, "
                f"libvirt {direct[-1] * 1000:.1f} ms",
                flush=True,
            )
    finally:
        theirs.destroy()
        cli.VM.destroy(vmID=ours.vm_id)
    what = f"live snapshot of a {args.size} MiB disk ({args.data} MiB in its layer"
    verdict(what, kind, hostvisor, direct, seconds=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=1024, help="disk size, MiB")
    parser.add_argument("--data", type=int, default=64, help="MiB in the guest's layer")
    parser.add_argument("--no-kvm", action="store_true")
    args = parser.parse_args()
    with engine_host("bs-") as (cli, conn, dc, directory):
        snapshot_half(args, cli, conn, dc, directory)
        merge_half(args, cli, conn, dc, directory)


if __name__ == "__main__":
    main()
