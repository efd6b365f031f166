"""The blocking libvirt calls of hotplug, and the device-removal events they wait for.

Plain blocking functions: the VM actor runs each on the work facility. An unplug
only asks the guest to let the device go (`detachDeviceFlags`); the guest's kernel
releases it when it will, and libvirt then reports `VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED`
with the device's alias (VDSM's `onDeviceRemoved`). `watch_removals` registers for
that event on one domain, before the detach, so the event cannot be missed; the
callback runs on libvirt's event thread and only hands a frozen `DeviceRemoved` on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.vm.domxml import OVIRT_VM
from hostvisor.actors.vm.errors import NoSuchVm

log = logging.getLogger(__name__)

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


@dataclass(frozen=True, slots=True)
class DeviceRemoved:
    """Tell (libvirt's event thread): the guest released the device `alias`."""

    vm_id: str
    alias: str


def watch_removals(conn: Any, domain: Any, deliver: Callable[[DeviceRemoved], None]) -> int:
    """Register for `domain`'s device-removed events; return the callback id (blocks briefly).

    With `domain` None, every domain's (a host-wide watch, as the hypervisor actor
    keeps for lifecycle events: a VM actor then also hears of removals it did not
    ask for, such as those that finish after an agent restart).

    Raises:
        libvirt.libvirtError: libvirt refused the registration.
    """

    def on_removed(_conn: Any, dom: Any, alias: str, _opaque: Any) -> None:
        try:
            deliver(DeviceRemoved(dom.UUIDString(), alias))
        except Exception:
            log.exception("delivering a device removal failed")

    callback_id: int = conn.domainEventRegisterAny(
        domain, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, on_removed, None
    )
    return callback_id


def unwatch(conn: Any, callback_id: int) -> None:
    """Deregister a callback; one already gone (or a closed connection) is fine."""
    try:
        conn.domainEventDeregisterAny(callback_id)
    except libvirt.libvirtError as error:
        log.debug("deregistering device-removal callback %s: %s", callback_id, error)


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
