"""What the device tests share: one in-process host, and the guests they drive.

- `host` / `cli`: an embedded host (qemu:///embed) for this directory, and a client
  that destroys every VM it leaves.
- `halting_vm`: the Engine's domain XML (conftest `engine_xml`) of a guest whose disk
  halts at once (KVM where it works), with VNC and SPICE consoles, a NIC on a
  bridge, and its disk named by storage ids; created through the wire.
- `bridges`: two Linux bridges to move a NIC between (removed afterwards).
- `agent_guest`: the tiny Linux guest (conftest `tiny_guest`, TCG) with a
  `/sbin/shutdown` added (an extra cpio appended to its initramfs, which the kernel
  unpacks after the first): qemu-ga runs `/sbin/shutdown -h -P|-r +0 …` for
  guest-shutdown, which busybox has no applet for.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    PREALLOCATED,
    RAW,
    DataCenter,
    local_data_center,
    succeeded,
    write_halting_boot_sector,
)
from harness.hosts import VM_TEST_SETTINGS, client_destroying_vms, embedded_host
from harness.waiting import wait_for
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost

SHUTDOWN_SCRIPT = b"""#!/bin/busybox sh
# qemu-ga: /sbin/shutdown -h -P|-H|-r +0 "hypervisor initiated ..."
for a in "$@"; do [ "$a" = -r ] && exec /bin/busybox reboot -f; done
exec /bin/busybox poweroff -f
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    """One host per module: a package-wide one would outlive the package in a run of many
    (pytest ends package fixtures last), and two hosts on one embed root in one process
    collide on libvirt's event registrations."""
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with client_destroying_vms(host) as client:
        yield client


def up(cli: Client, vm_id: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the VM has left WaitForLaunch; its stats."""
    stats: dict[str, Any] = wait_for(
        lambda: (s := cli.VM.getStats(vmID=vm_id)[0])["status"] != "WaitForLaunch" and s,
        timeout,
        "the launch",
    )
    assert stats["status"] in ("Up", "Powering up"), stats
    return stats


@dataclass(frozen=True, slots=True)
class Bridges:
    """Two bridges a NIC can move between."""

    first: str
    second: str


@pytest.fixture
def bridges() -> Iterator[Bridges]:
    suffix = uuid.uuid4().hex[:5]
    made = Bridges(f"hv4a{suffix}", f"hv4b{suffix}")
    for name in (made.first, made.second):
        subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
    yield made
    for name in (made.first, made.second):
        subprocess.run(["ip", "link", "del", name], check=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeDisk:
    """A VM's disk as the Engine names it: a volume made by this host's storage verbs."""

    path: Path
    pool_id: str
    domain_id: str
    image_id: str
    volume_id: str
    format: str = "raw"


@pytest.fixture(scope="module")
def data_center(host: EmbeddedHost) -> Iterator[DataCenter]:
    """A pool with one local data domain on `host`, made the Engine's way (this host SPM)."""
    base = Path(tempfile.mkdtemp(prefix="hv-dcdev-", dir="/tmp"))  # short: sockets under it
    dc = local_data_center(base / "domain")
    with host.client(timeout=60) as client:
        dc.setup(client)
    yield dc
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def halting_vm(
    cli: Client, data_center: DataCenter, engine_xml: Callable[..., str], accelerator: Any
) -> Callable[..., tuple[str, VolumeDisk]]:
    """`halting_vm(nic=…, spice=…)`: an Engine VM made through the wire; (id, its disk).

    Its disk is a raw volume the host's storage verbs made, whose boot sector halts.
    """

    def make(nic: str = "", **options: Any) -> tuple[str, VolumeDisk]:
        vm_id, img, vol = (str(uuid.uuid4()) for _ in range(3))
        succeeded(cli, data_center.create_volume(cli, img, vol, fmt=RAW, prealloc=PREALLOCATED))
        path = data_center.prepare(cli, img, vol)
        write_halting_boot_sector(path)
        disk = VolumeDisk(
            path=Path(path),
            pool_id=data_center.sp,
            domain_id=data_center.sd,
            image_id=img,
            volume_id=vol,
        )
        xml = engine_xml(
            vm_id=vm_id,
            name=f"dev-{vm_id[:8]}",
            domain_type="kvm" if accelerator.value == "kvm" else "qemu",
            disk=disk,
            **options,
        ).replace("</devices>", nic + "</devices>")
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        up(cli, vm_id)
        live = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
        source = ET.fromstring(live).find("devices/disk/source")  # noqa: S314 - libvirt's XML
        assert source is not None
        return vm_id, VolumeDisk(**{**_fields(disk), "path": Path(source.get("file", ""))})

    return make


def _fields(disk: VolumeDisk) -> dict[str, Any]:
    return {name: getattr(disk, name) for name in VolumeDisk.__dataclass_fields__}


# -- the tiny guest, with /sbin/shutdown ---------------------------------------------------


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A `newc` cpio archive of (name, mode, body) entries, with its trailer."""
    data = bytearray()
    for ino, (name, mode, body) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(encoded), 0)
        data += b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
        data += b"\0" * (-len(data) % 4) + body
        data += b"\0" * (-len(data) % 4)
    return bytes(data)


@dataclass(frozen=True, slots=True)
class AgentGuest:
    """A kernel and an initramfs whose qemu-ga can shut the guest down and reboot it."""

    kernel: Path
    initrd: Path


@pytest.fixture(scope="session")
def agent_guest(tiny_guest: Any, tmp_path_factory: pytest.TempPathFactory) -> AgentGuest:
    extra = _newc(
        [
            ("sbin", stat.S_IFDIR | 0o755, b""),
            ("sbin/shutdown", stat.S_IFREG | 0o755, SHUTDOWN_SCRIPT),
        ]
    )
    initrd = tmp_path_factory.mktemp("agent-guest") / "initrd.img"
    first = Path(tiny_guest.initrd).read_bytes()
    padding = b"\0" * (-len(first) % 512)  # the kernel skips NULs between archives
    initrd.write_bytes(first + padding + gzip.compress(extra))
    return AgentGuest(kernel=Path(tiny_guest.kernel), initrd=initrd)


@pytest.fixture
def agent_vm(
    cli: Client, engine_xml: Callable[..., str], agent_guest: AgentGuest
) -> Callable[[], str]:
    """`agent_vm()`: an Engine VM of the agent guest (TCG, VNC), up to its agent; its id."""

    def make() -> str:
        vm_id = str(uuid.uuid4())
        xml = engine_xml(
            vm_id=vm_id,
            name=f"agent-{vm_id[:8]}",
            domain_type="qemu",  # TCG: this host's nested KVM hangs Linux guests
            memory_mib=256,
            spice=False,
        )
        boot = (
            f"<initrd>{agent_guest.initrd}</initrd><kernel>{agent_guest.kernel}</kernel>"
            "<cmdline>console=ttyS0 panic=-1</cmdline>"
        )
        xml = xml.replace('<smbios mode="sysinfo"/>', boot + '<smbios mode="sysinfo"/>')
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        wait_for(
            lambda: bool(cli.VM.getStats(vmID=vm_id)[0].get("guestName")), 120, "the guest agent"
        )
        return vm_id

    return make
