"""Block-job verbs: VM.merge, cold merge, Image.reconcileVolumeChain, disk replication.

Params as the Engine sends them:
- `VM.merge` (JsonRpcVdsServer.merge, MergeVDSCommand): vmID, drive {poolID,
  domainID, imageID, volumeID}, baseVolUUID, topVolUUID, bandwidth (a string),
  jobUUID. Answers once libvirt's commit runs; the job shows in the VM's `vmJobs`
  until done (actors/vm/blockjobs.py).
- `StoragePool.prepareMerge` / `.finalizeMerge` (JsonRpcIIrsServer, the cold merge
  commands): storagepoolID and subchainInfo {sd_id, img_id, base_id, top_id,
  base_generation?} (SubchainInfoHelper); SPM tasks, answering the task id.
- `SDM.merge` (JsonRpcVdsServer.mergeSubchain): job_id, subchain_info, merge_bitmaps;
  a job polled with Host.getJobs.
- `Image.reconcileVolumeChain` (JsonRpcIIrsServer.reconcileVolumeChain):
  storagepoolID, storagedomainID, imageID, leafVolID; answers the chain (VDSM's
  bridge returns its `volumes`). Any host connected to the pool may run it.
- `VM.diskReplicateStart` / `.diskReplicateFinish` (JsonRpcVdsServer, the live
  storage migration commands): vmID, srcDisk, dstDisk {poolID, domainID, imageID,
  volumeID} (and needExtend, for block domains only): libvirt mirrors the drive into
  the destination volume, then pivots to it (actors/vm/blockjob_replica.py).
Image.deleteVolumes is in volume_verbs.py.
"""

from __future__ import annotations

from typing import Annotated, Any

import pykka

from hostvisor.actors.guest.errors import UnsupportedOperation, VmIsDown
from hostvisor.actors.storage.domain_ops import Where
from hostvisor.actors.storage.errors import NotSpm, StoragePoolUnknown, VolumeDoesNotExist
from hostvisor.actors.storage.merging import (
    FinalizeMerge,
    GenerationMismatch,
    MergeSubchain,
    PrepareMerge,
    ReconcileVolumeChain,
    SharedVolumeNonWritable,
    Subchain,
    VolumeChains,
    VolumeIsNotInChain,
    WrongParentVolume,
)
from hostvisor.actors.storage.model import check_uuid
from hostvisor.actors.vm import blockjob_proxy
from hostvisor.actors.vm.blockjob_merge import ImageFileNotFound, MergeFailed
from hostvisor.actors.vm.blockjob_replica import (
    ReplicaError,
    ReplicaNotReady,
    ReplicationNotInProgress,
)
from hostvisor.actors.vm.errors import NoSuchVm
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi, VmId

SpId = Annotated[str, Arg("the pool's UUID", wire="storagepoolID")]
SubchainInfo = Annotated[
    dict[str, Any], Arg("{sd_id, img_id, base_id, top_id, base_generation?}", wire="subchainInfo")
]
DiskSpec = Annotated[dict[str, Any], Arg("{poolID, domainID, imageID, volumeID}")]
SUBCHAIN_ERRORS = (
    StoragePoolUnknown,
    NotSpm,
    VolumeIsNotInChain,
    WrongParentVolume,
    SharedVolumeNonWritable,
)


def blockjob_verbs(vms: VmApi, storage: StorageApi) -> list[Verb]:
    """Return these verbs over the VM and storage APIs."""
    return verbs_of(BlockJobHandlers(vms, storage))


class BlockJobHandlers:
    """The handlers of the block-job verbs. Each runs on the API loop."""

    def __init__(self, vms: VmApi, storage: StorageApi) -> None:
        """Serve through `vms` and `storage`."""
        self.vms = vms
        self.client = storage.client
        self.chains = VolumeChains(storage.client)

    # -- live merge -------------------------------------------------------------------------

    @verb(
        "VM",
        "merge",
        returns="null",
        errors=(NoSuchVm, ImageFileNotFound, MergeFailed, VmIsDown, UnsupportedOperation),
        timeout=120.0,
    )
    async def merge(
        self,
        *,
        vm_id: VmId,
        drive: Annotated[dict[str, Any], Arg("the disk: {poolID, domainID, imageID, volumeID}")],
        base: Annotated[str, Arg("the volume merged into", wire="baseVolUUID")],
        top: Annotated[str, Arg("the volume merged away", wire="topVolUUID")],
        bandwidth: Annotated[str | int, Arg("MiB/s, 0 for no limit")] = 0,
        job_id: Annotated[str | None, Arg("the Engine's job id", wire="jobUUID")] = None,
    ) -> None:
        """Merge `top` into `base` on a running VM's disk (libvirt block commit).

        Returns once the commit runs; the job is in VM stats' `vmJobs` until the
        chain and its metadata are updated (an active layer is pivoted first).
        """
        chains = self.chains

        def ask(vm: Any) -> pykka.Future[Any]:
            return blockjob_proxy.merge(
                vm.ref, drive, base=base, top=top, bandwidth=bandwidth, job_id=job_id, chains=chains
            )

        started = await self.vms.retried(vm_id, ask)
        await settled(started)

    @verb(
        "VM",
        "diskReplicateStart",
        returns="null",
        errors=(NoSuchVm, ImageFileNotFound, ReplicaError, VmIsDown, UnsupportedOperation),
        timeout=120.0,
    )
    async def disk_replicate_start(
        self,
        *,
        vm_id: VmId,
        src: Annotated[dict[str, Any], Arg("the disk as the VM has it", wire="srcDisk")],
        dst: Annotated[dict[str, Any], Arg("its copy on another domain", wire="dstDisk")],
        need_extend: Annotated[bool, Arg("ignored on file domains", wire="needExtend")] = True,  # noqa: ARG002
    ) -> None:
        """Start mirroring a disk to a volume on another domain (live storage migration)."""
        chains = self.chains
        started = await self.vms.retried(
            vm_id, lambda vm: blockjob_proxy.disk_replicate_start(vm.ref, src, dst, chains)
        )
        await settled(started)

    @verb(
        "VM",
        "diskReplicateFinish",
        returns="null",
        errors=(
            NoSuchVm,
            ImageFileNotFound,
            ReplicationNotInProgress,
            ReplicaNotReady,
            ReplicaError,
            UnsupportedOperation,
        ),
        timeout=120.0,
    )
    async def disk_replicate_finish(
        self,
        *,
        vm_id: VmId,
        src: Annotated[dict[str, Any], Arg("the disk as the VM has it", wire="srcDisk")],
        dst: Annotated[dict[str, Any], Arg("the disk to use from now on", wire="dstDisk")],
    ) -> None:
        """End a disk's replication: pivot to `dstDisk`, or abort back to `srcDisk`."""
        chains = self.chains
        done = await self.vms.retried(
            vm_id, lambda vm: blockjob_proxy.disk_replicate_finish(vm.ref, src, dst, chains)
        )
        await settled(done)

    # -- storage ----------------------------------------------------------------------------

    @verb(
        "Image",
        "reconcileVolumeChain",
        returns="[UUID]",
        errors=(StoragePoolUnknown, VolumeDoesNotExist),
    )
    async def reconcile_volume_chain(
        self,
        *,
        sp: SpId,
        sd: Annotated[str, Arg("the domain's UUID", wire="storagedomainID")],
        img: Annotated[str, Arg("the image's UUID", wire="imageID")],
        leaf: Annotated[str, Arg("the last known leaf", wire="leafVolID")],
    ) -> list[str]:
        """The chain qemu-img sees from the leaf, the metadata synced to it (a stopped VM's).

        An ILLEGAL leaf (an interrupted active-layer merge) is left out.
        """
        op = ReconcileVolumeChain(
            img=check_uuid(img, "imageID"), leaf=check_uuid(leaf, "leafVolID")
        )
        await settled(self.client.pool().member_read(sp, sd, Where()))
        chain: list[str] = await settled(self.client.write(sd, op))
        return chain

    @verb(
        "StoragePool",
        "prepareMerge",
        returns="task id",
        errors=SUBCHAIN_ERRORS,
    )
    def prepare_merge(self, *, sp: SpId, subchain: SubchainInfo) -> pykka.Future[Any]:
        """Cold merge, step 1 (SPM; a task): the base can take the top (capacity)."""
        sub = Subchain.from_wire(subchain)
        return self.client.pool().member_task(sp, sub.sd, PrepareMerge(subchain=sub))

    @verb(
        "StoragePool",
        "finalizeMerge",
        returns="task id",
        errors=SUBCHAIN_ERRORS,
    )
    def finalize_merge(self, *, sp: SpId, subchain: SubchainInfo) -> pykka.Future[Any]:
        """Cold merge, step 3 (SPM; a task): the top leaves the chain (ILLEGAL; rebased)."""
        sub = Subchain.from_wire(subchain)
        return self.client.pool().member_task(sp, sub.sd, FinalizeMerge(subchain=sub))

    @verb(
        "SDM",
        "merge",
        doc="Cold merge, step 2: commit the top into the base (a job; see Host.getJobs).",
        errors=(GenerationMismatch, VolumeIsNotInChain, WrongParentVolume),
    )
    async def sdm_merge(
        self,
        *,
        job_id: Annotated[str, Arg("the caller's job id")],
        subchain: Annotated[dict[str, Any], Arg("the subchain", wire="subchain_info")],
        merge_bitmaps: Annotated[bool, Arg("ignored: no bitmaps here")] = False,  # noqa: ARG002
    ) -> bool:
        """SDM.merge: qemu-img commit of top into base as a job; the base's GEN grows by one."""
        sub = Subchain.from_wire(subchain, "subchain_info")
        await settled(self.client.domain(sub.sd))
        job = MergeSubchain(subchain=sub, client=self.client)
        await settled(self.client.tasks().submit_job(job_id, job, description=job.description))
        return True
