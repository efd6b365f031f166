"""Lockspace join time: Hostvisor's StoragePool.connect against raw sanlock.add_lockspace.

    .venv/bin/python tests/benchmarks/bench_sanlock.py [--rounds N] [--io-timeout S]

Needs root (a bind mount), sanlock, python3-sanlock and gcc. Starts its own sanlock
daemon (tests/harness/sanlockd.py, stopped by its pid) and, in the same run:

- raw: `sanlock.add_lockspace(wait=True)` of a fresh lockspace on a plain file,
  timed until it returns, then `rem_lockspace`;
- Hostvisor: an in-process host with a POSIXFS (bind-mounted) domain in a pool made
  with `ioOpTimeoutSec` = the same I/O timeout; `StoragePool.connect` with a host
  id, timed until `Host.getStorageRepoStats` says `acquired` (polled every 20 ms, as
  a client would), then `StoragePool.disconnect` and waiting until sanlock has left.

Rounds alternate; the medians are compared. sanlock's own delays (a few I/O
timeouts) dominate both, so the ratio shows what the agent adds: the API round
trips, the domain actor's asynchronous join and its polling of `inq_lockspace`.
Not a test: it never gates CI.
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

from harness.engine import BLANK, DATA, storage_host
from harness.sanlockd import Sanlockd, build_shim

POSIXFS = 6
MiB = 1024 * 1024


def _raw(work: Path, io_timeout: int) -> float:
    import sanlock  # noqa: PLC0415 - python3-sanlock, through the venv's system site

    name = uuid.uuid4().hex[:16].encode()
    ids = work / f"ids-{name.decode()}"
    ids.write_bytes(b"\0" * MiB)
    sanlock.write_lockspace(name, str(ids), iotimeout=io_timeout)
    started = time.perf_counter()
    sanlock.add_lockspace(name, 1, str(ids), iotimeout=io_timeout)
    took = time.perf_counter() - started
    sanlock.rem_lockspace(name, 1, str(ids))
    return took


class _Pool:
    """A pool over one POSIXFS domain on an in-process host."""

    def __init__(self, cli: Any, shared: Path, io_timeout: int) -> None:
        self.cli = cli
        self.sd, self.sp, conn = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        self.params = {"id": conn, "connection": str(shared), "mnt_options": "bind"}
        answer = cli.StoragePool.connectStorageServer(
            storagepoolID=BLANK, domainType=POSIXFS, connectionParams=[self.params]
        )
        assert answer[0]["status"] == 0, answer
        cli.StorageDomain.create(
            storagedomainID=self.sd,
            domainType=POSIXFS,
            typeArgs=str(shared),
            name="bench",
            domainClass=DATA,
            version="5",
        )
        cli.StoragePool.create(
            storagepoolID=self.sp,
            name="bench",
            masterSdUUID=self.sd,
            masterVersion=1,
            domainList=[self.sd],
            ioOpTimeoutSec=io_timeout,
        )

    def unmount(self, work: Path) -> None:
        self.cli.StoragePool.disconnectStorageServer(
            storagepoolID=BLANK, domainType=POSIXFS, connectionParams=[self.params]
        )
        # A bind mount's source in /proc/mounts is the device, not the directory, and
        # the host then leaves it mounted: unmount what is left under `work` here.
        for line in Path("/proc/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(f"{work}/"):
                subprocess.run(["umount", target], check=False)

    def _acquired(self) -> bool:
        stats = self.cli.Host.getStorageRepoStats(domains=[self.sd])
        return bool(stats.get(self.sd, {}).get("acquired"))

    def join(self) -> float:
        started = time.perf_counter()
        self.cli.StoragePool.connect(
            storagepoolID=self.sp,
            hostID=1,
            scsiKey=self.sp,
            masterSdUUID=self.sd,
            masterVersion=1,
            domainDict={self.sd: "active"},
        )
        while not self._acquired():
            time.sleep(0.02)
        return time.perf_counter() - started

    def leave(self) -> None:
        import sanlock  # noqa: PLC0415

        self.cli.StoragePool.disconnect(storagepoolID=self.sp, hostID=1, scsiKey=self.sp)
        deadline = time.monotonic() + 60
        while self.sd.encode() in {ls["lockspace"] for ls in sanlock.get_lockspaces()}:
            if time.monotonic() > deadline:
                raise TimeoutError("sanlock did not leave the lockspace")
            time.sleep(0.05)


def main() -> None:
    """Start a sanlock daemon, time both joins in alternation, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--io-timeout", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sanlock-"))
    daemon = Sanlockd(work / "sanlock", build_shim(work / "shim"))
    os.environ["SANLOCK_RUN_DIR"] = str(daemon.run_dir)  # before any sanlock call
    shared = work / "shared"
    shared.mkdir()
    raw: list[float] = []
    ours: list[float] = []
    try:
        (work / "host").mkdir()
        # The agent's [sanlock] io_timeout is what it writes and joins lockspaces with.
        with storage_host(work / "host", sanlock_io_timeout=args.io_timeout) as cli:
            pool = _Pool(cli, shared, args.io_timeout)
            try:
                for _ in range(args.rounds):
                    raw.append(_raw(work, args.io_timeout))
                    ours.append(pool.join())
                    pool.leave()
            finally:
                pool.unmount(work)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"lockspace join, io_timeout {args.io_timeout} s, {args.rounds} rounds")
    print(f"{'raw add_lockspace s':>22}{'Hostvisor connect s':>22}{'ours/raw':>10}")
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"{r:>22.3f}{o:>22.3f}{o / r:>10.2f}")


if __name__ == "__main__":
    main()
