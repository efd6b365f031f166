"""Volume create+delete rate through FileDomain against bare qemu-img, same run.

    .venv/bin/python tests/benchmarks/bench_storage.py [--rounds N]

For 1 GiB sparse COW and RAW volumes, times N rounds of
`FileDomain.create_volume` + `delete_volume` (metadata, lease, fsyncs, legality
flip) against N rounds of the same `qemu-img create` plus removing the file. The
ratio is the cost of the crash-safe bookkeeping over the bare tool.

Then the copy: a 1 GiB raw volume full of data copied into a qcow2 volume by an
`SDM.copy_data` job through the API of an in-process host (polling Host.getJobs as
the Engine does), against `qemu-img convert` of the same file run directly; both
count until the copy is on disk (fsync), since the job flushes before it marks the
destination LEGAL. And the same copy as `Volume.copy` (an SPM task the Engine polls
with Task.getStatus: the destination volume made, converted, flushed, marked LEGAL)
against the same direct `qemu-img convert` + fsync; the target is a time ratio of
at most 1.1. Rounds alternate; the medians are compared. Not a test: it never gates CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' harness

from harness.engine import (
    COW,
    RAW,
    DataCenter,
    local_data_center,
    new_id,
    storage_host,
    succeeded,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import DomainClass, DomainType, Preallocation, VolumeFormat

GiB = 1024**3


def _bare(directory: Path, fmt: VolumeFormat, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        path = directory / str(uuid.uuid4())
        options = ["-o", "compat=1.1"] if fmt is VolumeFormat.COW else []
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", fmt.qemu_format, *options, str(path), str(GiB)],
            check=True,
        )
        path.unlink()
    return time.perf_counter() - start


def _domain(domain: FileDomain, fmt: VolumeFormat, rounds: int) -> float:
    img = str(uuid.uuid4())
    start = time.perf_counter()
    for _ in range(rounds):
        vol = str(uuid.uuid4())
        domain.create_volume(img, vol, size=GiB, fmt=fmt, prealloc=Preallocation.SPARSE)
        domain.delete_volume(img, vol)
    return time.perf_counter() - start


def _fill(path: str, size: int) -> None:
    """Write `size` bytes of incompressible data (a 1 MiB random block, repeated)."""
    block = os.urandom(1024 * 1024)
    with Path(path).open("r+b") as disk:
        disk.writelines(block for _ in range(size // len(block)))
        disk.flush()
        os.fsync(disk.fileno())


def _copy_via_job(cli: Any, dc: DataCenter, src: tuple[str, str], size: int) -> float:
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=COW, size=size))
    os.sync()
    job_id = new_id()
    started = time.perf_counter()
    cli.SDM.copy_data(
        job_id=job_id,
        source={"endpoint_type": "div", "sd_id": dc.sd, "img_id": src[0], "vol_id": src[1]},
        destination={"endpoint_type": "div", "sd_id": dc.sd, "img_id": img, "vol_id": vol},
    )
    while True:
        status = cli.Host.getJobs(job_ids=[job_id])[job_id]["status"]
        if status not in {"running", "pending"}:
            break
        time.sleep(0.002)  # the Engine polls every few seconds; this only times the job
    took = time.perf_counter() - started
    if status != "done":
        raise RuntimeError(f"copy job ended {status}")
    succeeded(cli, cli.Image.delete(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img))
    return took


def _copy_via_volume_copy(cli: Any, dc: DataCenter, src: tuple[str, str]) -> float:
    """Volume.copy of the source into a new qcow2 image, polled as the Engine polls tasks."""
    img, vol = new_id(), new_id()
    os.sync()
    started = time.perf_counter()
    task = cli.Volume.copy(
        **dc.ids(*src),
        dstSdUUID=dc.sd,
        dstImgUUID=img,
        dstVolUUID=vol,
        desc="bench",
        volType=8,
        volFormat=COW,
        preallocate=2,
        postZero="false",
        force="false",
    )
    while (status := cli.Task.getStatus(taskID=task))["taskState"] != "finished":
        time.sleep(0.002)  # the Engine polls every few seconds; this only times the task
    took = time.perf_counter() - started
    cli.Task.clear(taskID=task)
    if status["taskResult"] != "success":
        raise RuntimeError(f"Volume.copy ended {status}")
    succeeded(cli, cli.Image.delete(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img))
    return took


def _copy_direct(source: str, directory: Path) -> float:
    target = directory / f"{uuid.uuid4()}.qcow2"
    started = time.perf_counter()
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "compat=1.1",
            source,
            str(target),
        ],
        check=True,
    )
    fd = os.open(target, os.O_RDONLY)  # durable, as the job's copy is before it is LEGAL
    os.fsync(fd)
    os.close(fd)
    took = time.perf_counter() - started
    target.unlink()
    return took


def measure_copy(work: Path, size: int, rounds: int) -> tuple[float, float, float]:
    """Median seconds of a copy: (qemu-img convert directly, SDM.copy_data, Volume.copy)."""
    scratch = work / "direct"
    scratch.mkdir()
    dc = local_data_center(work / "sd")
    with storage_host(work) as cli:
        dc.setup(cli)
        src = (new_id(), new_id())
        succeeded(cli, dc.create_volume(cli, *src, fmt=RAW, size=size))
        source = dc.prepare(cli, *src)
        _fill(source, size)
        direct, job, task = [], [], []
        for round_ in range(rounds):
            # Each copy starts with no dirty pages of the one before (os.sync), and the
            # order rotates, so none pays for another's writeback more than the others.
            measures = [
                lambda: direct.append(_copy_direct(source, scratch)),
                lambda: job.append(_copy_via_job(cli, dc, src, size)),
                lambda: task.append(_copy_via_volume_copy(cli, dc, src)),
            ]
            turn = round_ % len(measures)  # each goes first, second and last in turn
            for measure in measures[turn:] + measures[:turn]:
                os.sync()
                measure()
    return statistics.median(direct), statistics.median(job), statistics.median(task)


def main() -> None:
    """Run both measurements per format and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--copy-rounds", type=int, default=5)
    parser.add_argument("--copy-gib", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        bare_dir = work / "bare"
        bare_dir.mkdir()
        root = work / "mnt"
        root.mkdir()
        (work / "copy").mkdir()
        domain = FileDomain.create(
            root,
            str(uuid.uuid4()),
            name="bench",
            domain_type=DomainType.LOCALFS,
            domain_class=DomainClass.DATA,
            remote_path=str(root),
        )
        print(f"{args.rounds} rounds of create+delete of a 1 GiB sparse volume, {work}")
        print(f"{'format':<8}{'qemu-img+rm /s':>16}{'FileDomain /s':>16}{'bare/ours':>10}")
        for fmt in (VolumeFormat.COW, VolumeFormat.RAW):
            _bare(bare_dir, fmt, 5)  # warm up
            _domain(domain, fmt, 5)
            bare = args.rounds / _bare(bare_dir, fmt, args.rounds)
            ours = args.rounds / _domain(domain, fmt, args.rounds)
            print(f"{fmt.name:<8}{bare:>16.1f}{ours:>16.1f}{bare / ours:>10.2f}")
        size = args.copy_gib * GiB
        direct, job, task = measure_copy(work / "copy", size, args.copy_rounds)
        mib = size / 1024**2
        print()
        print(f"copy of {args.copy_gib} GiB raw -> qcow2, median of {args.copy_rounds} rounds")
        print(f"{'how':<28}{'seconds':>10}{'MiB/s':>10}")
        print(f"{'qemu-img convert directly':<28}{direct:>10.2f}{mib / direct:>10.0f}")
        print(f"{'SDM.copy_data job (API)':<28}{job:>10.2f}{mib / job:>10.0f}")
        print(f"{'Volume.copy task (API)':<28}{task:>10.2f}{mib / task:>10.0f}")
        print(f"throughput ratio job/direct: {direct / job:.2f} (target >= 0.95)")
        print(f"time ratio Volume.copy/direct: {task / direct:.2f} (target <= 1.1)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
