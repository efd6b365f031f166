"""A GlusterFS domain is a shared domain: sanlock over the FUSE mount, as VDSM does it.

A real agent with its own sanlock daemon (`[sanlock] required = true`, `io_timeout =
1`) makes a data center on a one-brick GlusterFS volume the Engine's way: the
lockspace (`dom_md/ids`) and the SDM lease are sanlock's, written and read with
direct I/O through the FUSE client, and what sanlock wrote is on the gluster server's
brick. A VM lease and a volume lease are sanlock resources there too.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from harness.engine import BLANK, COW, DataCenter, MiB, new_id, succeeded, wait_task
from hostvisor.api.client import connect

from .conftest import GlusterVolume, fuse_client_reaped, sanlock_agent

GLUSTERFS = 7

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def dump(path: Path, offset: int, size: int) -> str:
    """`sanlock direct dump`: the sanlock leaders in that range of a file (no daemon)."""
    return subprocess.run(
        ["sanlock", "direct", "dump", f"{path}:{offset}:{size}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_the_spm_and_the_leases_of_a_gluster_domain_are_sanlocks(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, gluster: GlusterVolume
) -> None:
    log_file = tmp_path / "fuse.log"
    connection = {
        "id": new_id(),
        "connection": gluster.spec,
        "vfs_type": "glusterfs",
        "mnt_options": f"log-file={log_file}",
    }
    dc = DataCenter(connection, GLUSTERFS)
    img, vol, lease_id = new_id(), new_id(), str(uuid.uuid4())
    conf = "required = true\nio_timeout = 1\n"
    with (
        fuse_client_reaped(log_file, gluster.spec),
        # A short directory: the embedded libvirt's QMP sockets live under it.
        sanlock_agent(tmp_path_factory.mktemp("gs"), conf) as (agent, sanlockd),
        connect("127.0.0.1", agent.port, timeout=120) as cli,
    ):
        dc.connect_server(cli)
        dc.create_domain(cli)
        dc.create_pool(cli)
        dc.connect_pool(cli)
        started = time.monotonic()
        dc.become_spm(cli)  # joins the lockspace on the FUSE mount, takes the SDM lease
        took = time.monotonic() - started
        dom_md = gluster.brick / dc.sd / "dom_md"
        assert dc.sd in sanlockd.client("status")  # the daemon holds the lockspace
        assert "SDM" in dump(dom_md / "leases", MiB, MiB)
        assert cli.Host.getStorageRepoStats(domains=[dc.sd])[dc.sd]["acquired"] is True

        succeeded(cli, dc.create_volume(cli, img, vol, size=MiB, fmt=COW))
        lease_file = gluster.brick / dc.sd / "images" / img / f"{vol}.lease"
        assert vol in dump(lease_file, 0, MiB)  # the volume lease is a sanlock resource
        info = cli.Volume.getInfo(**dc.ids(img, vol))
        assert info["lease"]["owners"] == []

        lease = {"sd_id": dc.sd, "lease_id": lease_id}
        assert wait_task(cli, cli.Lease.create(lease=lease))["taskResult"] == "success"
        offset = cli.Lease.info(lease=lease)["offset"]
        assert lease_id in dump(dom_md / "xleases", offset, MiB)
        assert cli.Lease.status(lease=lease) == {"owners": [], "version": None, "metadata": {}}
        assert wait_task(cli, cli.Lease.rebuild_leases(sd_id=dc.sd))["taskResult"] == "success"
        assert cli.Lease.info(lease=lease)["offset"] == offset

        cli.StoragePool.spmStop(storagepoolID=dc.sp)
        cli.StoragePool.disconnect(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp)
        answer = cli.StoragePool.disconnectStorageServer(
            storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[connection]
        )
        assert answer == [{"id": connection["id"], "status": 0}]
    print(f"\nGLUSTERFS spmStart with sanlock (join on FUSE, io_timeout 1): {took:.1f} s")
