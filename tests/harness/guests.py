"""Guests that need no OS: a disk whose boot sector halts the CPU at once.

SeaBIOS loads the sector and jumps to it; `cli; hlt; jmp $-1` keeps the vCPU idle,
so many such guests cost almost no CPU (ENVIRONMENT.md).

Also what tests of the VM verbs share: `Guests` makes one guest's disk and domain
XML as the Engine sends it, `StatusEvents` reads the `|virt|VM_status|<id>` events
a client receives, and `qemu_pid` finds a guest's QEMU under an embed root.
"""

from __future__ import annotations

import queue
import subprocess
import time
import uuid as uuids
from pathlib import Path
from typing import Any

import psutil
import pytest

HALT_SECTOR = bytes([0xFA, 0xF4, 0xEB, 0xFD])  # cli; hlt; jmp -1 (back to hlt)


DIRTYING_SECTOR = bytes.fromhex("FAFC31C0BB00108EC331FFB90080F3AB81C3001081FB009075ED40EBE7")
"""A boot sector that rewrites 512 KiB of RAM (0x10000-0x8FFFF) with a new word, forever:

    cli; cld; xor ax,ax
    outer: mov bx,0x1000
    again: mov es,bx; xor di,di; mov cx,0x8000; rep stosw   ; 64 KiB of ax
           add bx,0x1000; cmp bx,0x9000; jne again
           inc ax; jmp outer

Every one of those 128 pages is dirty again at once, whatever a migration sends.
"""


def make_halting_base(directory: Path) -> Path:
    """Write a 1 MiB raw image with the halting boot sector; return it as qcow2."""
    return make_boot_base(directory, HALT_SECTOR, "halt")


def make_boot_base(directory: Path, code: bytes, name: str) -> Path:
    """Write a 1 MiB raw image whose boot sector is `code`; return it as qcow2."""
    raw = directory / f"{name}.raw"
    sector = bytearray(512)
    sector[: len(code)] = code
    sector[510:512] = b"\x55\xaa"
    raw.write_bytes(bytes(sector) + bytes(1024 * 1024 - 512))
    base = directory / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(base)], check=True
    )
    return base


def make_overlay(base: Path, path: Path) -> Path:
    """Create a qcow2 overlay of `base` at `path`, one per guest."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)],
        check=True,
    )
    return path


OVIRT_VM_NS = "http://ovirt.org/vm/1.0"


def ovirt_metadata_xml(*, launch_paused: bool = False, cluster_version: str = "4.7") -> str:
    """The `<metadata>` element the Engine puts in a domain XML (`ovirt-vm:vm`)."""
    paused = "<ovirt-vm:launchPaused>true</ovirt-vm:launchPaused>" if launch_paused else ""
    return (
        f'<metadata><ovirt-vm:vm xmlns:ovirt-vm="{OVIRT_VM_NS}">'
        f"<ovirt-vm:clusterVersion>{cluster_version}</ovirt-vm:clusterVersion>{paused}"
        "</ovirt-vm:vm></metadata>"
    )


def ethernet_nic(tap: str, mac: str) -> str:
    """An unplugged virtio NIC: libvirt creates tap `tap` and needs no bridge."""
    return (
        f"<interface type='ethernet'><mac address='{mac}'/>"
        f"<target dev='{tap}'/><model type='virtio'/></interface>"
    )


def domain_xml(  # noqa: PLR0913 - keyword-only options of one XML
    *,
    name: str,
    uuid: str,
    disk: Path,
    domain_type: str,
    memory_mib: int = 64,
    ovirt_metadata: bool = False,
    launch_paused: bool = False,
    nic: str | None = None,
) -> str:
    """Return the XML of a small guest booting from `disk`.

    Args:
        ovirt_metadata: add the Engine's `ovirt-vm` metadata (clusterVersion 4.7).
        launch_paused: with `ovirt_metadata`, ask for `ovirt-vm:launchPaused`.
        nic: an `<interface>` element to add (see `ethernet_nic`).
    """
    if launch_paused and not ovirt_metadata:
        raise ValueError("launch_paused lives in the ovirt-vm metadata: set ovirt_metadata")
    metadata = ovirt_metadata_xml(launch_paused=launch_paused) + "\n  " if ovirt_metadata else ""
    interface = f"{nic}\n    " if nic else ""
    return f"""<domain type='{domain_type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  {metadata}<vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {interface}<memballoon model='virtio'/>
  </devices>
</domain>"""


# -- guests as the Engine sends them, watched through the API -----------------------------

EVENTS = "jms.queue.events"


class Guests:
    """Makes halting guests for one test module: a base image, an overlay per guest."""

    def __init__(self, directory: Path, domain_type: str) -> None:
        self.directory = directory
        self.domain_type = domain_type
        self._base: Path | None = None

    def xml(self, name: str, **options: Any) -> tuple[str, str]:
        """Return `(vm_id, domain XML)` of a new guest with the Engine's metadata.

        `options` go to `domain_xml` (`launch_paused`, `nic`, `memory_mib`...).
        """
        if self._base is None:
            self._base = make_halting_base(self.directory)
        vm_id = str(uuids.uuid4())
        disk = make_overlay(self._base, self.directory / f"{name}-{vm_id[:8]}.qcow2")
        options.setdefault("ovirt_metadata", True)
        xml = domain_xml(name=name, uuid=vm_id, disk=disk, domain_type=self.domain_type, **options)
        return vm_id, xml


class StatusEvents:
    """The `|virt|VM_status|<id>` events one client receives, read in order."""

    def __init__(self, cli: Any) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        cli.subscribe(EVENTS, self.queue)
        cli.Host.ping()  # the SUBSCRIBE is in place once a later request is answered

    def next(self, vm_id: str, timeout: float = 30.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return `(params[vm_id], params)` of the next VM_status event of `vm_id`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                method, params = self.queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                pytest.fail(f"no VM_status event of {vm_id} within {timeout} s")
            if method == f"|virt|VM_status|{vm_id}":
                return params[vm_id], params

    def until(self, vm_id: str, status: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Read `vm_id`'s events up to the first with `status`; return them all."""
        seen = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1]["status"] != status:
            entry, _params = self.next(vm_id, timeout=max(deadline - time.monotonic(), 0.001))
            seen.append(entry)
        return seen


def qemu_pid(embed_root: Path, name: str, vm_id: str) -> int:
    """The pid of guest `name`'s QEMU under `embed_root`, checked by its command line."""
    pid = int((embed_root / "run" / "qemu" / f"{name}.pid").read_text().strip())
    assert vm_id in " ".join(psutil.Process(pid).cmdline()), f"{pid} is not the QEMU of {vm_id}"
    return pid
