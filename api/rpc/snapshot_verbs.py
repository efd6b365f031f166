"""VM snapshots, freeze/thaw and hibernation: VM.snapshot, freeze, thaw, hibernate.

Params as the Engine sends them (ovirt-engine `JsonRpcVdsServer.snapshot`, built by
`SnapshotVDSCommand`; `JsonRpcVdsServer.freeze`/`thaw`): VM.snapshot gets `vmID`,
`snapDrives` ([{domainID, imageID, volumeID, baseVolumeID}]), `frozen`, `jobUUID`,
and `freeze_timeout` — or, with memory, `snapMemory` and `timeout` — in minutes.
Answers as VDSM's: VM.snapshot answers its status once the job is listed, and the
Engine follows the job with `Host.getJobs(job_type="virt", job_ids=[jobUUID])`
(`virt_jobs` below is what that verb merges in); freeze and thaw answer their status.
VM.hibernate (`JsonRpcVdsServer.hibernate`: `vmID`, `hibernationVolHandle`) answers
once the save has started; VM.create with `memoryDumpVolume`/`memoryConfVolume`
(`CreateBrokerVDSCommand`) restores the VM (`restore_vm`, which VM.create calls).

VM.create's `_X_tpmdata`/`_X_nvramdata` (`CreateBrokerVDSCommand`: the TPM and NVRAM
data the Engine read with VM.getExternalData) are put back on the host before the
domain is created (`restore_external_data`, which VM.create and `restore_vm` call):
as VDSM, bad data fails VM.create with ExternalDataFailed (89) and nothing is made.

A VM running as a container answers code 75 (its actor has no snapshots), before
its params are looked at (`snapDrives` is bound as optional for that, and its
absence then refused as the binding refuses a missing param, -32602).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from hostvisor.actors.container.proxy import ContainerProxy
from hostvisor.actors.errors import AlreadyExists, Conflict, InvalidArgument
from hostvisor.actors.hypervisor.addresses import HYPERVISOR
from hostvisor.actors.hypervisor.proxy import HypervisorProxy
from hostvisor.actors.vm import domxml, external_data
from hostvisor.actors.vm.addresses import VM_GUESTS, vm_path
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.actors.vm.errors import (
    NoSuchVm,
    UnsupportedOperation,
    VmCreateError,
    VmExists,
    VmIsDown,
)
from hostvisor.actors.vm.migrating import MigrationInProgress
from hostvisor.actors.vm.snapshot_hibernation import HibernateRequest, MemoryVolumes
from hostvisor.actors.vm.snapshot_plan import (
    FreezeFailed,
    GuestAgentUnresponsive,
    SnapshotFailed,
    ThawFailed,
    check_drives,
)
from hostvisor.actors.vm.snapshot_storage import NewLeaf
from hostvisor.actors.vm.snapshots import SnapshotClient, SnapshotRequest, VirtJobExists
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import XML_REQUIRED, VmApi, VmId
from hostvisor.supervision.supervisor import StartChild

PREPARE_TIMEOUT = 60.0
"""Seconds a snapshot's volume prepare may take (on the job's worker)."""
JOBS_TIMEOUT = 5.0
"""Seconds each VM has to list its virt jobs for Host.getJobs."""
MINUTE = 60.0
CONNECTION_TIMEOUT = 5.0
"""Seconds the hypervisor actor has to hand over its connection."""

SnapDrives = Annotated[
    list[Any] | None,
    Arg("[{domainID, imageID, volumeID, baseVolumeID}] (required)", wire="snapDrives"),
]


class MissingParam(InvalidArgument):
    """A required param is missing: JSON-RPC's invalid params, as the binding answers it."""

    code = -32602
    message = "Invalid params"


def snapshot_verbs(vms: VmApi, storage: StorageApi) -> list[Verb]:
    """Return these verbs over the VM and storage APIs."""
    return verbs_of(SnapshotHandlers(vms, storage))


def blocking_prepare(
    storage: StorageApi, timeout: float = PREPARE_TIMEOUT
) -> Callable[[DiskVolume], PreparedDisk]:
    """A prepare of a new volume over a chain in use, blocking (any worker; never the loop).

    A snapshot's new leaf and the memory volumes: `NewLeaf` checks the volume itself
    (its chain below is the one the VM runs on), not every layer again.

    Raises (when called): the storage's errors (VolumeDoesNotExist, ...), pykka.Timeout.
    """

    def prepare(disk: DiskVolume) -> PreparedDisk:
        op = NewLeaf(img=disk.image_id, vol=disk.volume_id)
        pool = storage.client.pool()
        path, fmt, _capacity = pool.member_read(disk.pool_id, disk.domain_id, op).get(
            timeout=timeout
        )
        return PreparedDisk(path=path, format=fmt)

    return prepare


async def virt_jobs(
    vms: VmApi, job_type: str | None = None, job_ids: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """The VMs' virt jobs for Host.getJobs (runs on the API loop; never blocks).

    Every libvirt VM is asked at once, each bounded by `JOBS_TIMEOUT`; one that does
    not answer is left out. None for a `job_type` other than "virt".
    """
    if job_type not in (None, "", "virt"):
        return {}
    wanted = list(job_ids)
    refs = [ref for vm_id in vms.vm_ids() if (ref := vms.registry.get(vm_path(vm_id)))]
    answers = await asyncio.gather(
        *(settled(SnapshotClient(ref).virt_jobs(wanted), timeout=JOBS_TIMEOUT) for ref in refs),
        return_exceptions=True,
    )
    jobs: dict[str, dict[str, Any]] = {}
    for answer in answers:
        if isinstance(answer, dict):
            jobs.update(answer)
    return jobs


class SnapshotHandlers:
    """The handlers of these verbs. Each runs on the API loop."""

    def __init__(self, vms: VmApi, storage: StorageApi) -> None:
        """Serve through `vms` and prepare volumes through `storage`."""
        self.vms = vms
        self.prepare = blocking_prepare(storage)

    @verb(
        "VM",
        "snapshot",
        returns="null",
        errors=(
            NoSuchVm,
            InvalidArgument,
            MigrationInProgress,
            SnapshotFailed,
            VirtJobExists,
            UnsupportedOperation,
        ),
    )
    async def snapshot(  # noqa: PLR0913 - the Engine's params
        self,
        *,
        vm_id: VmId,
        snap_drives: SnapDrives = None,
        snap_memory: Annotated[
            str | None, Arg("memory volumes: sd,sp,img,vol,confImg,confVol", wire="snapMemory")
        ] = None,
        frozen: Annotated[bool, Arg("the Engine froze the guest already")] = False,
        job_uuid: Annotated[str | None, Arg("the job's id", wire="jobUUID")] = None,
        job_timeout: Annotated[int, Arg("minutes a memory snapshot may take", wire="timeout")] = 30,
        freeze_timeout: Annotated[int, Arg("minutes the guest may stay frozen")] = 8,
    ) -> None:
        """Take a live external disk snapshot onto the new volumes, as a virt job.

        The job (its id the `jobUUID`) is listed by Host.getJobs; it ends done or
        failed (error 48). The drives then run on the new volumes; the VM's metadata
        names them.
        """
        if isinstance(await self.vms.vm(vm_id), ContainerProxy):
            # Its runtime has no snapshots: code 75 naming it (before the params).
            await self.vms.retried(vm_id, lambda vm: vm.unsupported("snapshot"))
        if snap_drives is None:
            raise MissingParam(method="VM.snapshot", param="snapDrives", reason="missing")
        if job_timeout <= 0 or freeze_timeout <= 0:
            name = "timeout" if job_timeout <= 0 else "freeze_timeout"
            raise InvalidArgument(action="VM.snapshot", parameter=name, value=0)
        drives = check_drives(snap_drives)
        memory = MemoryVolumes.of_handle(snap_memory, "snapMemory") if snap_memory else None
        if job_uuid is not None and not job_uuid.strip():
            raise InvalidArgument(param="jobUUID", reason="an empty job id")
        request = SnapshotRequest(
            job_id=job_uuid or str(uuid.uuid4()),
            drives=tuple(drives),
            frozen=frozen,
            freeze_timeout=freeze_timeout * MINUTE,
            prepare=self.prepare,
            memory=memory,
            timeout=job_timeout * MINUTE,
        )
        recorded = await self.vms.retried(
            vm_id, lambda vm: SnapshotClient(vm.ref).snapshot(request)
        )
        await settled(recorded, timeout=PREPARE_TIMEOUT + JOBS_TIMEOUT)

    @verb(
        "VM",
        "freeze",
        returns="null",
        errors=(NoSuchVm, GuestAgentUnresponsive, UnsupportedOperation, FreezeFailed),
    )
    async def freeze(self, *, vm_id: VmId) -> None:
        """Freeze the guest's file systems through the qemu guest agent."""
        operation = await self.vms.retried(vm_id, lambda vm: SnapshotClient(vm.ref).freeze())
        await settled(operation)

    @verb(
        "VM",
        "thaw",
        returns="null",
        errors=(NoSuchVm, GuestAgentUnresponsive, UnsupportedOperation, ThawFailed),
    )
    async def thaw(self, *, vm_id: VmId) -> None:
        """Thaw the guest's file systems through the qemu guest agent."""
        operation = await self.vms.retried(vm_id, lambda vm: SnapshotClient(vm.ref).thaw())
        await settled(operation)

    @verb(
        "VM",
        "hibernate",
        returns="null",
        errors=(NoSuchVm, InvalidArgument, VmIsDown, Conflict, MigrationInProgress),
    )
    async def hibernate(
        self,
        *,
        vm_id: VmId,
        handle: Annotated[
            str,
            Arg("sdUUID,spUUID,dumpImg,dumpVol,confImg,confVol", wire="hibernationVolHandle"),
        ],
    ) -> None:
        """Save the VM's memory and device state onto the Engine's two volumes.

        Answers once the save has started ("Saving State"); the VM then goes Down with
        exit reason 5 (SaveState succeeded), or is Up again if the save failed. VM.create
        with the same volumes (memoryDumpVolume, memoryConfVolume) restores it.
        """
        volumes = MemoryVolumes.of_handle(handle)
        request = HibernateRequest(volumes=volumes, prepare=self.prepare)
        await self.vms.retried(vm_id, lambda vm: SnapshotClient(vm.ref).hibernate(request))


def is_restore(vm_params: dict[str, Any]) -> bool:
    """Whether VM.create's vmParams ask for a restore (memory volumes named)."""
    return any(
        key in vm_params for key in ("memoryDumpVolume", "memoryConfVolume", "hiberVolHandle")
    )


async def restore_vm(api: VmApi, vm_params: dict[str, Any]) -> dict[str, Any]:
    """VM.create with memory volumes: bring a hibernated VM back (the API loop).

    The dump and configuration volumes are prepared, and the VM's disks; the VM's
    actor starts waiting for its guest, then restores it from the dump. Answers as
    VM.create does, at once, the VM "Restoring state" (Up once libvirt has restored
    it; Down, reason 3, if it could not).

    Raises:
        InvalidArgument: malformed memory volumes. VmCreateError: no XML, no storage.
        VmExists: the VM runs here. The storage's errors for volumes it lacks.
    """
    volumes = MemoryVolumes.of_params(vm_params)
    if volumes is None:
        raise InvalidArgument(param="vmParams", reason="no memory volumes to restore from")
    xml = vm_params.get("xml") or vm_params.get("_srcDomXML")
    if not isinstance(xml, str) or not xml.strip():
        raise VmCreateError(reason=XML_REQUIRED)
    spec = domxml.parse_untrusted(xml)
    if api.guest(spec.vm_id) is not None:
        raise VmExists(vmId=spec.vm_id)
    initial = external_data.InitialData.of_params(vm_params)
    if api.prepare_disk is None:
        raise VmCreateError(reason="this host has no storage to restore from")
    dump = await api.prepare_disk(volumes.dump)
    conf = await api.prepare_disk(volumes.conf)
    xml = await api.prepared_xml(xml)
    spec = domxml.parse(xml)
    if initial is not None:
        await restore_external_data(api, xml, initial)
    try:
        await settled(
            api.supervisor(VM_GUESTS).ask(
                StartChild(api.vm_child(spec, incoming=True)), block=False
            )
        )
    except AlreadyExists:
        raise VmExists(vmId=spec.vm_id) from None
    await api.retried(spec.vm_id, lambda vm: SnapshotClient(vm.ref).restore(volumes, dump, conf))
    info = await api.rendered("info", spec.vm_id)
    return {
        "vmId": spec.vm_id,
        "status": info["status"],
        "statusTime": info["statusTime"],
        "xml": xml,
    }


async def restore_external_data(api: VmApi, xml: str, initial: external_data.InitialData) -> None:
    """Put the VM's TPM/NVRAM data where its launch will read it (the API loop).

    Runs before the VM's actor starts, as VDSM writes the data before it creates the
    domain; the writing runs on a worker thread (`external_data.restore_before_launch`), so the
    loop never blocks. The NVRAM goes where the XML as this host launches it
    (`hostpaths.localize`) names it.

    Raises:
        VmExists: libvirt runs a domain of that id (its data is not touched).
        ExternalDataFailed (89): the data could not be written.
    """
    hypervisor = HypervisorProxy(api.registry.lookup(HYPERVISOR))
    connection = await settled(hypervisor.connection(), timeout=CONNECTION_TIMEOUT)
    await asyncio.to_thread(external_data.restore_before_launch, connection, xml, initial)
