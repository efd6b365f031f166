"""The Volume and Image namespaces (reference/vdsm-wire.md §3.1 Storage, §8).

Every verb needs this host connected to the pool (code 309 otherwise) and the
domain in it; each is declared from its typed signature, binds its params into a
typed message and makes one ask to the pool actor, which checks that and hands the
message to the domain's actor. Changes that VDSM runs on the SPM (create, delete,
extend) need the SPM role (code 654) and answer a task id at once: the domain
checks them (a volume id already taken is refused here), then runs them on its
writer, their progress readable while they run.
"""

from __future__ import annotations

from typing import Annotated, Any

import pykka

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.domain_ops import (
    DomainRead,
    DomainTask,
    DomainWrite,
    PrepareImage,
    SetLegality,
    SetVolumeDescription,
    TeardownImage,
    VolumeInfo,
    Volumes,
    VolumeSize,
)
from hostvisor.actors.storage.errors import (
    StoragePoolUnknown,
    VolumeAlreadyExists,
    VolumeDoesNotExist,
)
from hostvisor.actors.storage.filevolume import DISK_TYPES
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    Legality,
    Preallocation,
    VolumeFormat,
    check_uuid,
)
from hostvisor.actors.storage.volume_tasks import (
    CreateVolume,
    DeleteImage,
    DeleteVolume,
    DeleteVolumes,
    ExtendVolume,
)
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb

VolId = Annotated[str, Arg("the volume's UUID", wire="volumeID")]
SpId = Annotated[str, Arg("the pool's UUID", wire="storagepoolID")]
SdId = Annotated[str, Arg("the domain's UUID", wire="storagedomainID")]
ImgId = Annotated[str, Arg("the image's UUID", wire="imageID")]
Ignored = Annotated[bool, Arg("ignored")]
ERRORS = (StoragePoolUnknown, VolumeDoesNotExist)


def _enum(kind: type[Any], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = [member.value for member in kind]
        raise InvalidArgument(param=name, value=repr(value), reason=f"one of {choices}") from None


def _disk_type(value: Any) -> str:
    disk_type = str(value)
    if disk_type.isdigit():
        return "DATA"  # old engines sent 2 for a data disk
    if disk_type not in DISK_TYPES:
        raise InvalidArgument(diskType=disk_type, reason=f"one of {sorted(DISK_TYPES)}")
    return disk_type


def volume_verbs(api: StorageApi) -> list[Verb]:
    """Return the Volume and Image verbs."""
    return verbs_of(VolumeHandlers(api))


class VolumeHandlers:
    """The handlers of the Volume and Image verbs, over one `StorageApi` (the API loop)."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.client = api.client

    def _read(self, sp: str, sd: str, op: DomainRead[Any]) -> pykka.Future[Any]:
        return self.client.pool().member_read(sp, sd, op)

    async def _write(self, sp: str, sd: str, op: DomainWrite[Any]) -> bool:
        await settled(self.client.pool().member_write(sp, sd, op))
        return True

    def _task(self, sp: str, sd: str, op: DomainTask) -> pykka.Future[Any]:
        return self.client.pool().member_task(sp, sd, op)

    # -- Volume -----------------------------------------------------------------------------

    @verb(
        "Volume",
        "create",
        doc="Create a volume (SPM; a task).",
        returns="task id",
        errors=(VolumeAlreadyExists, StoragePoolUnknown),
    )
    def create(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        vol: VolId,
        sp: SpId,
        sd: SdId,
        img: ImgId,
        size: Annotated[int, Arg("capacity in bytes")],
        fmt: Annotated[int, Arg("4 COW, 5 RAW", wire="volFormat")],
        prealloc: Annotated[int, Arg("1 PREALLOCATED, 2 SPARSE", wire="preallocate")],
        disk_type: Annotated[str | int, Arg("DATA, ISOF, ...", wire="diskType")] = "DATA",
        desc: Annotated[str | None, Arg("description")] = "",
        parent_img: Annotated[str, Arg("the parent's image", wire="srcImgUUID")] = BLANK_UUID,
        parent: Annotated[str, Arg("the parent volume", wire="srcVolUUID")] = BLANK_UUID,
        initial: Annotated[str | int, Arg("bytes to allocate", wire="initialSize")] = "",
        add_bitmaps: Annotated[bool, Arg("ignored", wire="addBitmaps")] = False,  # noqa: ARG002
        legal: Annotated[bool, Arg("LEGAL when created")] = True,
        sequence: Annotated[int, Arg("ignored")] = 0,  # noqa: ARG002
        bitmap: Annotated[str, Arg("ignored")] = "",  # noqa: ARG002
    ) -> pykka.Future[Any]:
        """Volume.create: a task that makes the volume (ILLEGAL until complete).

        As JsonRpcIIrsServer.createVolume sends it: `size` as a string of bytes, `desc`
        null when the disk has none (CreateVolumeVDSCommand), `sequence` an int.
        """
        img = check_uuid(img, "imageID")
        if size <= 0 and parent in ("", BLANK_UUID):
            raise InvalidArgument(size=size, reason="must be > 0 bytes")
        op = CreateVolume(
            img=img,
            vol=check_uuid(vol, "volumeID"),
            size=size,
            fmt=_enum(VolumeFormat, fmt, "volFormat"),
            prealloc=_enum(Preallocation, prealloc, "preallocate"),
            disk_type=_disk_type(disk_type),
            description=desc or "",
            parent=parent or BLANK_UUID,
            parent_image=None if parent_img in ("", BLANK_UUID, img) else parent_img,
            initial_size=int(initial) if initial else None,
            legal=legal,
        )
        return self._task(sp, sd, op)

    @verb("Volume", "getInfo", doc="The volume's metadata.", returns="VolumeInfo", errors=ERRORS)
    def get_info(self, *, vol: VolId, sp: SpId, sd: SdId, img: ImgId) -> pykka.Future[Any]:
        """Volume.getInfo."""
        return self._read(sp, sd, VolumeInfo(img=img, vol=vol))

    @verb("Volume", "getSize", doc="The volume's sizes.", returns="VolumeSizeInfo", errors=ERRORS)
    def get_size(self, *, vol: VolId, sp: SpId, sd: SdId, img: ImgId) -> pykka.Future[Any]:
        """Volume.getSize: {apparentsize, truesize}."""
        return self._read(sp, sd, VolumeSize(img=img, vol=vol))

    @verb(
        "Volume", "delete", doc="Delete a volume (SPM; a task).", returns="task id", errors=ERRORS
    )
    def delete(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        vol: VolId,
        sp: SpId,
        sd: SdId,
        img: ImgId,
        post_zero: Annotated[bool, Arg("ignored", wire="postZero")] = False,  # noqa: ARG002
        force: Ignored = False,  # noqa: ARG002
        discard: Ignored = False,  # noqa: ARG002
    ) -> pykka.Future[Any]:
        """Volume.delete: a task."""
        return self._task(sp, sd, DeleteVolume(img=img, vol=vol))

    @verb("Volume", "setLegality", doc="Mark the volume LEGAL or ILLEGAL.", errors=ERRORS)
    async def set_legality(
        self,
        *,
        vol: VolId,
        sp: SpId,
        sd: SdId,
        img: ImgId,
        legality: Annotated[str, Arg("LEGAL or ILLEGAL")],
    ) -> bool:
        """Volume.setLegality."""
        value = _enum(Legality, legality, "legality")
        return await self._write(sp, sd, SetLegality(img=img, vol=vol, legality=value))

    @verb("Volume", "setDescription", doc="Describe the volume.", errors=ERRORS)
    async def set_description(
        self,
        *,
        vol: VolId,
        sp: SpId,
        sd: SdId,
        img: ImgId,
        description: Annotated[str, Arg("the text")],
    ) -> bool:
        """Volume.setDescription."""
        return await self._write(sp, sd, SetVolumeDescription(img=img, vol=vol, text=description))

    @verb(
        "Volume",
        "extendSize",
        doc="Grow the volume (SPM; a task).",
        returns="task id",
        errors=ERRORS,
    )
    def extend_size(
        self,
        *,
        vol: VolId,
        sp: SpId,
        sd: SdId,
        img: ImgId,
        size: Annotated[int, Arg("new capacity in bytes", wire="newSize")],
    ) -> pykka.Future[Any]:
        """Volume.extendSize: a task that grows the volume."""
        return self._task(sp, sd, ExtendVolume(img=img, vol=vol, size=size))

    # -- Image ------------------------------------------------------------------------------

    @verb(
        "Image", "prepare", doc="Check the chain; the leaf's path.", returns="{path}", errors=ERRORS
    )
    async def prepare(
        self,
        *,
        img: ImgId,
        sp: SpId,
        sd: SdId,
        vol: VolId,
        allow_illegal: Annotated[bool, Arg("also an ILLEGAL chain", wire="allowIllegal")] = False,
    ) -> dict[str, Any]:
        """Image.prepare: check the chain; answer the leaf's path."""
        op = PrepareImage(img=img, vol=vol, allow_illegal=allow_illegal)
        path = await settled(self._read(sp, sd, op))
        return {"path": str(path)}

    @verb("Image", "teardown", doc="Release a prepared image.", errors=ERRORS)
    async def teardown(
        self,
        *,
        img: ImgId,
        sp: SpId,
        sd: SdId,
        vol: Annotated[str, Arg("the leaf (VDSM's schema)", wire="volumeID")] = "",
        leaf: Annotated[str, Arg("the leaf (the Engine's name)", wire="leafVolID")] = "",
    ) -> bool:
        """Image.teardown: release the chain up to the leaf, or the whole image.

        The Engine (JsonRpcVdsServer.teardownImage) names the leaf `leafVolID`; VDSM's
        schema names it `volumeID`. Either is honoured: a named leaf must exist.
        """
        leaf = leaf or vol
        if leaf and leaf != BLANK_UUID:
            check_uuid(leaf, "leafVolID")
        target = leaf if leaf and leaf != BLANK_UUID else None
        await settled(self._read(sp, sd, TeardownImage(img=img, vol=target)))
        return True

    @verb(
        "Image", "delete", doc="Delete the image (SPM; a task).", returns="task id", errors=ERRORS
    )
    def delete_image(
        self,
        *,
        img: ImgId,
        sp: SpId,
        sd: SdId,
        post_zero: Annotated[bool, Arg("ignored", wire="postZero")] = False,  # noqa: ARG002
        force: Ignored = False,  # noqa: ARG002
        discard: Ignored = False,  # noqa: ARG002
    ) -> pykka.Future[Any]:
        """Image.delete: a task that removes every volume of the image."""
        return self._task(sp, sd, DeleteImage(img=img))

    @verb(
        "Image",
        "deleteVolumes",
        doc="Delete some volumes of the image (SPM; a task).",
        returns="task id",
        errors=ERRORS,
    )
    def delete_volumes(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        img: ImgId,
        sp: SpId,
        sd: SdId,
        vols: Annotated[list[str], Arg("the volumes", wire="volumeList")],
        post_zero: Annotated[bool, Arg("ignored", wire="postZero")] = False,  # noqa: ARG002
        force: Ignored = False,  # noqa: ARG002
        discard: Ignored = False,  # noqa: ARG002
    ) -> pykka.Future[Any]:
        """Image.deleteVolumes: as JsonRpcIIrsServer.deleteVolume sends it; children first."""
        if not vols:
            raise InvalidArgument(volumeList=vols, reason="no volume named")
        volumes = tuple(check_uuid(vol, "volumeList") for vol in vols)
        return self._task(sp, sd, DeleteVolumes(img=check_uuid(img, "imageID"), vols=volumes))

    @verb("Image", "getVolumes", doc="The image's volumes.", returns="[UUID]", errors=ERRORS)
    def image_volumes(self, *, img: ImgId, sp: SpId, sd: SdId) -> pykka.Future[Any]:
        """Image.getVolumes."""
        return self._read(sp, sd, Volumes(img=img))
