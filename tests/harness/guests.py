"""Guests that need no OS: a disk whose boot sector halts the CPU at once.

SeaBIOS loads the sector and jumps to it; `cli; hlt; jmp $-1` keeps the vCPU idle,
so many such guests cost almost no CPU (ENVIRONMENT.md).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HALT_SECTOR = bytes([0xFA, 0xF4, 0xEB, 0xFD])  # cli; hlt; jmp -1 (back to hlt)


def make_halting_base(directory: Path) -> Path:
    """Write a 1 MiB raw image with the halting boot sector; return it as qcow2."""
    raw = directory / "halt.raw"
    sector = bytearray(512)
    sector[: len(HALT_SECTOR)] = HALT_SECTOR
    sector[510:512] = b"\x55\xaa"
    raw.write_bytes(bytes(sector) + bytes(1024 * 1024 - 512))
    base = directory / "halt.qcow2"
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


def domain_xml(*, name: str, uuid: str, disk: Path, domain_type: str, memory_mib: int = 64) -> str:
    """Return the XML of a small guest booting from `disk`."""
    return f"""<domain type='{domain_type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='virtio'/>
  </devices>
</domain>"""
