"""A snapshot with memory that outlives its `timeout` is aborted and reported failed.

VDSM (`virt/jobs/snapshot.py`, `AbortSnapshot`) gives a snapshot with memory the
Engine's `timeout` (minutes, 30 by default; `SnapshotVDSCommand` sends it with
`snapMemory`): once it has passed, the job's record says `abort`, libvirt's job is
aborted, libvirt fails the snapshot and resumes the guest on its old volumes, and the
job ends failed with SnapshotFailed (48). The volumes the Engine made stay as
`Volume.create` left them (the new leaf LEAF over the old one, now INTERNAL; the
Engine removes it after the failure), and the VM's metadata still names the old leaf.

The stall is real: the memory dump volume is a FIFO that a reader drains at 8 KiB/s
(a storage that crawls, site/slow_storage.py); the guest has 1 GiB of memory, so
libvirt's dump (through its iohelper) would take minutes. The snapshot asks for the
shortest timeout the Engine can send, one minute. Once it has passed, the reader
drains at full speed (the storage recovers), which lets qemu see libvirt's cancel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slow_storage import SlowReader, make_crawling
from snapshot_helpers import (
    OVIRT_VM,
    MemoryVolumes,
    SnapVm,
    disk_source,
    live_xml,
    make_image,
    metadata_volume,
    wait_job,
)

from harness.engine import engine_vm_xml, new_id, qemu_chain, qemu_check
from harness.guests import StatusEvents
from harness.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.kvm]

SNAPSHOT_FAILED = 48
TIMEOUT = 60.0
DUMP_AT_LEAST = 2 << 20
"""A 1 GiB guest's memory stream is over 2 MiB even when its pages are all zero."""


@pytest.fixture
def big_vm(snap_host: Any, accelerator: Any) -> SnapVm:
    """A guest with 1 GiB of memory on a two-volume image (a halting boot sector)."""
    _host, cli, dc = snap_host
    img, vols = make_image(cli, dc)
    vm_id = new_id()
    xml = engine_vm_xml(
        name=f"sn-{vm_id[:8]}",
        vm_id=vm_id,
        dc=dc,
        img=img,
        vol=vols[-1],
        kind=accelerator.domain_type,
    ).replace("<memory unit='MiB'>64</memory>", "<memory unit='MiB'>1024</memory>")
    events = StatusEvents(cli)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    events.until(vm_id, "Up")
    return SnapVm(dc=dc, vm_id=vm_id, img=img, vols=vols)


@pytest.fixture
def crawling_dump(snap_host: Any) -> Iterator[tuple[MemoryVolumes, SlowReader]]:
    """The Engine's memory volumes, the dump's file a FIFO read at a crawl."""
    _host, cli, dc = snap_host
    memory = MemoryVolumes(cli, dc)
    reader = make_crawling(Path(dc.prepare(cli, memory.dump_img, memory.dump_vol)))
    try:
        yield memory, reader
    finally:
        reader.stop()


def _record(cli: Any, vm_id: str) -> dict[str, Any]:
    text = live_xml(cli, vm_id).findtext(f"metadata/{OVIRT_VM}vm/{OVIRT_VM}snapshot_job")
    record: dict[str, Any] = json.loads(text) if text else {}
    return record


def test_a_memory_snapshot_past_its_timeout_is_aborted_and_reported_failed(
    snap_host: Any,
    big_vm: SnapVm,
    crawling_dump: tuple[MemoryVolumes, SlowReader],
) -> None:
    _host, cli, dc = snap_host
    vm, (memory, reader) = big_vm, crawling_dump
    old_leaf, old_path = vm.vols[-1], vm.prepared(cli, vm.vols[-1])
    new = vm.new_leaf(cli)
    job_id = new_id()
    started = time.monotonic()

    cli.VM.snapshot(
        vmID=vm.vm_id,
        snapDrives=[vm.drive(new)],
        snapMemory=memory.handle(),
        frozen=False,
        jobUUID=job_id,
        timeout=1,  # minutes: the shortest the Engine sends
    )

    wait_for(lambda: reader.read > 0, 30, "libvirt to begin the memory dump")
    running = cli.Host.getJobs(job_type="virt", job_ids=[job_id])[job_id]
    assert running["status"] == "running"
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] in ("Up", "Paused")  # it answers
    # Its minute passes with the dump crawling; the VM answers all along.
    wait_for(
        lambda: cli.VM.getStats(vmID=vm.vm_id)[0] and time.monotonic() - started > TIMEOUT + 5,
        TIMEOUT + 30,
        "the snapshot's timeout to pass",
        step=1,
    )
    assert reader.read < DUMP_AT_LEAST  # the dump is far from done
    assert cli.Host.getJobs(job_type="virt", job_ids=[job_id])[job_id]["status"] == "running"
    reader.hurry()  # the storage recovers: qemu sees libvirt's cancel
    job = wait_job(cli, job_id, timeout=120)

    assert job["status"] == "failed", job
    assert job["error"]["code"] == SNAPSHOT_FAILED
    wait_for(lambda: cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Up", 30, "the guest back Up")
    assert disk_source(cli, vm.vm_id) == old_path  # qemu never left the old leaf
    assert metadata_volume(cli, vm.vm_id) == old_leaf
    ended = wait_for(
        lambda: _record(cli, vm.vm_id).get("ended") and _record(cli, vm.vm_id), 10, "the record"
    )
    assert (ended["ended"], ended["abort"]) == ("failed", True)
    assert float(ended["timeout"]) == 60.0  # seconds, as VDSM keeps it
    info = cli.Volume.getInfo(**dc.ids(vm.img, new))
    leaf = cli.Volume.getInfo(**dc.ids(vm.img, old_leaf))
    assert (info["voltype"], info["legality"], info["parent"]) == ("LEAF", "LEGAL", old_leaf)
    assert (leaf["voltype"], leaf["legality"]) == ("INTERNAL", "LEGAL")
    new_path = Path(vm.prepared(cli, new))
    assert qemu_chain(new_path) == [*vm.vols, new]
    qemu_check(new_path)
    qemu_check(Path(old_path))
    cli.VM.destroy(vmID=vm.vm_id)


def test_a_disk_snapshot_is_not_aborted_by_the_memory_timeout(snap_host: Any, snap_vm: SnapVm):
    """`timeout` is for snapshots with memory only (VDSM): a disk-only one just runs."""
    _host, cli, _dc = snap_host
    vm = snap_vm
    new = vm.new_leaf(cli)
    job_id = new_id()
    cli.VM.snapshot(
        vmID=vm.vm_id, snapDrives=[vm.drive(new)], frozen=True, jobUUID=job_id, timeout=1
    )
    assert wait_job(cli, job_id)["status"] == "done"
    assert metadata_volume(cli, vm.vm_id) == new
    record = _record(cli, vm.vm_id)
    assert (record["ended"], record["abort"]) == ("done", False)
    cli.VM.destroy(vmID=vm.vm_id)
