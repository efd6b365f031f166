"""Hotplug verbs: disks, NICs, CPUs, memory, diskSizeExtend, changeCD.

Params as the Engine sends them (ovirt-engine `JsonRpcVdsServer`): `hotplugDisk`,
`hotunplugDisk`, `hotplugNic`, `hotunplugNic`, `hotplugMemory` and `hotunplugMemory`
send `vmID` and `params` = `{vmId, xml}` (HotPlugDiskVDSCommand,
HotUnPlugDiskVDSCommand, HotPlugNicVDSCommand, HotUnplugNicVDSCommand) or, for memory,
`{vmId, memory: {size, node, alias, …}, memGuaranteedSize}` (MemoryUtils,
SetAmountOfMemoryVDSCommand, HotUnplugMemoryVDSCommand); `setNumberOfCpus` sends
`vmID, numberOfCpus` (a string; SetNumberOfCpusVDSCommand); `diskSizeExtend` sends
`vmID, driveSpecs {poolID, domainID, imageID, volumeID}, newSize` (a string;
ExtendVmDiskSizeVDSCommand); `changeCD` sends `vmID, driveSpec`: `{iface, index,
drive_spec}` with the CD's storage ids (or `{}` to eject), `{iface, index, path}`, or
a bare path (ChangeDiskVDSCommand); `hotplugLease` and `hotunplugLease` send `vmID,
lease: {type: "lease", lease_id, sd_id}` (HotPlugLeaseVDSCommand,
HotUnplugLeaseVDSCommand; JsonRpcVdsServer.createLeaseDict: the lease id is the VM's).

Results as VDSM's bridge puts them on the wire (`Bridge.py` command_info: the
`vmList` member of vm.py's answer): `{}` for the plugs and unplugs, setNumberOfCpus and
changeCD; `{devices: [{macAddr, alias}], xml}` for hotplugNic; the new size as a
string for diskSizeExtend; true for hotunplugMemory; `{}` for the lease verbs (the
Engine's StatusOnlyReturn reads only the status).

Storage is done here, around the VM actor's work: a hotplugged disk (and a CD given
by storage ids) is prepared before the actor attaches it and torn down if that fails;
an unplugged disk (and the CD a change replaced) is torn down once the guest has
released it. A container VM answers 75 for each verb.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Annotated, Any, cast

import pykka

from hostvisor.actors.container.proxy import ContainerProxy
from hostvisor.actors.container.spec import RUNTIME
from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.storage.domain_ops import PrepareImage, TeardownImage, VolumeInfo, VolumeSize
from hostvisor.actors.storage.model import check_uuid
from hostvisor.actors.vm import hotplug_client as client
from hostvisor.actors.vm import hotplug_xml as hx
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.actors.vm.errors import (
    MissingParameter,
    NoSuchVm,
    UnsupportedOperation,
    UpdateDeviceFailed,
    VmIsDown,
)
from hostvisor.actors.vm.hotplug_errors import (
    BadDiskResizeParameter,
    CannotPrepareImage,
    CannotPrepareLease,
    ChangeDiskFailed,
    HotplugDiskFailed,
    HotplugLeaseFailed,
    HotplugMemFailed,
    HotplugNicFailed,
    HotunplugDiskFailed,
    HotunplugLeaseFailed,
    HotunplugMemFailed,
    HotunplugNicFailed,
    ImageFileNotFound,
    SetNumberOfCpusFailed,
)
from hostvisor.actors.vm.hotplug_lease import LeaseDevice
from hostvisor.actors.vm.migrating import MigrationInProgress
from hostvisor.actors.vm.proxy import VmProxy
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi

log = logging.getLogger(__name__)

PLUG_TIMEOUT = 90.0
"""Seconds a hotplug verb may take: an unplug waits up to 30 s for the guest."""
VmIdParam = Annotated[str, Arg("the VM's UUID (else params.vmId)", wire="vmID")]
DeviceParams = Annotated[dict[str, Any], Arg("{vmId, xml}: the Engine's device document")]
MemoryParams = Annotated[
    dict[str, Any], Arg("{vmId, memory: {size MiB, node, alias}, memGuaranteedSize} or {xml}")
]
LeaseParams = Annotated[
    dict[str, Any], Arg("{type: lease, lease_id, sd_id}: the VM lease (the lease id is the VM's)")
]
_COMMON = (NoSuchVm, UnsupportedOperation, VmIsDown, MigrationInProgress, MissingParameter)
_IDS = ("poolID", "domainID", "imageID", "volumeID")


def hotplug_verbs(vms: VmApi, storage: StorageApi) -> list[Verb]:
    """Return these verbs over the VM and storage APIs."""
    return verbs_of(HotplugHandlers(vms, storage))


def _vm_of(vm_id: str, params: Mapping[str, Any]) -> str:
    """The VM a hotplug verb is for: `vmID`, else `params.vmId` (VDSM requires the key)."""
    if "vmId" not in params:
        raise MissingParameter(missing=["vmId"], param="params")
    inner = params["vmId"]
    if not isinstance(inner, str):
        raise InvalidArgument(param="params.vmId", reason="not a string")
    return vm_id or inner


def _xml_of(params: Mapping[str, Any]) -> str:
    xml = params.get("xml")
    if xml is None:
        raise MissingParameter(missing=["xml"], param="params")
    if not isinstance(xml, str):
        raise InvalidArgument(param="params.xml", reason="not a string")
    return xml


def _volume_of(spec: Mapping[str, Any], name: str = "") -> DiskVolume | None:
    """The storage ids of a drive spec (None when it names none)."""
    ids = {key: spec.get(key) for key in _IDS}
    if not any(ids.values()):
        return None
    if not all(isinstance(value, str) and value for value in ids.values()):
        raise InvalidArgument(param="driveSpec", reason=f"needs all of {', '.join(_IDS)}")
    return DiskVolume(
        name=name,
        pool_id=str(ids["poolID"]),
        domain_id=str(ids["domainID"]),
        image_id=str(ids["imageID"]),
        volume_id=str(ids["volumeID"]),
    )


class HotplugHandlers:
    """The handlers of the hotplug verbs. Each runs on the API loop and never blocks it."""

    def __init__(self, vms: VmApi, storage: StorageApi) -> None:
        """Serve through the VM and storage APIs."""
        self.vms = vms
        self.storage = storage

    # -- helpers --------------------------------------------------------------------------

    async def _libvirt_vm(self, vm_id: str, verb_name: str) -> None:
        """Raise NoSuchVm, Recovering, or 75 for a container VM (it hotplugs nothing)."""
        guest = await self.vms.vm(vm_id)
        if isinstance(guest, ContainerProxy):
            raise UnsupportedOperation(vmId=vm_id, operation=verb_name, runtime=RUNTIME)

    async def _run(self, vm_id: str, ask: Callable[[VmProxy], client.Answer]) -> Any:
        """Send `ask` to the VM's actor and await the work it starts."""
        work: pykka.Future[Any] = await self.vms.retried(vm_id, ask)
        return await settled(work)

    async def _prepare(self, volume: DiskVolume) -> tuple[str, str]:
        prepared = await self.storage.prepare_disk(volume)
        return prepared.path, prepared.format

    async def _teardown(self, volume: DiskVolume | None) -> None:
        """Tear a volume down; a failure is only logged (the device change is done)."""
        if volume is None:
            return
        op = TeardownImage(img=volume.image_id, vol=volume.volume_id)
        try:
            pool = self.storage.client.pool()
            await settled(pool.member_read(volume.pool_id, volume.domain_id, op))
        except HostvisorError as error:
            log.warning("tearing down image %s failed: %s", volume.image_id, error)

    # -- disks ----------------------------------------------------------------------------

    @verb(
        "VM",
        "hotplugDisk",
        returns="{}",
        errors=(*_COMMON, HotplugDiskFailed, InvalidArgument),
        timeout=PLUG_TIMEOUT,
    )
    async def hotplug_disk(self, *, vm_id: VmIdParam = "", params: DeviceParams) -> dict[str, Any]:
        """Attach a disk to a running VM: the volume its metadata names is prepared first.

        The disk's target name is a hint; a free one is taken if it is in use.
        """
        vm_id = _vm_of(vm_id, params)
        await self._libvirt_vm(vm_id, "hotplugDisk")
        xml = _xml_of(params)
        volume = hx.disk_volume(hx.read_device(xml, "disk"))
        if volume is not None:
            path, fmt = await self._prepare(volume)
            xml = hx.with_prepared(xml, PreparedDisk(path=path, format=fmt))
        try:
            await self._run(vm_id, lambda vm: client.hotplug_disk(vm, xml))
        except BaseException:
            await self._teardown(volume)
            raise
        return {}

    @verb(
        "VM",
        "hotunplugDisk",
        returns="{}",
        errors=(*_COMMON, HotunplugDiskFailed, InvalidArgument),
        timeout=PLUG_TIMEOUT,
    )
    async def hotunplug_disk(
        self, *, vm_id: VmIdParam = "", params: DeviceParams
    ) -> dict[str, Any]:
        """Unplug a disk (named by its alias); answers once the guest has released it.

        Its volume is torn down afterwards.
        """
        vm_id = _vm_of(vm_id, params)
        await self._libvirt_vm(vm_id, "hotunplugDisk")
        xml = _xml_of(params)
        volume = await self._run(vm_id, lambda vm: client.hotunplug_disk(vm, xml))
        await self._teardown(volume)
        return {}

    @verb(
        "VM",
        "diskSizeExtend",
        returns="string",
        errors=(
            NoSuchVm,
            UnsupportedOperation,
            VmIsDown,
            ImageFileNotFound,
            BadDiskResizeParameter,
            UpdateDeviceFailed,
        ),
        timeout=PLUG_TIMEOUT,
    )
    async def disk_size_extend(
        self,
        *,
        vm_id: Annotated[str, Arg("the VM's UUID", wire="vmID")],
        drive_specs: Annotated[
            dict[str, Any], Arg("{poolID, domainID, imageID, volumeID}", wire="driveSpecs")
        ],
        new_size: Annotated[str | int, Arg("the new size, bytes", wire="newSize")],
    ) -> str:
        """Grow a running VM's disk: qcow2 live (then its capacity), raw to its volume's size.

        A raw volume is grown through storage first (Volume.extendSize, as the Engine
        does); the guest then sees the volume's size. Answers the new size.
        """
        try:
            size = int(new_size)
        except ValueError:
            raise BadDiskResizeParameter(vmId=vm_id, newSize=new_size) from None
        volume = _volume_of(drive_specs)
        if volume is None:
            raise ImageFileNotFound(vmId=vm_id, driveSpecs=drive_specs)
        await self._libvirt_vm(vm_id, "diskSizeExtend")
        # VDSM looks the drive up in the VM first (imageErr), before storage is asked.
        definition = await self.vms.rendered("definition", vm_id)
        if definition["status"] == "Down":
            raise VmIsDown(vmId=vm_id, operation="diskSizeExtend")
        if hx.disk_of_image(definition["xml"], volume.domain_id, volume.image_id) is None:
            raise ImageFileNotFound(vmId=vm_id, driveSpecs=drive_specs)
        pool = self.storage.client.pool()
        sp, sd = volume.pool_id, volume.domain_id
        info = await settled(
            pool.member_read(sp, sd, VolumeInfo(img=volume.image_id, vol=volume.volume_id))
        )
        raw = info.get("format") == "RAW"
        if raw:
            sizes = await settled(
                pool.member_read(sp, sd, VolumeSize(img=volume.image_id, vol=volume.volume_id))
            )
            size = int(sizes["apparentsize"])
        grown: int = await self._run(
            vm_id, lambda vm: client.disk_size_extend(vm, sd, volume.image_id, size)
        )
        if not raw:  # the qcow2 grew under qemu: its capacity follows (prepare repairs CAP)
            await settled(
                pool.member_read(sp, sd, PrepareImage(img=volume.image_id, vol=volume.volume_id))
            )
        return str(grown)

    # -- NICs -----------------------------------------------------------------------------

    @verb(
        "VM",
        "hotplugNic",
        returns="{devices: [{macAddr, alias}], xml}",
        errors=(*_COMMON, HotplugNicFailed, InvalidArgument),
        timeout=PLUG_TIMEOUT,
    )
    async def hotplug_nic(self, *, vm_id: VmIdParam = "", params: DeviceParams) -> dict[str, Any]:
        """Attach a NIC to a running VM (the Engine's `<hotplug>` XML with its metadata)."""
        vm_id = _vm_of(vm_id, params)
        await self._libvirt_vm(vm_id, "hotplugNic")
        xml = _xml_of(params)
        plugged: dict[str, Any] = await self._run(vm_id, lambda vm: client.hotplug_nic(vm, xml))
        return plugged

    @verb(
        "VM",
        "hotunplugNic",
        returns="{}",
        errors=(*_COMMON, HotunplugNicFailed, InvalidArgument),
        timeout=PLUG_TIMEOUT,
    )
    async def hotunplug_nic(self, *, vm_id: VmIdParam = "", params: DeviceParams) -> dict[str, Any]:
        """Unplug a NIC (named by its alias); answers once the guest has released it."""
        vm_id = _vm_of(vm_id, params)
        await self._libvirt_vm(vm_id, "hotunplugNic")
        xml = _xml_of(params)
        await self._run(vm_id, lambda vm: client.hotunplug_nic(vm, xml))
        return {}

    # -- CPUs and memory ------------------------------------------------------------------

    @verb(
        "VM",
        "setNumberOfCpus",
        returns="{}",
        errors=(*_COMMON, SetNumberOfCpusFailed, InvalidArgument),
    )
    async def set_number_of_cpus(
        self,
        *,
        vm_id: Annotated[str, Arg("the VM's UUID", wire="vmID")],
        number_of_cpus: Annotated[
            str | int, Arg("the new vCPU count (the Engine sends a string)", wire="numberOfCpus")
        ],
        cpusets: Annotated[
            list[str] | None, Arg("a cpuset per vCPU (pinned VMs)", default=None)
        ] = None,
    ) -> dict[str, Any]:
        """Set a running VM's number of vCPUs (live); with `cpusets`, pin each vCPU.

        `cpusets` (VDSM 4.5: the Engine's pinning policies) holds one host cpuset per
        vCPU, "1,3-5"; its length must match numberOfCpus.
        """
        try:
            count = int(number_of_cpus)
        except ValueError:
            raise InvalidArgument(param="numberOfCpus", value=number_of_cpus) from None
        if cpusets is not None and len(cpusets) != count:
            raise InvalidArgument(
                param="cpusets", reason=f"length {len(cpusets)} must match numberOfCpus {count}"
            )
        await self._libvirt_vm(vm_id, "setNumberOfCpus")
        await self._run(vm_id, lambda vm: client.set_number_of_cpus(vm, count, cpusets))
        return {}

    @verb(
        "VM",
        "hotplugMemory",
        returns="{}",
        errors=(*_COMMON, HotplugMemFailed, InvalidArgument),
    )
    async def hotplug_memory(
        self, *, vm_id: VmIdParam = "", params: MemoryParams
    ) -> dict[str, Any]:
        """Add a DIMM to a running VM's NUMA node."""
        vm_id = _vm_of(vm_id, params)
        await self._libvirt_vm(vm_id, "hotplugMemory")
        await self._run(vm_id, lambda vm: client.hotplug_memory(vm, params))
        return {}

    @verb(
        "VM",
        "hotunplugMemory",
        errors=(*_COMMON, HotunplugMemFailed, InvalidArgument),
    )
    async def hotunplug_memory(self, *, vm_id: VmIdParam = "", params: MemoryParams) -> bool:
        """Ask a running VM's guest to release a DIMM (by its alias); answers at once.

        As VDSM, `memGuaranteedSize` (if sent) is recorded once the request is sent;
        the DIMM leaves the VM's devices when the guest lets it go (DEVICE_REMOVED).
        """
        vm_id = _vm_of(vm_id, params)
        await self._libvirt_vm(vm_id, "hotunplugMemory")
        await self._run(vm_id, lambda vm: client.hotunplug_memory(vm, params))
        return True

    # -- leases -------------------------------------------------------------------------

    @verb(
        "VM",
        "hotplugLease",
        returns="{}",
        errors=(*_COMMON, HotplugLeaseFailed, CannotPrepareLease, InvalidArgument),
        timeout=PLUG_TIMEOUT,
    )
    async def hotplug_lease(
        self, *, vm_id: Annotated[str, Arg("the VM's UUID", wire="vmID")], lease: LeaseParams
    ) -> dict[str, Any]:
        """Add a VM lease to a running VM: libvirt's lock manager acquires it for QEMU.

        The lease's path and offset on this host come from Lease.info (VDSM's
        `lease.prepare`), unless `lease` carries both already. A lease that cannot be
        found answers 100, as VDSM (its CannotPrepare is a general exception); one
        that libvirt cannot acquire (another host holds it) answers 86.
        """
        sd_id, lease_id = _lease_ids(lease)
        await self._libvirt_vm(vm_id, "hotplugLease")
        # A Down VM answers 6 before storage is asked (the actor checks again).
        if (await self.vms.rendered("definition", vm_id))["status"] == "Down":
            raise VmIsDown(vmId=vm_id, operation="hotplugLease")
        if "path" in lease and "offset" in lease:  # prepared already (VDSM's _is_prepared)
            path, offset = lease["path"], lease["offset"]
        else:
            try:
                info = await self.storage.lease_info(sd_id, lease_id)
            except HostvisorError as error:
                raise CannotPrepareLease(
                    vmId=vm_id, lease=f"{sd_id}:{lease_id}", reason=str(error)
                ) from None
            path, offset = info["path"], info["offset"]
        if not isinstance(path, str) or isinstance(offset, bool) or not isinstance(offset, int):
            raise InvalidArgument(param="lease", reason="path must be a string, offset a number")
        device = LeaseDevice(sd_id=sd_id, lease_id=lease_id, path=path, offset=offset)
        await self._run(vm_id, lambda vm: client.hotplug_lease(vm, device))
        return {}

    @verb(
        "VM",
        "hotunplugLease",
        returns="{}",
        errors=(*_COMMON, HotunplugLeaseFailed, InvalidArgument),
        timeout=PLUG_TIMEOUT,
    )
    async def hotunplug_lease(
        self, *, vm_id: Annotated[str, Arg("the VM's UUID", wire="vmID")], lease: LeaseParams
    ) -> dict[str, Any]:
        """Remove a VM lease from a running VM: libvirt releases it (sanlock owner gone).

        A lease the VM does not hold answers 87 ("No such lease").
        """
        sd_id, lease_id = _lease_ids(lease)
        await self._libvirt_vm(vm_id, "hotunplugLease")
        await self._run(vm_id, lambda vm: client.hotunplug_lease(vm, sd_id, lease_id))
        return {}

    # -- the CD ---------------------------------------------------------------------------

    @verb(
        "VM",
        "changeCD",
        returns="{}",
        errors=(*_COMMON, ChangeDiskFailed, CannotPrepareImage, InvalidArgument),
        timeout=PLUG_TIMEOUT,
    )
    async def change_cd(
        self,
        *,
        vm_id: Annotated[str, Arg("the VM's UUID", wire="vmID")],
        drive_spec: Annotated[
            Any, Arg("{iface, index, drive_spec | path}, or a path", wire="driveSpec")
        ],
    ) -> dict[str, Any]:
        """Load an ISO into a running VM's CD-ROM (a path, or an image by storage ids), or eject.

        An empty path, or an empty `drive_spec`, ejects the CD. The CD a change
        replaces is torn down if it was a storage volume.
        """
        name, path, volume = _cd_request(drive_spec)
        await self._libvirt_vm(vm_id, "changeCD")
        if volume is not None:
            try:
                path, _fmt = await self._prepare(volume)
            except HostvisorError as error:
                raise CannotPrepareImage(
                    vmId=vm_id,
                    imageID=volume.image_id,
                    volumeID=volume.volume_id,
                    reason=str(error),
                ) from None
        try:
            before = await self._run(vm_id, lambda vm: client.change_cd(vm, name, path, volume))
        except BaseException:
            await self._teardown(volume)
            raise
        if before != volume:
            await self._teardown(before)
        return {}


def _lease_ids(lease: Mapping[str, Any]) -> tuple[str, str]:
    """(sd_id, lease_id) of the lease verbs' `lease`. Raises InvalidArgument (not UUIDs)."""
    sd_id, lease_id = lease.get("sd_id"), lease.get("lease_id")
    return check_uuid(cast("str", sd_id), "lease.sd_id"), check_uuid(
        cast("str", lease_id), "lease.lease_id"
    )


def _cd_request(spec: Any) -> tuple[str | None, str, DiskVolume | None]:
    """(CD name or None for the first, path, storage volume) of changeCD's driveSpec.

    Raises:
        InvalidArgument: neither a path nor an object. MissingParameter: no iface or
        index, or neither drive_spec nor path.
    """
    if isinstance(spec, str):
        return None, spec, None
    if not isinstance(spec, dict):
        raise InvalidArgument(param="driveSpec", reason="neither a path nor an object")
    if "iface" not in spec or "index" not in spec:
        missing = [key for key in ("iface", "index") if key not in spec]
        raise MissingParameter(missing=missing, param="driveSpec")
    try:
        index = int(spec["index"])
    except (TypeError, ValueError):
        raise InvalidArgument(param="driveSpec.index", value=spec["index"]) from None
    iface = spec["iface"]
    if not isinstance(iface, str):
        raise InvalidArgument(param="driveSpec.iface", reason="not a string")
    name = hx.disk_name(iface, index)
    if "drive_spec" in spec:
        pdiv = spec["drive_spec"] or {}
        if not isinstance(pdiv, dict):
            raise InvalidArgument(param="driveSpec.drive_spec", reason="not an object")
        volume = _volume_of(pdiv, name)
        return name, "", volume
    path = spec.get("path")
    if path is None:
        raise MissingParameter(missing=["drive_spec or path"], param="driveSpec")
    if not isinstance(path, str):
        raise InvalidArgument(param="driveSpec.path", reason="not a string")
    return name, path, None
