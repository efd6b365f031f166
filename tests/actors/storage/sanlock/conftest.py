"""Two test hosts, each with its own sanlock daemon, on one shared POSIXFS domain.

    fabric ──┬── h1: libvirtd, sanlock daemon (run dir h1/sanlock/run), agent (host id 1)
             └── h2: libvirtd, sanlock daemon (run dir h2/sanlock/run), agent (host id 2)
    shared/  a directory both hosts bind-mount as a POSIXFS connection (`mnt_options=bind`):
             the domain, its dom_md/ids lockspace and dom_md/leases, seen by both

Each sanlock daemon runs in its host's mount namespace (it opens the paths the
agent names, under the agent's mount point), and the host's agent and libvirtd
reach it through `SANLOCK_RUN_DIR`. libvirtd runs its sanlock lock manager
(Debian `libvirt-sanlock`, `lock_manager = "sanlock"`) with VDSM's settings: a VM's
`<lease>` is acquired for its QEMU process before QEMU starts. Both agents have
`[sanlock] io_timeout = 1` (the two-host harness's config), for writing the lockspace
and for joining it, so a host joins in ~3 s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.engine import BLANK, DATA, new_id, wait_task
from harness.pki import make_pki
from harness.sanlockd import Sanlockd, build_shim, need_sanlock
from harness.twohosts import Fabric, TestHost
from harness.waiting import wait_for
from hostvisor.api.client import Client

POSIXFS = 6
QEMU_SANLOCK_CONF = """\
auto_disk_leases = 0
require_lease_for_disks = 0
"""
"""libvirt's sanlock lock manager as VDSM configures it: only the leases a VM names."""


@dataclass
class SanlockHost:
    """A test host with its own sanlock daemon and its host id in the pool."""

    host: TestHost
    sanlock: Sanlockd
    host_id: int

    def connect(self) -> Client:
        return self.host.connect()

    def start_agent(self) -> None:
        """Start (again) the agent, reaching this host's sanlock daemon; wait for it."""
        with self.sanlock.client_env():
            self.host.start_agent()
        self.host.wait_agent()

    def kill_agent(self) -> None:
        """kill -9 the agent, by the pid the harness started."""
        agent = self.host.agent
        agent.process.kill()
        agent.process.wait(timeout=30)


@dataclass
class Cluster:
    """One pool over one shared domain; both hosts connected to it."""

    h1: SanlockHost
    h2: SanlockHost
    shared: Path
    sd: str = field(default_factory=new_id)
    sp: str = field(default_factory=new_id)
    conn: str = field(default_factory=new_id)

    @property
    def hosts(self) -> tuple[SanlockHost, SanlockHost]:
        return self.h1, self.h2

    @property
    def dom_md(self) -> Path:
        """The domain's dom_md, as the test process sees it (the shared directory)."""
        return self.shared / self.sd / "dom_md"

    def connection(self) -> dict[str, Any]:
        return {"id": self.conn, "connection": str(self.shared), "mnt_options": "bind"}

    def connect_server(self, cli: Any) -> None:
        answer = cli.StoragePool.connectStorageServer(
            storagepoolID=BLANK, domainType=POSIXFS, connectionParams=[self.connection()]
        )
        assert answer == [{"id": self.conn, "status": 0}], answer

    def connect_pool(self, cli: Any, host_id: int) -> None:
        cli.StoragePool.connect(
            storagepoolID=self.sp,
            hostID=host_id,
            scsiKey=self.sp,
            masterSdUUID=self.sd,
            masterVersion=1,
            domainDict={self.sd: "active"},
        )

    def make_pool(self) -> None:
        """The Engine's flow on h1 (server, domain, pool), then both hosts connect."""
        with self.h1.connect() as cli:
            self.connect_server(cli)
            assert cli.StorageDomain.create(
                storagedomainID=self.sd,
                domainType=POSIXFS,
                typeArgs=str(self.shared),
                name="shared",
                domainClass=DATA,
                version="5",
            )
            cli.StoragePool.create(
                storagepoolID=self.sp,
                name="dc-sanlock",
                masterSdUUID=self.sd,
                masterVersion=1,
                domainList=[self.sd],
                lockRenewalIntervalSec=5,
                leaseTimeSec=60,
                ioOpTimeoutSec=1,
                leaseRetries=3,
            )
        for host in self.hosts:
            with host.connect() as cli:
                if host is self.h2:
                    self.connect_server(cli)
                self.connect_pool(cli, host.host_id)

    def acquired(self, host: SanlockHost) -> bool:
        with host.connect() as cli:
            stats = cli.Host.getStorageRepoStats(domains=[self.sd])
        return bool(stats.get(self.sd, {}).get("acquired"))

    def spm_status(self, host: SanlockHost) -> dict[str, Any]:
        with host.connect() as cli:
            status: dict[str, Any] = cli.StoragePool.getSpmStatus(storagepoolID=self.sp)
        return status

    def spm_start(self, host: SanlockHost) -> dict[str, Any]:
        """spmStart as the Engine sends it; the finished task's status."""
        with host.connect() as cli:
            task = cli.StoragePool.spmStart(
                storagepoolID=self.sp, prevID=-1, prevLver="-1", maxHostID=250, domVersion="5"
            )
            return wait_task(cli, task, timeout=120)

    def spm_stop(self, host: SanlockHost) -> None:
        with host.connect() as cli:
            cli.StoragePool.spmStop(storagepoolID=self.sp)

    def wait_joined(self) -> None:
        for host in self.hosts:
            wait_for(lambda h=host: self.acquired(h), 60, f"host {host.host_id} to join")


@contextlib.contextmanager
def sanlock_cluster(directory: Path) -> Iterator[Cluster]:
    """Bring up the two hosts and their daemons; tear all down by their pids."""
    need_sanlock()
    shim = build_shim(directory / "shim")
    fabric = Fabric()
    made: list[SanlockHost] = []
    try:
        pki = make_pki(directory / "pki")
        for n in (1, 2):
            home = directory / f"h{n}"
            run_dir = home / "sanlock" / "run"
            run_dir.mkdir(parents=True)
            (home / "etc").mkdir(parents=True)
            (home / "etc" / "qemu-sanlock.conf").write_text(QEMU_SANLOCK_CONF)
            with _environ("SANLOCK_RUN_DIR", str(run_dir)):  # libvirtd's sanlock plugin too
                host = TestHost(fabric, pki, home, qemu_extra='lock_manager = "sanlock"\n')
            try:
                daemon = Sanlockd(home / "sanlock", shim, mount_ns_of=host.libvirtd.pid)
            except BaseException:
                host.stop()
                raise
            made.append(SanlockHost(host, daemon, host_id=n))
            made[-1].start_agent()
        shared = directory / "shared"
        shared.mkdir()
        cluster = Cluster(made[0], made[1], shared)
        cluster.make_pool()
        yield cluster
    finally:
        for sanlock_host in made:
            sanlock_host.host.stop()
            sanlock_host.sanlock.stop()
        fabric.delete()


@contextlib.contextmanager
def _environ(key: str, value: str) -> Iterator[None]:
    import os  # noqa: PLC0415

    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for this directory's modules (each test leaves no SPM behind).

    One, also because libsanlock keeps the first daemon a process talks to: the
    tests' own sanlock calls always go to h1's.
    """
    with sanlock_cluster(tmp_path_factory.mktemp("sanlock")) as made:
        yield made
