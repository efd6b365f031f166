"""Storage server connections on real directories and a real ext4 loop device.

NFS is not tested by mounting: no NFS server runs here (ENVIRONMENT.md). Its mount
options are checked as the argument mount(8) would get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.loopdev import loop_device
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.connections import (
    ConnectionStore,
    ServerConnection,
    connect,
    connected_roots,
    disconnect,
    mounted_at,
    normalize_spec,
)
from hostvisor.actors.storage.errors import StorageDomainTypeError

LOCALFS, POSIXFS, NFS, ISCSI = 4, 6, 1, 3
MOUNT_ERROR, NOT_A_DIRECTORY, NO_PERMISSION = 477, 1000, 469
CONN_ID = "9a1f2a3c-63e4-4b5e-8b1d-1f6e1c1c0001"


@pytest.fixture
def mount_root(short_dir: Path) -> Path:
    return short_dir / "data-center" / "mnt"


def _local(path: Path, conn_id: str = CONN_ID) -> ServerConnection:
    return ServerConnection.from_wire(LOCALFS, {"id": conn_id, "connection": str(path)})


def _posix(device: str, **params: str) -> ServerConnection:
    return ServerConnection.from_wire(
        POSIXFS, {"id": CONN_ID, "connection": device, "vfs_type": "ext4", **params}
    )


# -- parsing ---------------------------------------------------------------------------------


def test_from_wire_refuses_missing_fields_and_unsupported_types():
    for params in ({}, {"id": CONN_ID}, {"connection": "/x"}, {"id": CONN_ID, "connection": " "}):
        with pytest.raises(InvalidArgument) as raised:
            ServerConnection.from_wire(LOCALFS, params)
        assert raised.value.code == 91
    for kind in (ISCSI, 2, 99, "x"):
        with pytest.raises(StorageDomainTypeError) as typed:
            ServerConnection.from_wire(kind, {"id": CONN_ID, "connection": "/x"})  # type: ignore[arg-type]
        assert typed.value.code == 372
    with pytest.raises(InvalidArgument):
        ServerConnection.from_wire(
            NFS, {"id": CONN_ID, "connection": "h:/e", "protocol_version": "v4"}
        )


def test_mount_specs_are_normalized_so_one_export_has_one_mount_point():
    assert normalize_spec("server:/export//data/") == "server:/export/data"
    assert normalize_spec("/dev//loop3") == "/dev/loop3"
    a = ServerConnection.from_wire(NFS, {"id": "a", "connection": "server:/export/"})
    b = ServerConnection.from_wire(NFS, {"id": "b", "connection": "server://export"})
    assert a.mount_point(Path("/m")) == b.mount_point(Path("/m")) == Path("/m/server:_export")


def test_nfs_mount_options_are_vdsms():
    plain = ServerConnection.from_wire(NFS, {"id": "a", "connection": "server:/export"})
    assert plain.mount_type() == "nfs"
    assert plain.mount_options() == "soft,nosharecache,timeo=100,retrans=3,nolock"
    tuned = ServerConnection.from_wire(
        NFS,
        {
            "id": "a",
            "connection": "server:/export",
            "protocol_version": "4.1",
            "timeout": "600",
            "retrans": 6,
            "mnt_options": "sec=sys",
        },
    )
    assert tuned.mount_options() == (
        "soft,nosharecache,timeo=600,retrans=6,nfsvers=4,minorversion=1,sec=sys"
    )


# -- LOCALFS -----------------------------------------------------------------------------------


def test_localfs_links_the_directory_and_is_idempotent(short_dir: Path, mount_root: Path):
    directory = short_dir / "exports" / "sd_1"
    directory.mkdir(parents=True)
    conn = _local(directory)
    link = mount_root / f"{str(directory).replace('_', '__').replace('/', '_')}"

    assert connect(conn, mount_root) == 0
    assert link.is_symlink()
    assert link.readlink() == directory
    (link / "written-through-link").write_text("x")
    assert (directory / "written-through-link").read_text() == "x"
    assert connect(conn, mount_root) == 0  # again: nothing changes
    assert connected_roots(mount_root) == [link]

    assert disconnect(conn, mount_root) == 0
    assert not link.exists()
    assert not link.is_symlink()
    assert directory.is_dir()  # the data is never touched
    assert connected_roots(mount_root) == []
    assert disconnect(conn, mount_root) == 0  # not connected: still 0, as VDSM


def test_localfs_replaces_a_stale_link(short_dir: Path, mount_root: Path):
    directory = short_dir / "sd"
    directory.mkdir()
    conn = _local(directory)
    mount_root.mkdir(parents=True)
    conn.mount_point(mount_root).symlink_to(short_dir / "elsewhere")
    assert connect(conn, mount_root) == 0
    assert conn.mount_point(mount_root).readlink() == directory


def test_localfs_bad_directory_gets_vdsms_codes(short_dir: Path, mount_root: Path):
    assert connect(_local(short_dir / "missing"), mount_root) == NOT_A_DIRECTORY
    regular = short_dir / "file"
    regular.write_text("")
    assert connect(_local(regular), mount_root) == NOT_A_DIRECTORY
    assert connected_roots(mount_root) == []


NOBODY = 65534
CONNECT_AS_NOBODY = """
import os, sys
from pathlib import Path
from hostvisor.actors.storage.connections import ServerConnection, connect
os.setgroups([]); os.setgid(65534); os.setuid(65534)
conn = ServerConnection.from_wire(4, {"id": "c", "connection": sys.argv[1]})
print(connect(conn, Path(sys.argv[2])))
"""


def test_localfs_unreadable_directory_is_a_permission_error(short_dir: Path, mount_root: Path):
    """The check is the agent's user's: run `connect` as nobody (root passes every access)."""
    short_dir.chmod(0o755)
    mount_root.mkdir(parents=True)
    for made in (mount_root.parent, mount_root):
        made.chmod(0o777)
    locked = short_dir / "locked"
    locked.mkdir(mode=0o700)  # root's, not nobody's
    readable = short_dir / "readable"
    readable.mkdir()
    readable.chmod(0o777)  # mkdir's mode is cut by the umask

    def connect_as_nobody(directory: Path) -> int:
        if os.geteuid() != 0:
            return connect(_local(directory), mount_root)
        done = subprocess.run(
            [sys.executable, "-c", CONNECT_AS_NOBODY, str(directory), str(mount_root)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout.strip())

    assert connect_as_nobody(locked) == NO_PERMISSION
    assert connect_as_nobody(readable) == 0


# -- POSIXFS on a real ext4 loop device ----------------------------------------------------


def test_posixfs_mounts_writes_and_unmounts_a_loop_device(short_dir: Path, mount_root: Path):
    with loop_device(short_dir / "disk.img") as device:
        conn = _posix(device, mnt_options="noatime")
        target = conn.mount_point(mount_root)

        assert connect(conn, mount_root) == 0
        record = mounted_at(target)
        assert record is not None
        assert (record.source, record.fs_type) == (device, "ext4")
        (target / "hello").write_text("through the mount")
        assert connected_roots(mount_root) == [target]

        assert connect(conn, mount_root) == 0  # idempotent: not mounted twice
        assert sum(1 for line in _mountinfo() if f" {target} " in line) == 1

        assert disconnect(conn, mount_root) == 0
        assert mounted_at(target) is None
        assert all(f" {target} " not in line for line in _mountinfo())
        assert not target.exists()  # the mount point directory is removed too
        assert connected_roots(mount_root) == []
        assert disconnect(conn, mount_root) == 0  # not mounted: 0 (see the module docs)

        # the data really went to the device: mount it again and read it back
        assert connect(conn, mount_root) == 0
        assert (target / "hello").read_text() == "through the mount"
        assert disconnect(conn, mount_root) == 0


def test_posixfs_bad_device_is_a_mount_error(short_dir: Path, mount_root: Path):
    conn = _posix(str(short_dir / "no-such-device"))
    assert connect(conn, mount_root) == MOUNT_ERROR
    assert not conn.mount_point(mount_root).exists()  # the empty mount point is removed
    assert connected_roots(mount_root) == []


def test_posixfs_wrong_fs_type_is_a_mount_error(short_dir: Path, mount_root: Path):
    with loop_device(short_dir / "disk.img") as device:
        conn = _posix(device, vfs_type="xfs")
        assert connect(conn, mount_root) == MOUNT_ERROR
        assert mounted_at(conn.mount_point(mount_root)) is None


def test_posixfs_refuses_to_stack_over_another_source(short_dir: Path, mount_root: Path):
    with (
        loop_device(short_dir / "a.img") as first,
        loop_device(short_dir / "b.img") as second,
    ):
        conn = _posix(second)
        target = conn.mount_point(mount_root)
        target.mkdir(parents=True)
        subprocess.run(["mount", first, str(target)], check=True)
        try:
            assert connect(conn, mount_root) == MOUNT_ERROR
            assert disconnect(conn, mount_root) == MOUNT_ERROR  # not ours to unmount
            record = mounted_at(target)
            assert record is not None
            assert record.source == first
        finally:
            subprocess.run(["umount", str(target)], check=True)


def _mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


# -- the store ---------------------------------------------------------------------------------


def test_store_persists_atomically_and_replaces_by_id(short_dir: Path):
    path = short_dir / "state" / "storage-connections.json"
    store = ConnectionStore(path)
    assert store.all() == []
    a = ServerConnection.from_wire(LOCALFS, {"id": "a", "connection": "/srv/a"})
    b = ServerConnection.from_wire(
        NFS, {"id": "b", "connection": "h:/e", "retrans": 5, "protocol_version": "4"}
    )
    store.add(a)
    store.add(b)
    assert ConnectionStore(path).all() == [a, b]  # a new store (a restart) reads the same
    moved = ServerConnection.from_wire(LOCALFS, {"id": "a", "connection": "/srv/moved"})
    store.add(moved)
    assert store.all() == [b, moved]
    assert store.remove("a") is True
    assert store.remove("a") is False
    assert list(store) == [b]
    assert json.loads(path.read_text())["connections"][0]["domain_type"] == NFS
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_store_survives_a_corrupt_file(short_dir: Path):
    path = short_dir / "connections.json"
    path.write_text("{not json")
    store = ConnectionStore(path)
    assert store.all() == []
    conn = ServerConnection.from_wire(LOCALFS, {"id": "a", "connection": "/srv/a"})
    store.add(conn)
    assert store.all() == [conn]
