"""Live merge through Hostvisor against the same libvirt calls made directly, same run.

    .venv/bin/python tests/benchmarks/bench_merge.py [--rounds N] [--size MiB]
                                                     [--data MiB] [--no-kvm]

One in-process host (`qemu:///embed`, KVM unless --no-kvm) with a LOCALFS data center
made the Engine's way. Each round, in alternating order, a guest whose disk is a
--size MiB raw base (it halts at boot) under a qcow2 active layer holding --data MiB
(written with qemu-io before the guest starts) has its active layer merged into the
base:

- by Hostvisor: `VM.merge` over the wire (volumes made by Volume.create), timed from
  the call until `vmJobs` in VM.getStats no longer shows the job: libvirt's commit,
  the pivot, and the volume metadata synced (the leaf ILLEGAL), as the Engine waits;
- by libvirt: on the same connection, a guest on the same layout of plain files:
  `blockCommit(ACTIVE | RELATIVE)`, `blockJobInfo` every 50 ms until cur == end and
  the XML shows the mirror ready, `blockJobAbort(PIVOT)`, then until the XML shows
  the base as the disk's source.

Medians of --rounds rounds; the target is Hostvisor <= 1.2x libvirt. Not a test: it
never gates CI.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # the tests' harness

from harness.engine import (  # noqa: E402
    COW,
    RAW,
    MiB,
    engine_vm_xml,
    local_data_center,
    new_id,
    succeeded,
    write_halting_boot_sector,
)
from hostvisor.actors.hypervisor.connection import (  # noqa: E402
    detect_accelerator,
    embed_uri,
    open_connection,
    prepare_embed_root,
)
from hostvisor.actors.vm.blockjob_merge import live_chain, mirror_ready  # noqa: E402
from hostvisor.api.embedded import EmbeddedHost  # noqa: E402
from hostvisor.supervision.config import load_config  # noqa: E402

TARGET = 1.2
POLL = 0.05
TIMEOUT = 600.0


def fill(path: Path, data_mib: int) -> None:
    """Write `data_mib` MiB of a pattern into a qcow2 layer (before its guest runs)."""
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 1M {data_mib}M", str(path)],
        capture_output=True,
        check=True,
    )


def wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(POLL)


def hostvisor_round(cli: Any, dc: Any, size: int, data: int, kind: str) -> float:
    img, base, top, vm_id, job = new_id(), new_id(), new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=size * MiB))
    write_halting_boot_sector(dc.prepare(cli, img, base))
    succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, size=size * MiB, parent=base))
    fill(Path(dc.prepare(cli, img, top)), data)
    xml = engine_vm_xml(name=f"hv-{vm_id[:8]}", vm_id=vm_id, dc=dc, img=img, vol=top, kind=kind)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    wait(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", "the guest Up")
    drive = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": top}
    started = time.monotonic()
    cli.VM.merge(vmID=vm_id, drive=drive, baseVolUUID=base, topVolUUID=top, jobUUID=job)
    wait(
        lambda: job not in cli.VM.getStats(vmID=vm_id)[0].get("vmJobs", {job: 0}),
        "the merge to end",
    )
    elapsed = time.monotonic() - started
    assert cli.Volume.getInfo(**dc.ids(img, top))["legality"] == "ILLEGAL"
    cli.VM.destroy(vmID=vm_id)
    succeeded(cli, cli.Image.delete(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img))
    return elapsed


def libvirt_round(conn: Any, directory: Path, size: int, data: int, kind: str, dc: Any) -> float:
    folder = directory / f"plain-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    base, top = folder / "base", folder / "top"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), f"{size}M"], check=True)
    write_halting_boot_sector(str(base))
    subprocess.run(
        [
            *("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1"),
            "-b",
            "base",
            "-F",
            "raw",
            str(top),
            f"{size}M",
        ],
        check=True,
        cwd=folder,
    )
    fill(top, data)
    vm_id = new_id()
    xml = engine_vm_xml(name=f"lv-{vm_id[:8]}", vm_id=vm_id, dc=dc, img="x", vol="y", kind=kind)
    xml = xml.replace(f"/rhev/data-center/{dc.sp}/{dc.sd}/images/x/y", str(top))
    domain = conn.createXML(xml, 0)
    try:
        started = time.monotonic()
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | libvirt.VIR_DOMAIN_BLOCK_COMMIT_RELATIVE
        domain.blockCommit("vda", str(base), str(top), 0, flags)

        def ready() -> bool:
            info = domain.blockJobInfo("vda", 0)
            return (
                bool(info) and info["cur"] == info["end"] and mirror_ready(domain.XMLDesc(0), "vda")
            )

        wait(ready, "the commit to be ready")
        domain.blockJobAbort("vda", libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)

        def pivoted() -> bool:
            chain = live_chain(domain.XMLDesc(0), "vda") or []
            return [layer.volume for layer in chain] == ["base"]

        wait(pivoted, "the pivot")
        return time.monotonic() - started
    finally:
        domain.destroy()


@contextlib.contextmanager
def engine_host(prefix: str) -> Iterator[tuple[Any, Any, Any, Path]]:
    """An embedded host with a LOCALFS data center (this host SPM), and a libvirt
    connection to the same embedded driver: `(client, connection, dc, directory)`."""
    with tempfile.TemporaryDirectory(prefix=prefix) as temp:
        directory = Path(temp)
        root = directory / "embed"
        prepare_embed_root(root)
        config = load_config(
            state_dir=directory / "state",
            libvirt_uri=embed_uri(root),
            management_port=0,
            vm_sample_interval=0.5,
            vm_powering_up_seconds=0,
        )
        dc = local_data_center(directory / "sd")
        with EmbeddedHost(config) as host, host.client(timeout=120) as cli:
            dc.setup(cli)
            yield cli, open_connection(embed_uri(root)), dc, directory


def merge_half(args: argparse.Namespace, cli: Any, conn: Any, dc: Any, directory: Path) -> None:
    """Live merges of a --size MiB disk: Hostvisor vs the same libvirt calls, printed."""
    kind = "qemu" if args.no_kvm else detect_accelerator().domain_type
    hostvisor: list[float] = []
    direct: list[float] = []
    for index in range(args.rounds):
        order = ("hv", "lv") if index % 2 == 0 else ("lv", "hv")
        for who in order:
            if who == "hv":
                hostvisor.append(hostvisor_round(cli, dc, args.size, args.data, kind))
            else:
                direct.append(libvirt_round(conn, directory, args.size, args.data, kind, dc))
        print(
            f"round {index + 1}: hostvisor {hostvisor[-1]:.3f} s, libvirt {direct[-1]:.3f} s",
            flush=True,
        )
    what = f"live merge of a {args.size} MiB disk ({args.data} MiB in the active layer"
    verdict(what, kind, hostvisor, direct, seconds=True)


def verdict(
    what: str, kind: str, hostvisor: list[float], direct: list[float], *, seconds: bool
) -> None:
    """Print the medians of both ways and their ratio against TARGET (s or ms)."""
    ours, theirs = statistics.median(hostvisor), statistics.median(direct)
    ratio = ours / theirs
    shown = (lambda t: f"{t:.3f} s") if seconds else (lambda t: f"{t * 1000:.1f} ms")
    print(
        f"{what}, {'TCG' if kind == 'qemu' else 'KVM'}): hostvisor median {shown(ours)}, "
        f"libvirt median {shown(theirs)}, ratio {ratio:.2f}x "
        f"(target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024, help="disk size, MiB")
    parser.add_argument("--data", type=int, default=1000, help="MiB in the active layer")
    parser.add_argument("--no-kvm", action="store_true")
    args = parser.parse_args()
    with engine_host("bm-") as (cli, conn, dc, directory):
        merge_half(args, cli, conn, dc, directory)


if __name__ == "__main__":
    main()
