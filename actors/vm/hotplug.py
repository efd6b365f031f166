"""Hotplug of a running VM's devices: disks, NICs, CPUs, memory, CD (VDSM `vm.py`).

`Hotplugger` is mixed into `VmActor`. Its methods are the VM actor methods behind the
hotplug verbs, named as the verbs (`hotplugDisk`…), so that a container VM, which
has none of them, answers code 75 for each. Each runs on the VM actor's turn, checks
its input there (raising the verb's error at once), and returns a future that settles
once libvirt has done the work on the work facility; the VM keeps answering status and
stats meanwhile. Storage is the API's side: a hotplugged disk arrives already
prepared (its path in the XML), an unplugged one is handed back for teardown.

What VDSM does, and so does this:
- a plug attaches the device (`attachDeviceFlags`, live), records its `ovirt-vm:device`
  metadata in the domain, and reads the live XML back: the devices hash changes and
  the Engine re-reads the devices (dumpxmls);
- an unplug asks the guest to release the device (`detachDeviceFlags`) and completes
  when libvirt reports DEVICE_REMOVED for the device's alias, then drops its
  metadata; a guest that does not let go within `UNPLUG_TIMEOUT` seconds fails the
  verb (VDSM's `hotunplug_timeout`, 30 s): `hotplug_removal.Unplugging`;
- `setNumberOfCpus` sets the live vCPU count, `hotplugMemory` attaches a DIMM,
  `hotunplugMemory` asks for its removal and answers at once (VDSM does not wait
  either), `hotplugLease`/`hotunplugLease` attach and detach a VM lease
  (`hotplug_lease`), `diskSizeExtend` resizes the block device live, `changeCD` loads or
  ejects the CD-ROM (`updateDeviceFlags` with MODIFY_FORCE).
A VM that is not running answers 6 (Down) or 40 (not launched yet); one migrating
answers 51, as VDSM's `_not_migrating` guard.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import libvirt

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import hotplug_xml as hx
from hostvisor.actors.vm.disks import DiskVolume
from hostvisor.actors.vm.errors import MissingParameter, UpdateDeviceFailed
from hostvisor.actors.vm.hotplug_errors import (
    BadDiskResizeParameter,
    ChangeDiskFailed,
    HotplugDiskFailed,
    HotplugMemFailed,
    HotplugNicFailed,
    HotunplugDiskFailed,
    HotunplugMemFailed,
    HotunplugNicFailed,
    ImageFileNotFound,
    SetNumberOfCpusFailed,
)
from hostvisor.actors.vm.hotplug_lease import LeaseHotplug
from hostvisor.actors.vm.hotplug_libvirt import (
    LIVE,
    DeviceRemoved,
    domain_of,
    live_xml,
    refused,
    try_set_metadata,
)
from hostvisor.actors.vm.hotplug_removal import (
    MEMORY_UNPLUG_WAIT,
    Removal,
    Unplugging,
    UnplugTimedOut,
)
from hostvisor.actors.vm.metadata_lock import editing
from hostvisor.actors.vm.migrating import MigrationInProgress

if TYPE_CHECKING:
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.timers import Timer
    from hostvisor.actors.vm.migrating import OutgoingMigration

log = logging.getLogger(__name__)

__all__ = ["DeviceRemoved", "Hotplugger", "UnplugTimedOut"]


class Hotplugger(Unplugging, LeaseHotplug):
    """Hotplug for a VM actor (mixed into VmActor; runs on its turn only).

    Leases are `hotplug_lease.LeaseHotplug`'s (hotplugLease, hotunplugLease).
    """

    NOT_YET: ClassVar[frozenset[str]] = frozenset()
    """Methods the API calls that this part does not implement yet: code 75."""

    # Provided by VmActor / GuestActor / Actor / Migrator:
    vm_id: str
    guest: GuestModel
    _connection: Callable[[], Any]
    _migration: OutgoingMigration | None
    operation: Callable[..., CallbackFuture]
    run_off: Callable[..., Any]
    tell_later: Callable[..., Timer]
    _set_xml: Callable[[str], None]

    def _hotplug_receive(self, message: Any) -> bool:
        """Handle `message` if it is one of this part's; say whether it was."""
        match message:
            case DeviceRemoved(vm_id=vm_id, alias=alias) if vm_id == self.vm_id:
                self._device_removed(alias)
            case UnplugTimedOut(alias=alias):
                self._unplug_timed_out(alias)
            case _:
                return False
        return True

    def _allowed(self, op: str) -> None:
        self.guest.require_running(op)
        if self._migration is not None and self._migration.active:
            raise MigrationInProgress(vmId=self.vm_id, operation=op)

    # -- disks ----------------------------------------------------------------------------

    def hotplugDisk(self, xml: str) -> CallbackFuture:  # noqa: N802 - the verb's name
        """Attach the disk of the Engine's `<hotplug>` document (its path prepared).

        The future settles with `{}` (VDSM's vmList) once attached, or fails with
        HotplugDiskFailed (45) or NoSuchVm.

        Raises:
            InvalidArgument: not a disk document. VmIsDown, Conflict, MigrationInProgress.
        """
        self._allowed("hotplugDisk")
        doc = hx.read_device(xml, "disk")
        taken = hx.targets(self.guest.xml) | self._hp.reserved
        device, name, meta = hx.plan_disk(doc, taken)
        self._hp.reserved.add(name)
        vm_id, connection = self.vm_id, self._connection

        def attach() -> str:
            domain = domain_of(connection(), vm_id)
            try:
                domain.attachDeviceFlags(device, LIVE)
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, HotplugDiskFailed, disk=name) from None
            with editing(domain):
                live = live_xml(domain)
                metadata = hx.metadata_with(live, meta, hx.disk_meta_named(name))
                try_set_metadata(domain, metadata, vm_id)
            return live_xml(domain)

        def attached(live: str) -> dict[str, Any]:
            self._hp.reserved.discard(name)
            self._set_xml(live)
            log.info("VM %s: disk %s plugged", vm_id, name)
            return {}

        return self.operation(
            "hotplugDisk",
            attach,
            then=attached,
            failed=lambda _e: self._hp.reserved.discard(name),
        )

    def hotunplugDisk(self, xml: str) -> CallbackFuture:  # noqa: N802 - the verb's name
        """Unplug the disk the Engine's `<hotunplug>` names (by alias, else by target).

        The future settles with the disk's storage volume (for teardown; None when it
        is not on a storage domain) once the guest has released it, or fails with
        HotunplugDiskFailed (46: not found, refused, or not released in time).

        Raises:
            InvalidArgument: not a disk document. VmIsDown, Conflict, MigrationInProgress.
        """
        self._allowed("hotunplugDisk")
        doc = hx.read_device(xml, "disk")
        live = self.guest.xml
        element = hx.live_device(live, "disk", alias=doc.alias)
        if element is None:  # an Engine of old names the disk by its target
            target = doc.element.find("target")
            element = hx.disk_named(live, target.get("dev") if target is not None else None)
        alias = hx.alias_of(element) if element is not None else None
        target = element.find("target") if element is not None else None
        name = target.get("dev", "") if target is not None else ""
        if element is None or alias is None:
            raise HotunplugDiskFailed(vmId=self.vm_id, alias=doc.alias, reason="Disk not found")
        return self._unplug(
            Removal(
                op="hotunplugDisk",
                failure=HotunplugDiskFailed,
                forget=hx.disk_meta_named(name),
                result=hx.disk_metadata(live, name),
                future=CallbackFuture(),
            ),
            alias,
            ET.tostring(element, encoding="unicode"),
        )

    def diskSizeExtend(self, domain_id: str, image_id: str, size: int) -> CallbackFuture:  # noqa: N802
        """Grow the disk of that image to `size` bytes, live (`blockResize`).

        The future settles with the disk's new virtual size (qemu may round it up),
        or fails with BadDiskResizeParameter (58: smaller than now) or
        UpdateDeviceFailed (56: libvirt refused).

        Raises:
            ImageFileNotFound (13): the VM has no disk of that image.
            BadDiskResizeParameter: `size` is not a positive whole number.
            VmIsDown, Conflict.
        """
        self.guest.require_running("diskSizeExtend")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise BadDiskResizeParameter(vmId=self.vm_id, newSize=size)
        found = hx.disk_of_image(self.guest.xml, domain_id, image_id)
        if found is None:
            raise ImageFileNotFound(vmId=self.vm_id, domainID=domain_id, imageID=image_id)
        name, _fmt = found
        vm_id, connection = self.vm_id, self._connection

        def resize() -> tuple[int, str]:
            domain = domain_of(connection(), vm_id)
            current = int(domain.blockInfo(name)[0])
            if size < current:
                raise BadDiskResizeParameter(vmId=vm_id, disk=name, newSize=size, size=current)
            try:
                domain.blockResize(name, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                grown = int(domain.blockInfo(name)[0])
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, UpdateDeviceFailed, disk=name) from None
            return grown, live_xml(domain)

        def resized(outcome: tuple[int, str]) -> int:
            grown, live = outcome
            self._set_xml(live)
            return grown

        return self.operation("diskSizeExtend", resize, then=resized)

    # -- NICs -----------------------------------------------------------------------------

    def hotplugNic(self, xml: str) -> CallbackFuture:  # noqa: N802 - the verb's name
        """Attach the NIC of the Engine's `<hotplug>` document and record its metadata.

        The future settles with VDSM's vmList: `{devices: [{macAddr, alias}], xml}`,
        or fails with HotplugNicFailed (49) or NoSuchVm.

        Raises:
            InvalidArgument: not an interface document. VmIsDown, Conflict,
            MigrationInProgress.
        """
        self._allowed("hotplugNic")
        doc = hx.read_device(xml, "interface")
        device = ET.tostring(doc.element, encoding="unicode")
        alias, mac = doc.alias, doc.mac
        vm_id, connection = self.vm_id, self._connection

        def attach() -> str:
            domain = domain_of(connection(), vm_id)
            try:
                domain.attachDeviceFlags(device, LIVE)
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, HotplugNicFailed, alias=alias) from None
            if doc.meta:
                with editing(domain):
                    metadata = hx.metadata_with(
                        live_xml(domain), doc.meta, hx.nic_meta_of(alias, mac)
                    )
                    try_set_metadata(domain, metadata, vm_id)
            return live_xml(domain)

        def attached(live: str) -> dict[str, Any]:
            self._set_xml(live)
            element = hx.live_device(live, "interface", alias=alias, mac=mac)
            found = element.find("mac") if element is not None else None
            plugged = {
                "macAddr": found.get("address", "") if found is not None else (mac or ""),
                "alias": (hx.alias_of(element) if element is not None else None) or alias or "",
            }
            log.info("VM %s: NIC %s plugged", vm_id, plugged["alias"])
            return {"devices": [plugged], "xml": live}

        return self.operation("hotplugNic", attach, then=attached)

    def hotunplugNic(self, xml: str) -> CallbackFuture:  # noqa: N802 - the verb's name
        """Unplug the NIC the Engine's `<hotunplug>` names (by alias, else by MAC).

        The future settles with `{}` once the guest has released it, or fails with
        HotunplugNicFailed (50: not found, refused, or not released in time).

        Raises:
            InvalidArgument: not an interface document. VmIsDown, Conflict,
            MigrationInProgress.
        """
        self._allowed("hotunplugNic")
        doc = hx.read_device(xml, "interface")
        element = hx.live_device(self.guest.xml, "interface", alias=doc.alias, mac=doc.mac)
        alias = hx.alias_of(element) if element is not None else None
        if element is None or alias is None:
            raise HotunplugNicFailed(vmId=self.vm_id, alias=doc.alias, reason="NIC not found")
        found = element.find("mac")
        mac = (found.get("address") or "").lower() if found is not None else None
        return self._unplug(
            Removal(
                op="hotunplugNic",
                failure=HotunplugNicFailed,
                forget=hx.nic_meta_of(alias, mac),
                result={},
                future=CallbackFuture(),
            ),
            alias,
            ET.tostring(element, encoding="unicode"),
        )

    # -- CPUs and memory ------------------------------------------------------------------

    def setNumberOfCpus(  # noqa: N802 - the verb's name
        self, count: int, cpusets: Sequence[str] | None = None
    ) -> CallbackFuture:
        """Set the guest's live vCPU count (`setVcpusFlags`), then pin each as `cpusets` say.

        As VDSM: `cpusets` (one host cpuset per vCPU, "1,3-5") pins the vCPUs live
        after the count is set (`pinVcpuFlags`). The future settles with `{}`, or
        fails with SetNumberOfCpusFailed (60), or InvalidArgument (a cpuset naming a
        CPU this host does not have).

        Raises:
            InvalidArgument: `count` is not a whole number >= 1, or `cpusets` is not one
            well-formed cpuset per vCPU. VmIsDown, Conflict, MigrationInProgress.
        """
        self._allowed("setNumberOfCpus")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidArgument(vmId=self.vm_id, numberOfCpus=count, reason="not a count >= 1")
        pins = None if cpusets is None else hx.cpusets(cpusets, count)
        vm_id, connection = self.vm_id, self._connection

        def set_vcpus() -> str:
            conn = connection()
            domain = domain_of(conn, vm_id)
            try:
                host_cpus = int(conn.getCPUMap()[0]) if pins is not None else 0
                maps = [hx.cpumap(cpus, host_cpus) for cpus in pins or ()]  # checked first
                domain.setVcpusFlags(count, LIVE)
                for vcpu, cpumap in enumerate(maps):
                    domain.pinVcpuFlags(vcpu, cpumap, LIVE)
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, SetNumberOfCpusFailed, numberOfCpus=count) from None
            return live_xml(domain)

        return self.operation("setNumberOfCpus", set_vcpus, then=self._replugged)

    def hotplugMemory(self, params: Mapping[str, Any]) -> CallbackFuture:  # noqa: N802
        """Attach the DIMM `params` describe (`xml`, or VDSM's `memory` {size MiB, node}).

        The future settles with `{}`, or fails with HotplugMemFailed (70).

        Raises:
            MissingParameter: neither `xml` nor `memory`. InvalidArgument: a bad size.
            VmIsDown, Conflict, MigrationInProgress.
        """
        self._allowed("hotplugMemory")
        device = _memory_device(params)
        guaranteed = _guaranteed(params)
        vm_id, connection = self.vm_id, self._connection

        def attach() -> str:
            domain = domain_of(connection(), vm_id)
            try:
                domain.attachDeviceFlags(device, LIVE)
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, HotplugMemFailed) from None
            if guaranteed is not None:
                with editing(domain):
                    try_set_metadata(
                        domain, hx.with_guaranteed(live_xml(domain), guaranteed), vm_id
                    )
            return live_xml(domain)

        return self.operation("hotplugMemory", attach, then=self._replugged)

    def hotunplugMemory(self, params: Mapping[str, Any]) -> CallbackFuture:  # noqa: N802
        """Ask the guest to release the DIMM `params` name (by its alias); answer at once.

        As VDSM, the future settles (with None) once libvirt has sent the request, and
        `memGuaranteedSize` (if given) is then recorded; the DIMM leaves the live XML
        when the guest lets it go (DEVICE_REMOVED: `hotplug_removal`), which a Linux
        guest does for memory it onlined movable. Fails with HotunplugMemFailed (85).

        Raises:
            MissingParameter: neither `xml` nor `memory`. InvalidArgument: no alias.
            VmIsDown, Conflict, MigrationInProgress.
        """
        self._allowed("hotunplugMemory")
        device = _memory_device(params)
        guaranteed = _guaranteed(params)
        alias = hx.alias_of(ET.fromstring(device))  # noqa: S314 - built or checked above
        if alias is None:
            raise InvalidArgument(param="params.memory.alias", reason="names no DIMM")
        vm_id = self.vm_id

        def guarantee(domain: Any) -> None:  # VDSM's _update_mem_guaranteed_size
            if guaranteed is not None:
                with editing(domain):
                    try_set_metadata(
                        domain, hx.with_guaranteed(live_xml(domain), guaranteed), vm_id
                    )

        return self._unplug(
            Removal(
                op="hotunplugMemory",
                failure=HotunplugMemFailed,
                forget=lambda _device: False,
                result=None,
                future=None,
                after_detach=guarantee,
            ),
            alias,
            device,
            wait=MEMORY_UNPLUG_WAIT,
        )

    # -- the CD ---------------------------------------------------------------------------

    def changeCD(  # noqa: N802 - the verb's name
        self, name: str | None, path: str, volume: DiskVolume | None
    ) -> CallbackFuture:
        """Load `path` into CD-ROM `name` (None: the VM's first), or eject it ("").

        `volume` is the storage volume `path` was prepared from (recorded in the CD's
        metadata), if any. The future settles with the volume the CD held before (for
        teardown; None if none), or fails with ChangeDiskFailed (41).

        Raises:
            ChangeDiskFailed: the VM has no such CD-ROM. VmIsDown, Conflict,
            MigrationInProgress.
        """
        self._allowed("changeCD")
        live = self.guest.xml
        element = hx.cdrom(live, name)
        if element is None:
            raise ChangeDiskFailed(vmId=self.vm_id, drive=name, reason="no such CD-ROM")
        target = element.find("target")
        dev = target.get("dev", "") if target is not None else ""
        device = hx.cdrom_with(element, path)
        before = hx.disk_metadata(live, dev)
        vm_id, connection = self.vm_id, self._connection

        def change() -> str:
            domain = domain_of(connection(), vm_id)
            flags = libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE | LIVE
            try:
                domain.updateDeviceFlags(device, flags)
            except libvirt.libvirtError as error:
                raise refused(vm_id, error, ChangeDiskFailed, drive=dev) from None
            held = [hx.cd_meta(dev, volume)] if volume is not None else []
            with editing(domain):
                metadata = hx.metadata_with(live_xml(domain), held, hx.disk_meta_named(dev))
                try_set_metadata(domain, metadata, vm_id)
            return live_xml(domain)

        def changed(now: str) -> DiskVolume | None:
            self._set_xml(now)
            log.info("VM %s: CD %s %s", vm_id, dev, f"loaded with {path}" if path else "ejected")
            return before

        return self.operation("changeCD", change, then=changed)

    # -- helpers --------------------------------------------------------------------------

    def _replugged(self, live: str) -> dict[str, Any]:
        self._set_xml(live)
        return {}


def _guaranteed(params: Mapping[str, Any]) -> int | None:
    """The guaranteed memory (MiB) hotplugMemory's params give, if any.

    Raises:
        InvalidArgument: not a whole number >= 0.
    """
    size = params.get("memGuaranteedSize")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArgument(param="params.memGuaranteedSize", value=size)
    return size


def _memory_device(params: Mapping[str, Any]) -> str:
    """The DIMM XML of hotplugMemory's params: `xml` as given, else built from `memory`."""
    xml = params.get("xml")
    if isinstance(xml, str) and xml.strip():
        return ET.tostring(hx.read_device(xml, "memory").element, encoding="unicode")
    memory = params.get("memory")
    if memory is None:
        raise MissingParameter(param="params.memory", reason="neither xml nor memory")
    if not isinstance(memory, Mapping):
        raise InvalidArgument(param="params.memory", reason="not an object")
    return hx.memory_xml(memory)
