"""The blocking libvirt calls of hotplug, and the device-removal events they wait for.

Plain blocking functions: the VM actor runs each on the work facility. An unplug
only asks the guest to let the device go (`detachDeviceFlags`); the guest's kernel
releases it when it will, and libvirt then reports `VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED`
with the device's alias (VDSM's `onDeviceRemoved`). The hypervisor actor keeps a
host-wide watch for that event (`hypervisor.events.watch_devices`), so it reaches the
VM's actor as a `DeviceRemoved` message whenever it comes: also for a removal that
finishes after an agent restart.
"""

from __future__ import annotations

import logging
from typing import Any

import libvirt

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.hypervisor.events import DeviceRemoved
from hostvisor.actors.vm.domxml import OVIRT_VM
from hostvisor.actors.vm.errors import NoSuchVm

log = logging.getLogger(__name__)

__all__ = ["DeviceRemoved"]

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


def domain_of(conn: Any, vm_id: str) -> Any:
    """The running domain (blocks briefly).

    Raises:
        NoSuchVm: libvirt has no such domain.
    """
    try:
        return conn.lookupByUUIDString(vm_id)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoSuchVm(vmId=vm_id) from None
        raise


def refused(
    vm_id: str, error: libvirt.libvirtError, failure: type[HostvisorError], **context: Any
) -> HostvisorError:
    """The verb's error for libvirt's `error` (NoSuchVm when the domain is gone)."""
    if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return NoSuchVm(vmId=vm_id)
    return failure(vmId=vm_id, reason=error.get_error_message() or str(error), **context)


def set_metadata(domain: Any, metadata: str) -> None:
    """Replace the domain's live `ovirt-vm` metadata element (blocks).

    Raises:
        libvirt.libvirtError: libvirt refused it.
    """
    domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata, "ovirt-vm", OVIRT_VM, LIVE)


def try_set_metadata(domain: Any, metadata: str | None, vm_id: str) -> None:
    """`set_metadata`, a failure only logged (the device change itself is done)."""
    if metadata is None:
        return
    try:
        set_metadata(domain, metadata)
    except libvirt.libvirtError as error:
        log.warning("VM %s: the device metadata was not updated: %s", vm_id, error)


def live_xml(domain: Any) -> str:
    """The running domain's XML (blocks briefly)."""
    xml: str = domain.XMLDesc(0)
    return xml
