"""A libvirtd with node devices, for the host device and fencing tests.

The embedded `qemu:///embed` has no node device driver, so these tests start a
real libvirtd (its udev node device backend sees this machine's devices) in a
private mount namespace: /etc/libvirt, /var/run/libvirt, /var/lib/libvirt and
/var/log/libvirt are the test's own. Reached through its socket's path; stopped
by the pid the test started.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.components import need
from harness.daemons import Daemon
from hostvisor.actors.admin import ksm
from hostvisor.actors.hypervisor.connection import open_connection

KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")

QEMU_CONF = 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\nstdio_handler = "file"\n'


@dataclass(frozen=True)
class SystemLibvirt:
    """A running private libvirtd: its URI, an open connection, its directory."""

    uri: str
    conn: Any
    directory: Path


@pytest.fixture(scope="session")
def system_libvirt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemLibvirt]:
    need(shutil.which("libvirtd") is not None, "libvirtd is not installed")
    need(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    import libvirt  # noqa: PLC0415 - needed only here

    private = tmp_path_factory.mktemp("libvirtd")
    mounts = {
        "/etc/libvirt": private / "etc",
        "/var/run/libvirt": private / "run",
        "/var/lib/libvirt": private / "lib",
        "/var/log/libvirt": private / "log",
    }
    for mount_point, source in mounts.items():
        source.mkdir()
        Path(mount_point).mkdir(parents=True, exist_ok=True)
    (private / "etc" / "qemu.conf").write_text(QEMU_CONF)
    (private / "etc" / "libvirtd.conf").write_text('unix_sock_group = "root"\n')
    binds = " && ".join(f"mount --bind {source} {target}" for target, source in mounts.items())
    daemon = Daemon(
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"{binds} && exec libvirtd --pid-file {private}/pid",
        ],
        private / "libvirtd.log",
    )  # fmt: skip
    socket = private / "run" / "libvirt-sock"
    uri = f"qemu+unix:///system?socket={socket}"
    try:
        daemon.wait_ready(socket.exists, timeout=30)
        conn = open_connection(uri)
        try:
            yield SystemLibvirt(uri=uri, conn=conn, directory=private)
        finally:
            for domain in conn.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):
                    if domain.isActive():
                        domain.destroy()
                    domain.undefine()
            conn.close()
    finally:
        daemon.stop()


@pytest.fixture
def ksm_restored() -> Iterator[dict[str, int]]:
    """KSM's knobs as they were; written back after the test (stop first)."""
    if not ksm.available():
        pytest.skip("this kernel has no KSM (/sys/kernel/mm/ksm)")
    saved = {knob: int((ksm.KSM_ROOT / knob).read_text()) for knob in KNOBS}
    yield saved
    ksm.write({"run": 0})
    with contextlib.suppress(OSError):  # EBUSY only if pages are still shared
        ksm.write({"merge_across_nodes": saved["merge_across_nodes"]})
    ksm.write({key: saved[key] for key in ("pages_to_scan", "sleep_millisecs", "run")})
    now = {knob: int((ksm.KSM_ROOT / knob).read_text()) for knob in KNOBS}
    assert now == saved
