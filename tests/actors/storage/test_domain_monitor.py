"""Domain monitoring as the Engine reads it: Host.getStats.storageDomains, getStorageRepoStats.

Real mounts only. A domain whose storage hangs is played by a FUSE file system that
never answers (mounted over the domain's `dom_md`, so every lookup in it blocks in
the kernel, as on a hung NFS server); a domain whose storage vanishes is a POSIXFS
domain on an ext4 loop device unmounted behind the agent's back. Either turns
invalid (a non-zero code, a growing lastCheck) within two check intervals while
every other verb keeps answering, and comes back once healed.

Each entry is parsed as the Engine parses it (VdsBrokerObjectsBuilder.updateVDSDomainData:
`(Integer) code`, `Double.parseDouble((String) lastCheck)` and `delay`, `(Boolean)`
valid, actual and acquired).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.components import need
from harness.engine import POSIXFS, DataCenter, local_data_center, new_id, storage_host
from harness.loopdev import loop_device
from harness.waiting import wait_for
from hostvisor.actors.storage.connections_actor import SCAN_WAIT
from hostvisor.actors.storage.model import mount_point
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

INTERVAL = 0.5
"""The check interval these tests run with (`[irs] sd_health_check_delay`)."""
SLACK = 1.0
"""Seconds allowed beyond two intervals for the timer and the polling (a loaded machine)."""
ANSWER = 2.0
"""Seconds any other verb may take while a domain hangs."""


def engine_parse(entry: dict[str, Any]) -> dict[str, Any]:
    """What the Engine reads of one domain's entry; fails where its casts would throw."""
    assert type(entry["code"]) is int, entry
    assert isinstance(entry["lastCheck"], str), entry
    assert isinstance(entry["delay"], str), entry
    for flag in ("valid", "actual", "acquired"):
        assert type(entry[flag]) is bool, entry
    assert type(entry["version"]) is int, entry
    return {
        "code": entry["code"],
        "lastCheck": float(entry["lastCheck"]),
        "delay": float(entry["delay"]),
        "valid": entry["valid"],
        "actual": entry["actual"],
        "acquired": entry["acquired"],
    }


def domain_entry(cli: Client, sd: str) -> dict[str, Any] | None:
    """The domain's entry in Host.getStats (parsed as the Engine does), or None."""
    entry = cli.Host.getStats()["storageDomains"].get(sd)
    return None if entry is None else engine_parse(entry)


class BlockingFuse:
    """A FUSE file system that never answers, mounted over `target` until `heal()`.

    The kernel sends FUSE_INIT and waits; every access under `target` waits with it.
    `heal()` closes the device (the kernel fails the waiting calls with ENOTCONN) and
    lazily unmounts, so `target`'s own contents show again.
    """

    def __init__(self, target: Path) -> None:
        need(Path("/dev/fuse").exists(), "no /dev/fuse: FUSE unavailable")
        self.target = target
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        libc = ctypes.CDLL(None, use_errno=True)
        options = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0".encode()
        if libc.mount(b"hvblock", str(target).encode(), b"fuse.hvblock", 0, options) != 0:
            error = ctypes.get_errno()
            os.close(self.fd)
            need(False, f"cannot mount a FUSE file system here: {os.strerror(error)}")
        self.healed = False

    def heal(self) -> None:
        if not self.healed:
            self.healed = True
            os.close(self.fd)
            subprocess.run(["umount", "-l", str(self.target)], check=False, timeout=30)


def answers_in_time(call: Callable[[], Any]) -> float:
    """Run `call`; return how long it took (it must not raise)."""
    started = time.monotonic()
    call()
    return time.monotonic() - started


@pytest.fixture
def host(short_dir: Path) -> Iterator[tuple[Client, DataCenter, DataCenter]]:
    """A host with a LOCALFS data center (SPM) and a second, idle LOCALFS domain."""
    dc = local_data_center(short_dir / "sd")
    other = local_data_center(short_dir / "sd2")
    with storage_host(short_dir, storage_check_interval=INTERVAL) as cli:
        dc.setup(cli)
        other.connect_server(cli)
        other.create_domain(cli)
        yield cli, dc, other


def test_every_monitored_domain_is_reported_with_vdsms_types(host):
    cli, dc, other = host
    member = wait_for(
        lambda: (e := domain_entry(cli, dc.sd)) and e["actual"] and e["acquired"] and e,
        10,
        "the pool's domain to be checked and acquired",
    )
    assert member["code"] == 0
    assert member["valid"] is True
    assert member["lastCheck"] < 3 * INTERVAL
    idle = wait_for(lambda: (e := domain_entry(cli, other.sd)) and e["actual"] and e, 10, "idle")
    assert idle["valid"] is True
    assert idle["acquired"] is False  # not in the connected pool: no host id held

    repo = cli.Host.getStorageRepoStats()
    assert set(repo) >= {dc.sd, other.sd}
    only = cli.Host.getStorageRepoStats(domains=[other.sd])
    assert set(only) == {other.sd}
    entry = engine_parse(only[other.sd])
    assert entry["valid"] is True
    assert set(only[other.sd]) == {
        "code", "lastCheck", "delay", "valid", "version", "acquired", "actual",
    }  # fmt: skip
    assert only[other.sd]["version"] == 5


def test_a_hung_mount_turns_invalid_within_two_intervals_and_heals(host):
    cli, dc, other = host
    wait_for(lambda: (e := domain_entry(cli, other.sd)) and e["actual"] and e["valid"], 10, "ok")
    md = Path(other.connection["connection"]) / other.sd / "dom_md"

    fuse = BlockingFuse(md)
    try:
        hung_at = time.monotonic()
        invalid = wait_for(
            lambda: (e := domain_entry(cli, other.sd)) and not e["valid"] and e,
            10,
            "the hung domain to turn invalid",
        )
        took = time.monotonic() - hung_at
        assert took <= 2 * INTERVAL + SLACK, f"invalid only after {took:.2f} s"
        assert invalid["code"] != 0
        assert invalid["actual"] is True
        assert invalid["acquired"] is False

        # lastCheck grows while the mount hangs; everything else answers meanwhile.
        first = invalid["lastCheck"]
        slowest = max(
            answers_in_time(cli.Host.ping),
            answers_in_time(cli.Host.getStats),
            answers_in_time(lambda: cli.Host.getStorageRepoStats(domains=[other.sd])),
            answers_in_time(lambda: cli.StorageDomain.getInfo(storagedomainID=dc.sd)),
            answers_in_time(lambda: cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)),
            answers_in_time(lambda: cli.StoragePool.getInfo(storagepoolID=dc.sp)),
        )
        assert slowest < ANSWER, f"a verb took {slowest:.2f} s while a domain hung"
        # A scan waits SCAN_WAIT s once for the hung connection, then leaves it out at once.
        first_scan = answers_in_time(cli.Host.getStorageDomains)
        assert first_scan < SCAN_WAIT + ANSWER
        assert answers_in_time(cli.Host.getStorageDomains) < ANSWER
        listed = cli.Host.getStorageDomains()
        assert dc.sd in listed
        assert other.sd not in listed
        later = wait_for(
            lambda: (e := domain_entry(cli, other.sd)) and e["lastCheck"] >= first + INTERVAL and e,
            10,
            "lastCheck to grow",
        )
        assert later["valid"] is False
        healthy = domain_entry(cli, dc.sd)
        assert healthy is not None
        assert healthy["valid"] is True
        assert healthy["lastCheck"] < 3 * INTERVAL
    finally:
        fuse.heal()

    healed = wait_for(
        lambda: (e := domain_entry(cli, other.sd)) and e["valid"] and e,
        10,
        "the domain to be valid again",
    )
    assert healed["code"] == 0
    assert healed["lastCheck"] < 3 * INTERVAL


@pytest.fixture
def posix_host(short_dir: Path) -> Iterator[tuple[Client, DataCenter, Path, str]]:
    """A POSIXFS data center (SPM) on an ext4 loop device; yields its mount point too."""
    config = load_config(
        state_dir=short_dir / "state",
        libvirt_uri="test:///default",
        management_port=0,
        storage_check_interval=INTERVAL,
    )
    with (
        loop_device(short_dir / "posix.img", size=64 * 1024 * 1024) as device,
        EmbeddedHost(config) as embedded,
        embedded.client(timeout=30) as cli,
    ):
        dc = DataCenter({"id": new_id(), "connection": device, "vfs_type": "ext4"}, POSIXFS)
        dc.setup(cli)
        yield cli, dc, mount_point(config.mount_root, device), device


def test_a_vanished_mount_turns_invalid_and_comes_back_when_remounted(posix_host):
    cli, dc, where, device = posix_host
    wait_for(lambda: (e := domain_entry(cli, dc.sd)) and e["actual"] and e["valid"], 10, "ok")

    subprocess.run(["umount", "-l", str(where)], check=True, timeout=30)
    gone_at = time.monotonic()
    invalid = wait_for(
        lambda: (e := domain_entry(cli, dc.sd)) and not e["valid"] and e,
        10,
        "the vanished domain to turn invalid",
    )
    assert time.monotonic() - gone_at <= 2 * INTERVAL + SLACK
    assert invalid["code"] != 0
    assert cli.Host.ping() is True

    subprocess.run(["mount", "-t", "ext4", device, str(where)], check=True, timeout=30)
    healed = wait_for(
        lambda: (e := domain_entry(cli, dc.sd)) and e["valid"] and e,
        10,
        "the remounted domain to be valid again",
    )
    assert healed["code"] == 0
    assert healed["acquired"] is True


def test_the_fuse_blocker_blocks_until_healed():
    """The harness itself: a stat under the mount blocks, and returns once healed."""
    target = Path(f"/tmp/hv-fuse-{new_id()[:8]}")
    target.mkdir()
    try:
        (target / "file").write_text("x")
        fuse = BlockingFuse(target)
        outcome: dict[str, Any] = {}

        def probe() -> None:
            try:
                (target / "file").stat()
                outcome["result"] = "answered"
            except OSError as error:
                outcome["result"] = error.errno

        thread = threading.Thread(target=probe, daemon=True)  # blocks in the kernel on purpose
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()
        fuse.heal()
        thread.join(5.0)
        assert not thread.is_alive()
        assert (target / "file").read_text() == "x"
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, timeout=30, capture_output=True)
        (target / "file").unlink(missing_ok=True)
        target.rmdir()
