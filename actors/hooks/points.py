"""VDSM's hook points: what each hands its scripts, and whether its failure stops anything.

From VDSM's `lib/vdsm/common/hooks.py` (one function per point there): a point hands
its scripts the domain XML or a device's XML (`_hook_domxml`), a JSON document
(`_hook_json`: the network setup, the stats, the capabilities, a prepared disk), or
nothing (an empty `_hook_domxml` file). A point "vetoes" when a failing script fails
the operation (VDSM's `raiseError=True`, and `before_vm_start`, which raises after
every script ran); otherwise a failure is only logged. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["POINTS", "Point", "point"]

Data = Literal["xml", "json", "none"]


@dataclass(frozen=True, slots=True)
class Point:
    """One hook point.

    Attributes:
        name: the point, also its directory under the hooks directory.
        data: what the scripts get: a domain or device XML, a JSON document, nothing.
        vetoes: whether a failing script fails the operation (`HookError`).
    """

    name: str
    data: Data = "xml"
    vetoes: bool = True


def _pairs(*names: str, data: Data = "xml") -> list[Point]:
    """`before_X` (vetoes) and `after_X` (logged) for each X."""
    return [
        hook
        for n in names
        for hook in (Point(f"before_{n}", data), Point(f"after_{n}", data, vetoes=False))
    ]


_LIST = [
    *_pairs(
        "vm_start",
        "vm_cont",
        "vm_pause",
        "vm_migrate_source",
        "vm_migrate_destination",
        "vm_hibernate",
        "vm_dehibernate",
        "device_create",
        "device_destroy",
        "device_migrate_source",
        "device_migrate_destination",
        "update_device",
        "nic_hotplug",
        "nic_hotunplug",
        "disk_hotplug",
        "disk_hotunplug",
        "memory_hotplug",
    ),
    *_pairs("set_num_of_cpus", data="none"),
    *_pairs(
        "network_setup", "get_vm_stats", "get_all_vm_stats", "get_caps", "get_stats", data="json"
    ),
    Point("before_vm_destroy", "none", vetoes=False),  # VDSM hands it no XML, and never fails
    Point("after_vm_destroy", vetoes=False),
    Point("before_vm_set_ticket", vetoes=False),
    Point("after_vm_set_ticket", vetoes=False),
    Point("after_update_device_fail", vetoes=False),
    Point("after_nic_hotplug_fail", vetoes=False),
    Point("after_nic_hotunplug_fail", vetoes=False),
    Point("after_disk_prepare", "json"),  # it vetoes, though an after_ (VDSM)
    Point("after_network_setup_fail", "json", vetoes=False),
    Point("after_hostdev_list_by_caps", "json", vetoes=False),
    Point("before_vdsm_start", "none", vetoes=False),
    Point("after_vdsm_stop", "none", vetoes=False),
]

POINTS: dict[str, Point] = {p.name: p for p in _LIST}
"""Every hook point VDSM runs, by name."""


def point(name: str) -> Point:
    """The hook point called `name`.

    Raises:
        KeyError: VDSM has no such hook point (a bug in the caller).
    """
    return POINTS[name]
