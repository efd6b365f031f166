"""What the memory policy reads: /proc/meminfo, the QEMUs' sizes, libvirt's balloons.

Blocking adapters (files, /proc, one bulk libvirt call) with no thread of their
own; the memory actor runs them off its turn. `averaged` folds one reading into
the actor's `Window` and is pure.
"""

from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hostvisor.actors.admin.mompolicy import (
    GuestMemory,
    HostMemory,
    KsmState,
    MemorySample,
    Window,
)
from hostvisor.actors.errors import Unavailable

log = logging.getLogger(__name__)

OVIRT_VM_NS = "http://ovirt.org/vm/1.0"
MIN_GUARANTEED = "minGuaranteedMemoryMb"


@dataclass(frozen=True, slots=True, kw_only=True)
class HostReading:
    """The host's memory now, in KiB: total, free (+ buffers + cache), QEMUs' sizes."""

    mem_available: int
    mem_free: int
    ksm_shareable: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestReading:
    """One running guest's balloon now, in KiB; `mem_unused` None when not reported."""

    vm_id: str
    balloon_cur: int
    balloon_min: int
    balloon_max: int
    mem_unused: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One round's reading, before averaging."""

    host: HostReading
    ksm: KsmState
    guests: tuple[GuestReading, ...] = ()


def averaged(window: Window, reading: Reading) -> MemorySample:
    """Fold `reading` into `window` and return the sample the policy sees (pure).

    Averaged as MOM's StatAvg: the host's free memory, each guest's balloon and
    unused memory; a guest that went away is forgotten.
    """
    host = HostMemory(
        mem_available=reading.host.mem_available,
        mem_free=window.add("host.mem_free", reading.host.mem_free),
        ksm_shareable=reading.host.ksm_shareable,
    )
    guests = []
    names = ["host.mem_free"]
    for guest in reading.guests:
        cur_name, unused_name = f"{guest.vm_id}.balloon_cur", f"{guest.vm_id}.mem_unused"
        names.extend((cur_name, unused_name))
        unused = None
        if guest.mem_unused is not None:
            unused = window.add(unused_name, guest.mem_unused)
        guests.append(
            GuestMemory(
                vm_id=guest.vm_id,
                balloon_cur=guest.balloon_cur,
                balloon_min=guest.balloon_min,
                balloon_max=guest.balloon_max,
                balloon_cur_avg=window.add(cur_name, guest.balloon_cur),
                mem_unused=unused,
            )
        )
    window.keep_only(names)
    return MemorySample(host=host, ksm=reading.ksm, guests=tuple(guests))


# -- the host ---------------------------------------------------------------------------------


def read_host(meminfo: Path = Path("/proc/meminfo")) -> HostReading:
    """Return the host's memory as MOM's HostMemory collector reads it (blocking)."""
    fields: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        name, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            fields[name] = int(rest.split()[0])
    free = fields.get("MemFree", 0) + fields.get("Buffers", 0) + fields.get("Cached", 0)
    return HostReading(
        mem_available=fields.get("MemTotal", 0), mem_free=free, ksm_shareable=qemu_sizes()
    )


def qemu_sizes() -> int:
    """The virtual sizes of every QEMU process, in KiB (MOM's `ksm_shareable`; blocking)."""
    total = 0
    for process in psutil.process_iter(["name", "memory_info"]):
        info = process.info
        if (info["name"] or "").startswith("qemu") and info["memory_info"] is not None:
            total += info["memory_info"].vms // 1024
    return total


# -- the guests ---------------------------------------------------------------------------------


def guaranteed_kib(metadata_xml: str) -> int:
    """Return `minGuaranteedMemoryMb` from a domain's ovirt-vm metadata, in KiB; 0 if absent.

    libvirt returns its metadata element without the namespace it was stored under
    (`<vm><minGuaranteedMemoryMb>`), so elements are matched by local name.
    """
    try:
        root = ET.fromstring(metadata_xml)  # noqa: S314 - libvirt's own output, not a caller's
    except ET.ParseError:
        return 0
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == MIN_GUARANTEED and (element.text or "").strip():
            try:
                return int(element.text or "0") * 1024
            except ValueError:
                return 0
    return 0


class GuestReader:
    """Reads every running guest's balloon with one bulk libvirt call (blocking).

    A guest's guaranteed memory comes from its domain metadata, read once per
    domain run (libvirt's domain id changes when it restarts) and then cached,
    so a round costs one `getAllDomainStats` call whatever the number of guests.
    Not thread-safe: one round at a time (the memory actor runs one).
    """

    def __init__(self, connection: Callable[[], Any]) -> None:
        """Read through the libvirt connection `connection()` returns."""
        self._connection = connection
        self._minimum: dict[str, tuple[int, int]] = {}
        """vm_id -> (libvirt domain id, guaranteed KiB)."""

    def __call__(self) -> tuple[GuestReading, ...]:
        """Return the balloon of every running guest (blocking: libvirt).

        Raises:
            Unavailable: libvirt did not answer (the round is skipped).
        """
        import libvirt  # noqa: PLC0415 - only where libvirt is used

        conn = self._connection()
        try:
            records = conn.getAllDomainStats(
                libvirt.VIR_DOMAIN_STATS_BALLOON,
                libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING,
            )
        except libvirt.libvirtError as error:
            raise Unavailable(actor="libvirt", reason=str(error)) from None
        readings = []
        seen = []
        for domain, stats in records:
            if "balloon.current" not in stats or "balloon.maximum" not in stats:
                continue
            vm_id = domain.UUIDString()
            seen.append(vm_id)
            unused = stats.get("balloon.unused")
            readings.append(
                GuestReading(
                    vm_id=vm_id,
                    balloon_cur=int(stats["balloon.current"]),
                    balloon_min=self._guaranteed(domain, vm_id),
                    balloon_max=int(stats["balloon.maximum"]),
                    mem_unused=None if unused is None else int(unused),
                )
            )
        self._forget_all_but(seen)
        return tuple(readings)

    def _guaranteed(self, domain: Any, vm_id: str) -> int:
        import libvirt  # noqa: PLC0415

        run = domain.ID()
        cached = self._minimum.get(vm_id)
        if cached is not None and cached[0] == run:
            return cached[1]
        try:
            metadata = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OVIRT_VM_NS)
        except libvirt.libvirtError:
            metadata = ""  # no ovirt-vm metadata: nothing guaranteed
        kib = guaranteed_kib(metadata)
        self._minimum[vm_id] = (run, kib)
        return kib

    def _forget_all_but(self, vm_ids: Iterable[str]) -> None:
        keep = set(vm_ids)
        for vm_id in [vm_id for vm_id in self._minimum if vm_id not in keep]:
            del self._minimum[vm_id]
