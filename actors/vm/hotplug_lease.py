"""Hotplug of a running VM's lease: `VM.hotplugLease` / `VM.hotunplugLease` (VDSM `vm.py`).

A VM lease is a sanlock resource on its storage domain's `xleases` volume, named by
the VM's id. Plugging it adds a `<lease>` device to the running domain::

    <lease>
      <key>LEASE_ID</key><lockspace>SD_ID</lockspace>
      <target path="/rhev/…/SD_ID/dom_md/xleases" offset="3145728"/>
    </lease>

and libvirt's lock manager (sanlock, as VDSM configures it) acquires the resource
for the QEMU process before the attach returns: from then on no other host can
start a VM holding that lease. Unplugging it releases the resource. The API side
finds the lease's path and offset on this host (Lease.info, as VDSM's
`vmdevices.lease.prepare`); this part only changes the domain.

As VDSM: a plug answers once attached (HotplugLeaseFailed, 86, when libvirt refuses,
for example because the lease is held elsewhere); an unplug of a lease the VM does
not hold answers HotunplugLeaseFailed (87, "No such lease"); libvirt sends no
DEVICE_REMOVED for a lease (rhbz#1639228), so the unplug polls the live XML until
the lease is gone, at most `UNPLUG_TIMEOUT` seconds. The live XML is then read
again, so the devices hash changes and the lease shows in (or leaves) dumpxmls.
VDSM keeps no `ovirt-vm:device` metadata for a lease: the `<lease>` element is the
record, and a restarted agent finds it in the domain XML.

`LeaseHotplug` is mixed into `Hotplugger` (and so into `VmActor`): its methods run on
the VM actor's turn, check their input there, and run libvirt on the work facility.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import libvirt

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.vm.hotplug_errors import HotplugLeaseFailed, HotunplugLeaseFailed
from hostvisor.actors.vm.hotplug_libvirt import LIVE, domain_of, live_xml, refused

if TYPE_CHECKING:
    from hostvisor.actors.guest.model import GuestModel

log = logging.getLogger(__name__)

UNPLUG_TIMEOUT = 30.0
"""Seconds an unplugged lease may take to leave the live XML (VDSM `hotunplug_timeout`)."""
CHECK_INTERVAL = 0.25
"""Seconds between looks at the live XML (VDSM `hotunplug_check_interval`)."""


@dataclass(frozen=True, slots=True)
class LeaseDevice:
    """A VM lease device: which lease, and where it lives on this host."""

    sd_id: str
    lease_id: str
    path: str
    offset: int

    def xml(self) -> str:
        """The `<lease>` element libvirt attaches (VDSM `lease.Device.getXML`)."""
        lease = ET.Element("lease")
        ET.SubElement(lease, "key").text = self.lease_id
        ET.SubElement(lease, "lockspace").text = self.sd_id
        ET.SubElement(lease, "target", path=self.path, offset=str(self.offset))
        return ET.tostring(lease, encoding="unicode")

    def describe(self) -> str:
        """How errors name it."""
        return f"{self.sd_id}:{self.lease_id}"


def find_lease(xml: str, sd_id: str, lease_id: str) -> ET.Element | None:
    """The `<lease>` device of domain `xml` with that lockspace and key (pure)."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    for lease in root.iterfind("./devices/lease"):
        if (lease.findtext("key") or "").strip() == lease_id and (
            lease.findtext("lockspace") or ""
        ).strip() == sd_id:
            return lease
    return None


class LeaseHotplug:
    """Lease hotplug for a VM actor (mixed into Hotplugger; runs on its turn only)."""

    # Provided by VmActor / GuestActor / Actor / Hotplugger:
    vm_id: str
    guest: GuestModel
    _connection: Callable[[], Any]
    operation: Callable[..., CallbackFuture]
    _set_xml: Callable[[str], None]
    _allowed: Callable[[str], None]

    LEASE_UNPLUG_TIMEOUT: ClassVar[float] = UNPLUG_TIMEOUT

    def hotplugLease(self, lease: LeaseDevice) -> CallbackFuture:  # noqa: N802 - the verb's name
        """Attach `lease` to the running domain: libvirt's lock manager acquires it.

        The future settles with `{}` (VDSM's vmList) once attached, or fails with
        HotplugLeaseFailed (86: libvirt or sanlock refused, e.g. the lease is held
        elsewhere) or NoSuchVm.

        Raises:
            HotplugLeaseFailed: the VM holds that lease already.
            VmIsDown, Conflict, MigrationInProgress.
        """
        self._allowed("hotplugLease")
        if find_lease(self.guest.xml, lease.sd_id, lease.lease_id) is not None:
            raise HotplugLeaseFailed(
                vmId=self.vm_id, lease=lease.describe(), reason="the VM holds it already"
            )
        device = lease.xml()
        vm_id, connection = self.vm_id, self._connection

        def attach() -> str:
            domain = domain_of(connection(), vm_id)
            try:
                domain.attachDeviceFlags(device, LIVE)
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, HotplugLeaseFailed, lease=lease.describe()) from None
            return live_xml(domain)

        def attached(live: str) -> dict[str, Any]:
            self._set_xml(live)
            log.info("VM %s: lease %s plugged", vm_id, lease.describe())
            return {}

        return self.operation("hotplugLease", attach, then=attached)

    def hotunplugLease(self, sd_id: str, lease_id: str) -> CallbackFuture:  # noqa: N802
        """Detach the VM's lease `sd_id:lease_id`: libvirt releases it in sanlock.

        The future settles with `{}` once the lease has left the live XML, or fails
        with HotunplugLeaseFailed (87: refused, or still there after
        `LEASE_UNPLUG_TIMEOUT` s) or NoSuchVm.

        Raises:
            HotunplugLeaseFailed: the VM has no such lease ("No such lease").
            VmIsDown, Conflict, MigrationInProgress.
        """
        self._allowed("hotunplugLease")
        where = f"{sd_id}:{lease_id}"
        element = find_lease(self.guest.xml, sd_id, lease_id)
        if element is None:
            raise HotunplugLeaseFailed(vmId=self.vm_id, lease=where, reason="No such lease")
        device = ET.tostring(element, encoding="unicode")
        vm_id, connection, wait = self.vm_id, self._connection, self.LEASE_UNPLUG_TIMEOUT

        def detach() -> str:
            domain = domain_of(connection(), vm_id)
            try:
                domain.detachDeviceFlags(device, LIVE)
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, HotunplugLeaseFailed, lease=where) from None
            return _wait_gone(domain, sd_id, lease_id, wait, vm_id)

        def detached(live: str) -> dict[str, Any]:
            self._set_xml(live)
            log.info("VM %s: lease %s unplugged", vm_id, where)
            return {}

        return self.operation("hotunplugLease", detach, then=detached)


def _wait_gone(domain: Any, sd_id: str, lease_id: str, timeout: float, vm_id: str) -> str:
    """The live XML once the lease has left it (blocks up to `timeout` s; no event comes).

    Raises:
        HotunplugLeaseFailed: still attached after `timeout` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        live = live_xml(domain)
        if find_lease(live, sd_id, lease_id) is None:
            return live
        if time.monotonic() >= deadline:
            raise HotunplugLeaseFailed(
                vmId=vm_id, lease=f"{sd_id}:{lease_id}", reason="Timeout detaching"
            )
        time.sleep(CHECK_INTERVAL)
