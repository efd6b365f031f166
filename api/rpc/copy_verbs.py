"""Copy and move verbs: Volume.copy, Image.move/cloneStructure/syncData, measure, SDM jobs.

The params are what the Engine sends (ovirt-engine's JsonRpcIIrsServer.copyImage,
moveImage, cloneImageStructure, syncImageData; JsonRpcVdsServer.measureVolume,
getQemuImageInfo, updateVolume, amendVolume, sparsifyVolume), the results and error
codes VDSM's (lib/vdsm/storage/hsm.py, sdm/api/*.py).

The copies are SPM tasks: each verb checks everything it can first — this host is
connected to the pool (309) and its SPM (654), both domains are in the pool (353),
the source is there (268, 201) and whole and LEGAL (262), the destination is free
(212) — so bad input changes nothing, then answers a task id at once; the work
(actors/storage/copying_works.py) runs on a worker of the task manager, its
progress in Host.getAllTasks. The SDM verbs answer `true` at once and run as jobs
polled with Host.getJobs; as in VDSM, a missing volume fails the job, not the verb.
"""

from __future__ import annotations

from typing import Annotated, Any

import pykka

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.copying import (
    MAX_GENERATION,
    Attributes,
    ImageState,
    Layout,
    Measure,
    QemuInfo,
    ReadFacts,
    ReadLayout,
)
from hostvisor.actors.storage.copying_errors import (
    IncorrectFormat,
    IncorrectType,
    MoveTemplateImageError,
)
from hostvisor.actors.storage.copying_jobs import (
    AmendVolume,
    SparsifyVolume,
    UpdateVolume,
    check_compat,
)
from hostvisor.actors.storage.copying_works import (
    COPY,
    MOVE,
    CloneStructure,
    CopyCollapsed,
    CopyImage,
    Side,
    SyncData,
    sync_pairs,
)
from hostvisor.actors.storage.errors import (
    StorageInvalidParameter,
    StoragePoolUnknown,
    VolumeAlreadyExists,
    VolumeDoesNotExist,
)
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    Legality,
    Preallocation,
    VolumeFormat,
    check_uuid,
)
from hostvisor.actors.storage.sdm import Endpoint
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi

VolId = Annotated[str, Arg("the volume's UUID", wire="volumeID")]
SpId = Annotated[str, Arg("the pool's UUID", wire="storagepoolID")]
SdId = Annotated[str, Arg("the domain's UUID", wire="storagedomainID")]
ImgId = Annotated[str, Arg("the image's UUID", wire="imageID")]
DstSd = Annotated[str, Arg("the destination domain's UUID", wire="dstSdUUID")]
JobId = Annotated[str, Arg("the caller's job id")]
VolInfo = Annotated[dict[str, Any], Arg("{sd_id, img_id, vol_id, generation?}")]
Ignored = Annotated[bool, Arg("ignored (file domains)")]
SHARED_ROLE = 6
"""Volume.copy's volType for a template (VDSM's SHARED_VOL)."""
ERRORS = (StoragePoolUnknown, VolumeDoesNotExist)


def copy_verbs(vms: VmApi, storage: StorageApi) -> list[Verb]:
    """Return these verbs over the VM and storage APIs."""
    del vms
    return verbs_of(CopyHandlers(storage))


def _format(value: int, name: str) -> VolumeFormat:
    try:
        return VolumeFormat(value)
    except ValueError:
        raise IncorrectFormat(param=name, value=value) from None


def _prealloc(value: int) -> Preallocation:
    try:
        return Preallocation(value)
    except ValueError:
        raise IncorrectType(param="preallocate", value=value) from None


def _other_domain(sd: str, dst: str) -> str:
    if check_uuid(dst, "dstSdUUID") == sd:
        raise StorageInvalidParameter(name="dstSdUUID", reason="must differ from the source")
    return dst


class CopyHandlers:
    """The handlers of the copy verbs, over one `StorageApi` (the API loop)."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.client = api.client

    async def _read(self, sp: str, sd: str, op: Any, *, spm: bool = True) -> Any:
        return await settled(self.client.pool().member_read(sp, sd, op, spm=spm))

    def _submit(self, verb_name: str, work: Any) -> pykka.Future[Any]:
        """Start `work` as an SPM task named `verb_name` (the API loop; never blocks).

        The name is VDSM's: its storage dispatcher names each task after the hsm
        function (copyImage, moveImage, ...), not after the job inside it
        (copyImage_<img>), and the Engine reads Host.getAllTasksInfo's `verb` as its
        AsyncTaskType (HSMGetAllTasksInfoVDSCommand).
        """
        return self.client.tasks().submit(verb_name, work)

    async def _job(self, job_id: str, sd: str, work: Any) -> bool:
        await settled(self.client.domain(sd))  # an unknown domain answers the verb (358)
        await settled(self.client.tasks().submit_job(job_id, work, description=work.description))
        return True

    async def _template_in(self, sp: str, dst: str, chain: Layout) -> None:
        """The destination must hold the template the image is based on (VDSM: 268)."""
        if chain.template is not None:
            template = ReadFacts(img=chain.template.image, vol=chain.template.vol, legal_chain=True)
            await self._read(sp, dst, template)

    # -- SPM tasks ------------------------------------------------------------------------

    @verb(
        "Volume",
        "copy",
        doc="Copy a volume with its chain collapsed into a new volume (SPM; a task).",
        returns="task id",
        errors=(*ERRORS, VolumeAlreadyExists, IncorrectFormat, IncorrectType),
    )
    async def copy(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        vol: VolId,
        sp: SpId,
        sd: SdId,
        img: ImgId,
        dst_sd: DstSd,
        dst_img: Annotated[str, Arg("the new image", wire="dstImgUUID")],
        dst_vol: Annotated[str, Arg("the new volume", wire="dstVolUUID")],
        desc: Annotated[str | None, Arg("the new volume's description")],
        vol_type: Annotated[int, Arg("6 SHARED makes a template", wire="volType")],
        fmt: Annotated[int, Arg("4 COW, 5 RAW", wire="volFormat")],
        prealloc: Annotated[int, Arg("1 PREALLOCATED, 2 SPARSE", wire="preallocate")],
        post_zero: Annotated[bool, Arg("ignored", wire="postZero")],  # noqa: ARG002
        force: Annotated[bool, Arg("replace an existing destination image")],
        discard: Ignored = False,  # noqa: ARG002
    ) -> str:
        """Volume.copy: a template from a disk, or a disk cloned from a template.

        As the Engine's CopyImageVDSCommand sends it (JsonRpcIIrsServer.copyImage);
        VDSM's hsm.copyImage and image.copyCollapsed. `dstSdUUID` blank (or the
        source's domain) copies within the domain, then into another image. The
        Engine sends `desc` as null when the disk has no description, `postZero` and
        `force` as the strings "true"/"false".
        """
        sd, img = check_uuid(sd, "storagedomainID"), check_uuid(img, "imageID")
        vol = check_uuid(vol, "volumeID")
        dst_img, dst_vol = check_uuid(dst_img, "dstImgUUID"), check_uuid(dst_vol, "dstVolUUID")
        dst_sd = sd if dst_sd in ("", BLANK_UUID) else check_uuid(dst_sd, "dstSdUUID")
        if dst_sd == sd and dst_img == img:
            raise StorageInvalidParameter(name="dstImgUUID", value=dst_img)
        volume_format, allocation = _format(fmt, "volFormat"), _prealloc(prealloc)
        await self._read(sp, sd, ReadFacts(img=img, vol=vol, legal_chain=True))
        present: Layout | None = await self._read(sp, dst_sd, ImageState(img=dst_img))
        if present is not None and present.holds(dst_vol) and present.legal and not force:
            raise VolumeAlreadyExists(volUUID=dst_vol, imgUUID=dst_img)
        work = CopyCollapsed(
            source=Side(sd=sd, img=img, vol=vol),
            destination=Side(sd=dst_sd, img=dst_img, vol=dst_vol),
            client=self.client,
            description=desc or "",
            fmt=volume_format,
            prealloc=allocation,
            shared=vol_type == SHARED_ROLE,
            force=force,
        )
        task_id: str = await settled(self._submit("copyImage", work))
        return task_id

    @verb(
        "Image",
        "move",
        doc="Move or copy an image to another domain of the pool (SPM; a task).",
        returns="task id",
        errors=(*ERRORS, VolumeAlreadyExists, MoveTemplateImageError),
    )
    async def move(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        img: ImgId,
        sp: SpId,
        sd: SdId,
        dst_sd: DstSd,
        operation: Annotated[int, Arg("1 COPY, 2 MOVE")],
        post_zero: Annotated[bool, Arg("ignored", wire="postZero")],  # noqa: ARG002
        force: Annotated[bool, Arg("replace the image in the destination")],
        discard: Ignored = False,  # noqa: ARG002
    ) -> str:
        """Image.move: the chain copied volume by volume; MOVE then deletes the source.

        As the Engine's MoveImageGroupVDSCommand sends it (JsonRpcIIrsServer.moveImage);
        VDSM's hsm.moveImage and image.move. One difference: VDSM refuses (266) to move
        or copy a template images of its domain are based on; here only a MOVE is
        refused, since a COPY leaves those images their template.
        """
        img = check_uuid(img, "imageID")
        dst_sd = _other_domain(check_uuid(sd, "storagedomainID"), dst_sd)
        if operation not in (COPY, MOVE):
            raise StorageInvalidParameter(name="operation", value=operation)
        chain: Layout = await self._read(sp, sd, ReadLayout(img=img))
        if chain.in_use and operation == MOVE:
            raise MoveTemplateImageError(imgUUID=img)
        await self._template_in(sp, dst_sd, chain)
        present: Layout | None = await self._read(sp, dst_sd, ImageState(img=img))
        if present is not None and present.legal and not force:
            raise VolumeAlreadyExists(imgUUID=img, sdUUID=dst_sd)
        work = CopyImage(
            sd=sd, dst_sd=dst_sd, img=img, client=self.client, op=operation, force=force
        )
        task_id: str = await settled(self._submit("moveImage", work))
        return task_id

    @verb(
        "Image",
        "cloneStructure",
        doc="Lay an image's chain out in another domain, without data (SPM; a task).",
        returns="task id",
        errors=(*ERRORS, VolumeAlreadyExists),
    )
    async def clone_structure(self, *, img: ImgId, sp: SpId, sd: SdId, dst_sd: DstSd) -> str:
        """Image.cloneStructure, as CloneImageGroupStructureVDSCommand sends it."""
        img = check_uuid(img, "imageID")
        dst_sd = _other_domain(check_uuid(sd, "storagedomainID"), dst_sd)
        chain: Layout = await self._read(sp, sd, ReadLayout(img=img, legal=False))
        await self._template_in(sp, dst_sd, chain)
        if await self._read(sp, dst_sd, ImageState(img=img)) is not None:
            raise VolumeAlreadyExists(imgUUID=img, sdUUID=dst_sd)
        work = CloneStructure(sd=sd, dst_sd=dst_sd, img=img, client=self.client)
        task_id: str = await settled(self._submit("cloneImageStructure", work))
        return task_id

    @verb(
        "Image",
        "syncData",
        doc="Copy the data of a cloned image's volumes (SPM; a task).",
        returns="task id",
        errors=ERRORS,
    )
    async def sync_data(
        self,
        *,
        img: ImgId,
        sp: SpId,
        sd: SdId,
        dst_sd: DstSd,
        sync_type: Annotated[str, Arg("ALL, INTERNAL or LEAF", wire="syncType")],
    ) -> str:
        """Image.syncData, as SyncImageGroupDataVDSCommand sends it.

        The two chains are compared before the task starts (VDSM compares them in
        it): a mismatch answers 260, an unknown sync type 2000.
        """
        img = check_uuid(img, "imageID")
        dst_sd = _other_domain(check_uuid(sd, "storagedomainID"), dst_sd)
        source: Layout = await self._read(sp, sd, ReadLayout(img=img))
        dest: Layout = await self._read(sp, dst_sd, ReadLayout(img=img, legal=False))
        sync_pairs(source, dest, sync_type, dst_sd)
        work = SyncData(sd=sd, dst_sd=dst_sd, img=img, sync_type=sync_type, client=self.client)
        task_id: str = await settled(self._submit("syncImageData", work))
        return task_id

    # -- HSM reads ------------------------------------------------------------------------

    @verb(
        "Volume",
        "measure",
        doc="The bytes a copy of the volume needs in a format (qemu-img measure).",
        returns="{required, fully-allocated}",
        errors=ERRORS,
    )
    async def measure(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        vol: VolId,
        sp: SpId,
        sd: SdId,
        img: ImgId,
        dst_fmt: Annotated[int, Arg("4 COW, 5 RAW", wire="dstVolFormat")],
        backing_chain: Annotated[bool, Arg("measure the chain, not just this layer")] = True,
        base: Annotated[str | None, Arg("measure from this parent up", wire="baseID")] = None,
    ) -> dict[str, int]:
        """Volume.measure, as MeasureVolumeVDSCommand sends it (any host; no SPM)."""
        op = Measure(
            img=check_uuid(img, "imageID"),
            vol=check_uuid(vol, "volumeID"),
            out_fmt=_format(dst_fmt, "dstVolFormat"),
            backing=backing_chain,
            base=check_uuid(base, "baseID") if base else None,
        )
        result: dict[str, int] = await self._read(sp, sd, op, spm=False)
        return result

    @verb(
        "Volume",
        "getQemuImageInfo",
        doc="qemu-img's view of the volume.",
        returns="QemuImageInfo",
        errors=ERRORS,
    )
    async def qemu_image_info(
        self, *, vol: VolId, sp: SpId, sd: SdId, img: ImgId
    ) -> dict[str, Any]:
        """Volume.getQemuImageInfo, as GetQemuImageInfoVDSCommand sends it (no SPM)."""
        op = QemuInfo(img=check_uuid(img, "imageID"), vol=check_uuid(vol, "volumeID"))
        info: dict[str, Any] = await self._read(sp, sd, op, spm=False)
        return info

    # -- SDM jobs -------------------------------------------------------------------------

    @verb("SDM", "update_volume", doc="Change a volume's attributes (a job; see Host.getJobs).")
    async def update_volume(
        self,
        *,
        job_id: JobId,
        vol_info: VolInfo,
        vol_attr: Annotated[dict[str, Any], Arg("{legality?, description?, generation?, type?}")],
    ) -> bool:
        """SDM.update_volume, as UpdateVolumeVDSCommand sends it (JsonRpcVdsServer)."""
        volume = Endpoint.from_wire(vol_info, "vol_info")
        work = UpdateVolume(volume=volume, attributes=_attributes(vol_attr), client=self.client)
        return await self._job(job_id, volume.sd, work)

    @verb("SDM", "amend_volume", doc="Change a qcow2 volume's compat (a job).")
    async def amend_volume(
        self,
        *,
        job_id: JobId,
        vol_info: VolInfo,
        qcow2_attr: Annotated[dict[str, Any], Arg("{compat: '0.10' or '1.1'}")],
    ) -> bool:
        """SDM.amend_volume, as AmendVolumeVDSCommand sends it (JsonRpcVdsServer)."""
        volume = Endpoint.from_wire(vol_info, "vol_info")
        if not isinstance(qcow2_attr, dict) or qcow2_attr.get("compat") is None:
            raise InvalidArgument(param="qcow2_attr", reason="No attributes to amend")
        work = AmendVolume(
            volume=volume, compat=check_compat(qcow2_attr["compat"]), client=self.client
        )
        return await self._job(job_id, volume.sd, work)

    @verb(
        "SDM", "sparsify_volume", doc="Return a leaf volume's zero blocks to the storage (a job)."
    )
    async def sparsify_volume(self, *, job_id: JobId, vol_info: VolInfo) -> bool:
        """SDM.sparsify_volume, as SparsifyImageVDSCommand sends it (JsonRpcVdsServer)."""
        volume = Endpoint.from_wire(vol_info, "vol_info")
        work = SparsifyVolume(volume=volume, client=self.client)
        return await self._job(job_id, volume.sd, work)


def _attributes(wire: dict[str, Any]) -> Attributes:
    """SDM.update_volume's `vol_attr`, checked as VDSM's VolumeAttributes.

    Raises InvalidArgument: nothing to change, or a value VDSM refuses.
    """
    legality, description = wire.get("legality"), wire.get("description")
    generation, kind = wire.get("generation"), wire.get("type")
    if legality is None and description is None and generation is None and kind is None:
        raise InvalidArgument(param="vol_attr", reason="No attributes to update")
    if kind is not None and kind != "SHARED":
        raise InvalidArgument(param="vol_attr.type", value=repr(kind), reason="only SHARED")
    if legality is not None and legality not in (Legality.LEGAL, Legality.ILLEGAL):
        raise InvalidArgument(param="vol_attr.legality", value=repr(legality))
    if description is not None and not isinstance(description, str):
        raise InvalidArgument(param="vol_attr.description", value=repr(description))
    if generation is not None and (
        isinstance(generation, bool)
        or not isinstance(generation, int)
        or not 0 <= generation <= MAX_GENERATION
    ):
        raise InvalidArgument(param="vol_attr.generation", value=repr(generation))
    return Attributes(
        legality=Legality(legality) if legality is not None else None,
        description=description,
        generation=generation,
        shared=kind is not None,
    )
