"""A real agent and a real sanlock daemon: Lease.rebuild_leases, `[sanlock] io_timeout`,
and `[sanlock] required`.

The agent runs as its own process (harness/agent.py) with its own sanlock daemon
(harness/sanlockd.py): libsanlock keeps the first daemon a process talks to, so this
test process never calls libsanlock itself; it checks what is on disk with
`sanlock direct dump` and plain reads. The domain is POSIXFS over a bind mount of a
test directory (as tests/actors/storage/sanlock/ does), made the Engine's way with
the Engine's default `ioOpTimeoutSec=10`: the agent's `[sanlock] io_timeout = 1` is
what makes its lockspace join take seconds rather than the ~21 s of the default.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.agent import Agent
from harness.engine import BLANK, POSIXFS, DataCenter, new_id, wait_task
from harness.sanlockd import Sanlockd, build_shim, need_sanlock
from hostvisor.api.client import Client, ServerError, connect

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NOT_CONNECTED = 313
NOT_IN_POOL = 353
NOT_SPM = 654
NO_SUCH_LEASE = 936
HOST_ID_FAILURE = 661
INVALID = 91
WRONG_JSON = -32602
MiB = 1024 * 1024
INDEX_RECORDS = MiB + 512
"""Where the xleases index's records start: one alignment (1 MiB), then its metadata."""


@dataclass
class Host:
    """One agent with its own sanlock daemon (None: no daemon) and a shared directory."""

    agent: Agent
    sanlock: Sanlockd | None
    shared: Path

    def client(self) -> Client:
        return connect("127.0.0.1", self.agent.port, timeout=120)

    def connection(self) -> dict[str, Any]:
        return {"id": new_id(), "connection": str(self.shared), "mnt_options": "bind"}


@contextlib.contextmanager
def agent_host(directory: Path, sanlock_conf: str, *, daemon: bool) -> Iterator[Host]:
    """Start a sanlock daemon (if `daemon`) and an agent whose config has `sanlock_conf`
    as its `[sanlock]` section; stop both by their pids and unmount what it mounted."""
    need_sanlock()
    shim = build_shim(directory / "shim")
    (directory / "agent").mkdir()
    agent = Agent(directory / "agent")
    agent.config.write_text(agent.config.read_text() + f"[sanlock]\n{sanlock_conf}")
    shared = directory / "shared"
    shared.mkdir()
    sanlock = Sanlockd(directory / "sanlock", shim) if daemon else None
    run_dir = sanlock.run_dir if sanlock else directory / "no-daemon"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        agent.start_ready(env={"SANLOCK_RUN_DIR": str(run_dir)}, timeout=120)
        yield Host(agent, sanlock, shared)
    finally:
        agent.stop_all()
        mnt = agent.state_dir / "data-center" / "mnt"
        for target in sorted(mnt.glob("*"), reverse=True) if mnt.is_dir() else []:
            subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
        if sanlock is not None:
            sanlock.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    with agent_host(tmp_path_factory.mktemp("h5sl"), "io_timeout = 1\n", daemon=True) as made:
        yield made


@pytest.fixture(scope="module")
def spm(host: Host) -> Iterator[tuple[DataCenter, float]]:
    """A POSIXFS data center made the Engine's way; the host is SPM (and how long the
    spmStart took, which waits for the lockspace join)."""
    dc = DataCenter(host.connection(), POSIXFS)
    with host.client() as cli:
        dc.connect_server(cli)
        dc.create_domain(cli)
        dc.create_pool(cli)  # ioOpTimeoutSec=10, the Engine's default
        dc.connect_pool(cli)
        started = time.monotonic()
        task = cli.StoragePool.spmStart(storagepoolID=dc.sp, prevID=-1, prevLver="-1")
        status = wait_task(cli, task, timeout=120)
        took = time.monotonic() - started
        assert status["taskResult"] == "success", status
    yield dc, took
    with host.client() as cli:
        cli.StoragePool.spmStop(storagepoolID=dc.sp)
        cli.StoragePool.disconnect(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp)
        cli.StoragePool.disconnectStorageServer(
            storagepoolID=BLANK, domainType=POSIXFS, connectionParams=[dc.connection]
        )


def dump(path: Path, offset: int, size: int) -> str:
    """`sanlock direct dump`: the sanlock leaders in that range of a file (no daemon)."""
    done = subprocess.run(
        ["sanlock", "direct", "dump", f"{path}:{offset}:{size}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_the_hosts_io_timeout_is_the_lockspaces(host: Host, spm: tuple[DataCenter, float]) -> None:
    dc, took = spm
    ids = host.shared / dc.sd / "dom_md" / "ids"
    meta = (host.shared / dc.sd / "dom_md" / "metadata").read_text()
    assert "IOOPTIMEOUTSEC=10" in meta  # the pool's, as the Engine sent it
    leader = dump(ids, 0, MiB)
    assert dc.sd in leader
    # sanlock derives every timeout from io_timeout: a join with 10 s takes ~21 s.
    assert took < 15, f"spmStart (a lockspace join with io_timeout 1) took {took:.1f} s"
    print(f"\nspmStart incl. lockspace join, [sanlock] io_timeout = 1: {took:.1f} s")


def lease_of(dc: DataCenter, lease_id: str) -> dict[str, str]:
    return {"sd_id": dc.sd, "lease_id": lease_id}


def create_lease(cli: Any, dc: DataCenter) -> tuple[str, int]:
    lease_id = str(uuid.uuid4())
    status = wait_task(cli, cli.Lease.create(lease=lease_of(dc, lease_id)))
    assert status["taskResult"] == "success", status
    offset: int = cli.Lease.info(lease=lease_of(dc, lease_id))["offset"]
    return lease_id, offset


def code_of(cli: Any, verb: str, **params: Any) -> int:
    namespace, name = verb.split(".")
    with pytest.raises(ServerError) as raised:
        getattr(getattr(cli, namespace), name)(**params)
    return raised.value.code


def record_at(xleases: Path, offset: int) -> int:
    """The file offset of the index record of the lease at `offset` (slot 3 + n)."""
    return INDEX_RECORDS + (offset // MiB - 3) * 64


def test_rebuild_leases_mends_the_index_and_the_resources(
    host: Host, spm: tuple[DataCenter, float]
) -> None:
    dc, _ = spm
    xleases = host.shared / dc.sd / "dom_md" / "xleases"
    with host.client() as cli:
        missing, missing_at = create_lease(cli, dc)  # its resource will be wiped
        damaged, damaged_at = create_lease(cli, dc)  # its record will be garbled
        leftover, leftover_at = create_lease(cli, dc)  # its record will be emptied
        with xleases.open("r+b") as volume:
            volume.seek(missing_at)
            volume.write(b"\0" * 4096)
            volume.seek(record_at(xleases, damaged_at))
            volume.write(b"\xff" * 8)
            volume.seek(record_at(xleases, leftover_at))
            volume.write(b"\0" * 48)
        with open(xleases, "rb") as volume:  # noqa: PTH123 - same file, read back
            volume.seek(leftover_at)
            assert volume.read(4) != b"\0" * 4  # the leftover resource is still there
        assert code_of(cli, "Lease.info", lease=lease_of(dc, damaged)) == NO_SUCH_LEASE
        assert code_of(cli, "Lease.info", lease=lease_of(dc, leftover)) == NO_SUCH_LEASE
        with pytest.raises(ServerError):  # sanlock finds no resource where the index says
            cli.Lease.status(lease=lease_of(dc, missing))

        started = time.monotonic()
        status = wait_task(cli, cli.Lease.rebuild_leases(sd_id=dc.sd))
        took = time.monotonic() - started
        assert status["taskResult"] == "success", status

        assert cli.Lease.status(lease=lease_of(dc, missing)) == {
            "owners": [],
            "version": None,
            "metadata": {},
        }
        assert cli.Lease.info(lease=lease_of(dc, damaged))["offset"] == damaged_at
        assert code_of(cli, "Lease.info", lease=lease_of(dc, leftover)) == NO_SUCH_LEASE
        assert leftover not in dump(xleases, leftover_at, MiB)  # its resource was cleared
        assert missing in dump(xleases, missing_at, MiB)  # its resource was written again
        # A rebuild of a sound index changes nothing; the freed slot is used again.
        before = xleases.read_bytes()[MiB : MiB + 62 * 4096]
        assert wait_task(cli, cli.Lease.rebuild_leases(sd_id=dc.sd))["taskResult"] == "success"
        after = xleases.read_bytes()[MiB : MiB + 62 * 4096]
        assert after[512:] == before[512:]  # the records (the metadata has a new mtime)
        again, again_at = create_lease(cli, dc)
        assert again_at == leftover_at
        for lease_id in (missing, damaged, again):
            assert wait_task(cli, cli.Lease.delete(lease=lease_of(dc, lease_id)))["code"] == 0
    print(f"\nLease.rebuild_leases (task, 3 leases mended): {took:.2f} s")


def test_rebuild_leases_bad_input_changes_nothing(
    host: Host, spm: tuple[DataCenter, float]
) -> None:
    dc, _ = spm
    xleases = host.shared / dc.sd / "dom_md" / "xleases"
    before = xleases.read_bytes()
    with host.client() as cli:
        assert code_of(cli, "Lease.rebuild_leases", sd_id="not-a-uuid") == INVALID
        assert code_of(cli, "Lease.rebuild_leases", sd_id=str(uuid.uuid4())) == NOT_IN_POOL
        assert code_of(cli, "Lease.rebuild_leases", sd_id=7) == WRONG_JSON
        assert code_of(cli, "Lease.rebuild_leases") == WRONG_JSON
        cli.StoragePool.spmStop(storagepoolID=dc.sp)
        try:
            assert code_of(cli, "Lease.rebuild_leases", sd_id=dc.sd) == NOT_SPM
        finally:
            task = cli.StoragePool.spmStart(storagepoolID=dc.sp, prevID=-1, prevLver="-1")
            assert wait_task(cli, task, timeout=120)["taskResult"] == "success"
    assert xleases.read_bytes() == before


def test_rebuild_leases_needs_a_connected_pool(tmp_path: Path) -> None:
    from harness.engine import storage_host  # noqa: PLC0415

    with storage_host(tmp_path) as cli:
        assert code_of(cli, "Lease.rebuild_leases", sd_id=str(uuid.uuid4())) == NOT_CONNECTED


def test_a_required_sanlock_that_does_not_run_refuses_a_shared_domain(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A short directory: the embedded libvirt's QMP sockets live under it (108 bytes).
    with agent_host(tmp_path_factory.mktemp("rq"), "required = true\n", daemon=False) as made:
        dc = DataCenter(made.connection(), POSIXFS)
        with made.client() as cli:
            dc.connect_server(cli)
            with pytest.raises(ServerError) as raised:
                dc.create_domain(cli)
            assert raised.value.code == HOST_ID_FAILURE
            assert "sanlock.sock" in str(raised.value)
            assert "[sanlock] required" in str(raised.value)
            assert cli.Host.getStorageDomains() == []
            cli.StoragePool.disconnectStorageServer(
                storagepoolID=BLANK, domainType=POSIXFS, connectionParams=[dc.connection]
            )
        assert list(made.shared.iterdir()) == []
