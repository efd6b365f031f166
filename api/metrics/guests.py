"""The VM and container families of a scrape, each guest's lines kept while it holds.

Per guest: its status (a status label), CPU time, CPU use by mode, memory in use,
each disk's bytes read and written, each NIC's bytes received and sent, labelled
with the VM's id, name and kind (`vm` or `container`).

Two sources, the same lines:
- board entries (`VmBoard.entries`, once the board has it): a guest's row is kept
  while its entry is the same frozen object and it reports the same status (the
  only figure read off the clock: "Powering up"), so an unchanged guest costs an
  identity check, and the board's thread does no rendering for a scrape;
- rendered stats dicts (`VmBoard.render("stats")`, the board as it is today): the
  signature is the values the lines show, compared by value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from hostvisor.actors.guest.entry import VmEntry
from hostvisor.api.metrics.rows import Row, RowCache
from hostvisor.api.metrics.text import Family, labels, number

_SHOWN = (
    "vmId",
    "vmName",
    "status",
    "cpuUsage",
    "cpuUser",
    "cpuSys",
    "memUsage",
    "disks",
    "network",
)
_STATUS = "hostvisor_vm_status"
_CPU = "hostvisor_vm_cpu_seconds_total"
_CPU_RATIO = "hostvisor_vm_cpu_ratio"
_MEMORY = "hostvisor_vm_memory_used_ratio"
_READS = "hostvisor_vm_disk_read_bytes_total"
_WRITES = "hostvisor_vm_disk_written_bytes_total"
_RX = "hostvisor_vm_network_receive_bytes_total"
_TX = "hostvisor_vm_network_transmit_bytes_total"


def as_number(value: Any) -> float | None:
    """VDSM's figures are often strings: '41.87', '4512044682'; None when not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def guest_families_empty() -> list[Family]:
    """The guest families, headers only, in exposition order."""
    return [
        Family(_STATUS, "gauge", "1 for the VM's status (status label)"),
        Family(_CPU, "counter", "CPU time the VM used"),
        Family(_CPU_RATIO, "gauge", "VM CPU use by mode"),
        Family(_MEMORY, "gauge", "Guest memory in use"),
        Family(_READS, "counter", "Bytes read from a disk"),
        Family(_WRITES, "counter", "Bytes written"),
        Family(_RX, "counter", "Bytes received"),
        Family(_TX, "counter", "Bytes sent"),
    ]


class GuestRows:
    """Builds the guest families, reusing unchanged guests' rows. One scrape at a time."""

    def __init__(self) -> None:
        """Start with nothing kept."""
        self.cache = RowCache()
        self._lock = threading.Lock()

    def from_entries(
        self, entries: Mapping[str, VmEntry], kinds: Mapping[str, str], now: float
    ) -> list[Family]:
        """The families of `entries` (the board's, by VM id) at monotonic time `now`.

        Guests the supervisors hold (`kinds`: VM id → kind) come first, in its order,
        then the board's other entries (orphans), as `VmBoard.render` orders them.
        """
        order = [vm_id for vm_id in kinds if vm_id in entries]
        if len(order) < len(entries):
            order += [vm_id for vm_id in entries if vm_id not in kinds]
        rows: list[Row] = []
        with self._lock:
            cache = self.cache
            for vm_id in order:
                entry = entries[vm_id]
                kind = kinds.get(vm_id, "vm")
                signature = (entry, entry.reported_status(now), kind)
                rows.append(cache.row(vm_id, signature, partial(_entry_row, entry, kind, now)))
            cache.end_scrape()
        return _families(rows)

    def from_stats(
        self, answers: Iterable[Mapping[str, Any]], kinds: Mapping[str, str]
    ) -> list[Family]:
        """The families of rendered stats dicts (`VmBoard.render("stats")` answers)."""
        rows: list[Row] = []
        with self._lock:
            cache = self.cache
            for stats in answers:
                vm_id = str(stats.get("vmId", ""))
                kind = kinds.get(vm_id, "vm")
                signature = (kind, *map(stats.get, _SHOWN))
                rows.append(cache.row(vm_id, signature, partial(_row, stats, kind)))
            cache.end_scrape()
        return _families(rows)

    def forget(self) -> None:
        """Drop every kept row (the board did not answer: start afresh next time)."""
        with self._lock:
            self.cache.forget()


def _families(rows: list[Row]) -> list[Family]:
    families = guest_families_empty()
    for index, family in enumerate(families):
        family.extend(row[index] for row in rows)
    return families


def _entry_row(entry: VmEntry, kind: str, now: float) -> Row:
    return _row(entry.stats(now), kind)


def _row(stats: Mapping[str, Any], kind: str) -> Row:
    """One guest's cells, one per family of `guest_families_empty`."""
    key = labels(vm_id=str(stats.get("vmId", "")), vm_name=str(stats.get("vmName", "")), kind=kind)
    status = f'{_STATUS}{{{key},status="{stats.get("status", "")}"}} 1\n'
    usage = as_number(stats.get("cpuUsage"))
    cpu = "" if usage is None else f"{_CPU}{{{key}}} {number(usage / 1e9)}\n"  # VDSM: ns
    ratios = []
    for mode, field in (("user", "cpuUser"), ("system", "cpuSys")):
        value = as_number(stats.get(field))
        if value is not None:
            ratios.append(f'{_CPU_RATIO}{{{key},mode="{mode}"}} {number(value / 100.0)}\n')
    mem = as_number(stats.get("memUsage"))
    memory = "" if mem is None else f"{_MEMORY}{{{key}}} {number(mem / 100.0)}\n"
    reads, writes = _pairs(stats.get("disks"), key, "disk", ("readBytes", "writtenBytes"))
    rx, tx = _pairs(stats.get("network"), key, "nic", ("rx", "tx"))
    return (status, cpu, "".join(ratios), memory, reads, writes, rx, tx)


def _pairs(devices: Any, key: str, label: str, fields: tuple[str, str]) -> tuple[str, str]:
    """Lines of two counters per device of a VDSM mapping (disks by name, NICs by name)."""
    if not isinstance(devices, Mapping):
        return "", ""
    names = (_READS, _WRITES) if label == "disk" else (_RX, _TX)
    first: list[str] = []
    second: list[str] = []
    for name, device in sorted(devices.items()):
        if not isinstance(device, Mapping):
            continue
        shown = str(device.get("name", name)) if label == "nic" else str(name)
        device_label = f"{key},{labels(**{label: shown})}"
        for lines, metric, field in ((first, names[0], fields[0]), (second, names[1], fields[1])):
            value = as_number(device.get(field))
            if value is not None:
                lines.append(f"{metric}{{{device_label}}} {number(value)}\n")
    return "".join(first), "".join(second)
