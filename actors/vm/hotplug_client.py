"""Typed calls of the VM actor's hotplug methods (`hotplug.Hotplugger`).

Each returns at once with a future of the method's answer, which is itself a future
of the work (an operation): await both. A container VM's actor has none of these
methods; the API answers code 75 for it before calling (`refuse_container`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.vm.disks import DiskVolume
from hostvisor.actors.vm.hotplug_lease import LeaseDevice
from hostvisor.actors.vm.proxy import VmProxy

Answer = pykka.Future[pykka.Future[Any]]
"""The actor's answer: a future of the operation, which settles with the verb's result."""


def hotplug_disk(vm: VmProxy, xml: str) -> Answer:
    """Attach the prepared disk of the Engine's `<hotplug>` document."""
    return call(vm.ref, "hotplugDisk", xml)


def hotunplug_disk(vm: VmProxy, xml: str) -> Answer:
    """Unplug a disk; the operation settles with its `DiskVolume` (or None)."""
    return call(vm.ref, "hotunplugDisk", xml)


def hotplug_nic(vm: VmProxy, xml: str) -> Answer:
    """Attach a NIC; the operation settles with `{devices, xml}`."""
    return call(vm.ref, "hotplugNic", xml)


def hotunplug_nic(vm: VmProxy, xml: str) -> Answer:
    """Unplug a NIC once the guest releases it."""
    return call(vm.ref, "hotunplugNic", xml)


def set_number_of_cpus(vm: VmProxy, count: int, cpusets: list[str] | None = None) -> Answer:
    """Set the live vCPU count (and pin each vCPU to its cpuset)."""
    return call(vm.ref, "setNumberOfCpus", count, cpusets)


def hotplug_memory(vm: VmProxy, params: Mapping[str, Any]) -> Answer:
    """Attach a DIMM."""
    return call(vm.ref, "hotplugMemory", params)


def hotunplug_memory(vm: VmProxy, params: Mapping[str, Any]) -> Answer:
    """Ask the guest to release a DIMM."""
    return call(vm.ref, "hotunplugMemory", params)


def disk_size_extend(vm: VmProxy, domain_id: str, image_id: str, size: int) -> Answer:
    """Grow a disk live; the operation settles with its new size in bytes."""
    return call(vm.ref, "diskSizeExtend", domain_id, image_id, size)


def change_cd(vm: VmProxy, name: str | None, path: str, volume: DiskVolume | None) -> Answer:
    """Load or eject a CD; the operation settles with the volume it held before."""
    return call(vm.ref, "changeCD", name, path, volume)


def hotplug_lease(vm: VmProxy, lease: LeaseDevice) -> Answer:
    """Attach a VM lease (its path and offset found on this host)."""
    return call(vm.ref, "hotplugLease", lease)


def hotunplug_lease(vm: VmProxy, sd_id: str, lease_id: str) -> Answer:
    """Detach a VM lease; the operation settles once it has left the domain."""
    return call(vm.ref, "hotunplugLease", sd_id, lease_id)
