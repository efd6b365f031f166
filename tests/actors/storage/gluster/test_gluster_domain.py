"""GLUSTERFS (storage type 7) for real: a glusterd volume mounted with the FUSE client.

The Engine's flow over a real one-brick GlusterFS volume (conftest.py): the
connection as the Engine's StorageConnectionHelper sends it, a v5 data domain on the
mount, a pool, SPM, a volume; what lands on the brick is what the host wrote through
the mount. Bad input answers VDSM's codes and mounts nothing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness.agent import Agent, kill9
from harness.engine import (
    BLANK,
    COW,
    RAW,
    DataCenter,
    MiB,
    engine_vm_xml,
    new_id,
    storage_host,
    succeeded,
    write_halting_boot_sector,
)
from harness.guests import StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.storage.connections import (
    ServerConnection,
    gluster_brick_hosts,
    gluster_options,
    mounted_at,
    mounts,
)
from hostvisor.actors.storage.model import DomainType
from hostvisor.api.client import ServerError, connect

from .conftest import SERVER, GlusterVolume, client_pid, fuse_client_reaped

GLUSTERFS = 7
MOUNT_FAILED = 477
INVALID_PARAMETER = 91  # InvalidArgument, as for any other malformed connection

pytestmark = pytest.mark.timeout(300)


def engine_connection(spec: str, log_file: Path, **extra: str) -> dict[str, Any]:
    """One connectionParams entry as the Engine's StorageConnectionHelper builds it for a
    GlusterFS connection: every value a string, iSCSI keys empty, vfs_type glusterfs; the
    user's mount options carry the FUSE client's log file (so the test knows its pid)."""
    return {
        "id": new_id(),
        "connection": spec,
        "port": "",
        "iqn": "",
        "user": "",
        "password": "",
        "ipv6_enabled": "false",
        "vfs_type": "glusterfs",
        "mnt_options": f"log-file={log_file}",
        **extra,
    }


def gluster_mount_point(state: Path, spec: str) -> Path:
    """VDSM's mount point of a GlusterFS connection: `mnt/glusterSD/<server>:_<volume>`."""
    return state / "data-center" / "mnt" / "glusterSD" / spec.replace("_", "__").replace("/", "_")


def test_connect_mounts_the_volume_under_glustersd_and_disconnect_unmounts_it(
    tmp_path: Path, gluster: GlusterVolume
) -> None:
    log_file = tmp_path / "fuse.log"
    conn = engine_connection(gluster.spec, log_file)
    target = gluster_mount_point(tmp_path / "state", gluster.spec)
    with fuse_client_reaped(log_file, gluster.spec), storage_host(tmp_path) as cli:
        started = time.monotonic()
        answer = cli.StoragePool.connectStorageServer(
            storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[conn]
        )
        connect_s = time.monotonic() - started
        assert answer == [{"id": conn["id"], "status": 0}]
        record = mounted_at(target)
        assert record is not None
        assert (record.source, record.fs_type) == (gluster.spec, "fuse.glusterfs")
        pid = wait_for(lambda: client_pid(log_file), 10, "the FUSE client's pid in its log")
        (target / "probe").write_bytes(b"through the FUSE client")
        assert (gluster.brick / "probe").read_bytes() == b"through the FUSE client"
        # Connecting again is idempotent: nothing is stacked on the mount.
        again = cli.StoragePool.connectStorageServer(
            storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[conn]
        )
        assert again == answer
        (target / "probe").unlink()

        answer = cli.StoragePool.disconnectStorageServer(
            storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[conn]
        )
        assert answer == [{"id": conn["id"], "status": 0}]
        assert mounted_at(target) is None
        assert not target.exists()
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the FUSE client to end")
    print(f"\nGLUSTERFS connectStorageServer (mount.glusterfs): {connect_s * 1000:.0f} ms")


def test_the_engine_flow_makes_a_data_domain_and_a_volume_on_the_brick(
    tmp_path: Path, gluster: GlusterVolume
) -> None:
    log_file = tmp_path / "fuse.log"
    dc = DataCenter(engine_connection(gluster.spec, log_file), GLUSTERFS)
    img, vol = new_id(), new_id()
    with fuse_client_reaped(log_file, gluster.spec), storage_host(tmp_path) as cli:
        dc.setup(cli)  # connect, StorageDomain.create, pool, connect, spmStart
        domains = cli.Host.getStorageDomains(storagepoolID=dc.sp, domainClass=1)
        assert domains == [dc.sd]
        info = cli.StorageDomain.getInfo(storagedomainID=dc.sd)
        assert info["type"] == "GLUSTERFS"
        assert info["remotePath"] == gluster.spec
        succeeded(cli, dc.create_volume(cli, img, vol, size=8 * MiB, fmt=COW))
        path = Path(dc.prepare(cli, img, vol))
        on_brick = gluster.brick / dc.sd / "images" / img / vol
        assert on_brick.is_file()  # the volume lives on the gluster server's brick
        assert path.resolve() == (
            gluster_mount_point(tmp_path / "state", gluster.spec) / dc.sd / "images" / img / vol
        )
        subprocess.run(["qemu-img", "check", "-U", str(path)], check=True, capture_output=True)
        stats = cli.Host.getStorageRepoStats(domains=[dc.sd])
        assert stats[dc.sd]["valid"] is True
        cli.StoragePool.spmStop(storagepoolID=dc.sp)
        cli.StoragePool.disconnect(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp)
        answer = cli.StoragePool.disconnectStorageServer(
            storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[dc.connection]
        )
        assert answer == [{"id": dc.connection["id"], "status": 0}]


def test_a_volume_the_server_does_not_have_answers_mount_failed(
    tmp_path: Path, gluster: GlusterVolume
) -> None:
    log_file = tmp_path / "fuse.log"
    spec = f"{SERVER}:/no-such-volume"
    conn = engine_connection(spec, log_file)
    with fuse_client_reaped(log_file, spec), storage_host(tmp_path) as cli:
        answer = cli.StoragePool.connectStorageServer(
            storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[conn]
        )
        assert answer == [{"id": conn["id"], "status": MOUNT_FAILED}]
        target = gluster_mount_point(tmp_path / "state", spec)
        assert mounted_at(target) is None
        assert not target.exists()
        assert cli.Host.getStorageDomains() == []


@pytest.mark.parametrize(
    "spec", ["no-volume-here", f"{SERVER}:/", ":/hv", f"{SERVER}:/a/b"], ids=str
)
def test_a_connection_that_is_not_server_volume_is_refused(tmp_path: Path, spec: str) -> None:
    conn = engine_connection(spec, tmp_path / "fuse.log")
    with storage_host(tmp_path) as cli:
        with pytest.raises(ServerError) as raised:
            cli.StoragePool.connectStorageServer(
                storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[conn]
            )
        assert raised.value.code == INVALID_PARAMETER
    assert not (tmp_path / "state" / "data-center" / "mnt" / "glusterSD").exists()


def test_backup_volfile_servers_come_from_the_volumes_bricks(gluster: GlusterVolume) -> None:
    assert gluster_brick_hosts(SERVER, gluster.name) == [SERVER]
    assert gluster_brick_hosts(SERVER, "no-such-volume") is None
    one_brick = ServerConnection.from_wire(
        GLUSTERFS, {"id": new_id(), "connection": gluster.spec, "mnt_options": "ro"}
    )
    assert gluster_options(one_brick) == "ro"  # its only brick host is the server itself
    given = ServerConnection.from_wire(
        GLUSTERFS,
        {"id": new_id(), "connection": gluster.spec, "mnt_options": "backup-volfile-servers=a:b"},
    )
    assert gluster_options(given) == "backup-volfile-servers=a:b"
    assert given.domain_type is DomainType.GLUSTERFS
    assert given.mount_type() == "glusterfs"


@pytest.mark.slow
@pytest.mark.kvm
@pytest.mark.libvirt
def test_a_guest_runs_from_a_disk_on_the_gluster_domain(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    embed_root: Path,
    accelerator: Any,
    gluster: GlusterVolume,
) -> None:
    log_file = tmp_path / "fuse.log"
    dc = DataCenter(engine_connection(gluster.spec, log_file), GLUSTERFS)
    img, base, top = new_id(), new_id(), new_id()
    with (
        fuse_client_reaped(log_file, gluster.spec),
        embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as host,
        host.client(timeout=60) as cli,
    ):
        dc.setup(cli)
        succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=MiB))
        write_halting_boot_sector(dc.prepare(cli, img, base))
        succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, parent=base))
        path = dc.prepare(cli, img, top)
        assert "/glusterSD/" in path
        events = StatusEvents(cli)
        vm_id = new_id()
        xml = engine_vm_xml(
            name="on-gluster", vm_id=vm_id, dc=dc, img=img, vol=top, kind=accelerator.domain_type
        )
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        events.until(vm_id, "Up")
        dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
        assert path in dumped  # QEMU opened the disk through the FUSE mount (cache=none)
        assert (gluster.brick / dc.sd / "images" / img / top).stat().st_size > 0
        cli.VM.destroy(vmID=vm_id)
        assert cli.Image.teardown(
            storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, volumeID=top
        )
        subprocess.run(["qemu-img", "check", str(path)], check=True, capture_output=True)
        cli.StoragePool.spmStop(storagepoolID=dc.sp)
        cli.StoragePool.disconnect(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp)
        answer = cli.StoragePool.disconnectStorageServer(
            storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[dc.connection]
        )
        assert answer == [{"id": dc.connection["id"], "status": 0}]


@pytest.mark.slow
def test_a_killed_agent_finds_its_gluster_domain_mounted_again(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, gluster: GlusterVolume
) -> None:
    log_file = tmp_path / "fuse.log"
    dc = DataCenter(engine_connection(gluster.spec, log_file), GLUSTERFS)
    # A short directory: the embedded libvirt's QMP sockets live under it (108 bytes).
    agent = Agent(tmp_path_factory.mktemp("gk"))
    target = gluster_mount_point(agent.state_dir, gluster.spec)
    with fuse_client_reaped(log_file, gluster.spec):
        try:
            first = agent.start_ready(timeout=120)
            with connect("127.0.0.1", agent.port, timeout=60) as cli:
                dc.setup(cli)
            client = wait_for(lambda: client_pid(log_file), 10, "the FUSE client's pid")
            kill9(first)
            # The FUSE client is the mount's, not the agent's: it outlives the agent.
            assert Path(f"/proc/{client}").exists()
            assert mounted_at(target) is not None
            agent.start_ready(timeout=120)
            with connect("127.0.0.1", agent.port, timeout=60) as cli:
                wait_for(
                    lambda: cli.Host.getStorageDomains() == [dc.sd], 30, "the domain re-adopted"
                )
                dc.connect_server(cli)  # the Engine reconnects: the mount is reused
                assert [r.target for r in mounts()].count(str(target)) == 1
                assert client_pid(log_file) == client
                dc.connect_pool(cli)
                dc.become_spm(cli)
                succeeded(cli, dc.create_volume(cli, new_id(), new_id(), size=MiB, fmt=COW))
                cli.StoragePool.spmStop(storagepoolID=dc.sp)
                cli.StoragePool.disconnect(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp)
                answer = cli.StoragePool.disconnectStorageServer(
                    storagepoolID=BLANK, domainType=GLUSTERFS, connectionParams=[dc.connection]
                )
                assert answer == [{"id": dc.connection["id"], "status": 0}]
        finally:
            agent.stop_all()


@pytest.mark.unit
def test_a_gluster_connection_is_parsed_placed_and_stored_as_vdsm_does(tmp_path: Path) -> None:
    conn = ServerConnection.from_wire(
        GLUSTERFS, {"id": new_id(), "connection": " gl1.example:/data_vol/ ", "port": ""}
    )
    assert conn.connection == "gl1.example:/data_vol"
    assert conn.mount_type() == "glusterfs"  # the Engine sends it; missing, it is implied
    assert conn.mount_point(tmp_path) == tmp_path / "glusterSD" / "gl1.example:_data__vol"
    assert ServerConnection.from_json(conn.to_json()) == conn  # connections.json keeps it
