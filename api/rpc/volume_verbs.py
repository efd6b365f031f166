"""The Volume and Image namespaces (reference/vdsm-wire.md §3.1 Storage, §8).

Every verb needs this host connected to the pool (code 309 otherwise) and the
domain in it. Changes that VDSM runs on the SPM (create, delete, extend) need the
SPM role (code 654) and return a task id at once: the work runs on the domain's
writer, in a task's worker, and its progress is readable while it runs.
"""

from __future__ import annotations

from typing import Any

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.errors import (
    StorageDomainNotInPool,
    StoragePoolUnknown,
    VolumeAlreadyExists,
    VolumeDoesNotExist,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    Legality,
    Preallocation,
    VolumeFormat,
    check_uuid,
)
from hostvisor.actors.storage.pool_actor import PoolRecord
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb

VOL = Param(name="volumeID", kind=Kind.STR, doc="the volume's UUID")
SP = Param(name="storagepoolID", kind=Kind.STR, doc="the pool's UUID")
SD = Param(name="storagedomainID", kind=Kind.STR, doc="the domain's UUID")
IMG = Param(name="imageID", kind=Kind.STR, doc="the image's UUID")
DISK_TYPES = frozenset(
    {"DATA", "ISOF", "MEMD", "MEMM", "OVFS", "HEVD", "HESD", "HEMD", "HECI", "SCRD"}
)


def _enum(kind: type[Any], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(**{name: value}, reason=f"one of {[int(v) for v in kind]}") from None


class VolumeHandlers:
    """The handlers of the Volume and Image verbs, over one `StorageApi`."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.api = api

    async def _member(self, args: Any, *, spm: bool = False) -> tuple[Any, PoolRecord]:
        """The pool (SPM if asked) and check the domain is in it."""
        sp, sd = args["storagepoolID"], args["storagedomainID"]
        check_uuid(sd, "storagedomainID")
        ref, record = await (self.api.spm(sp) if spm else self.api.pool(sp))
        if sd not in record.domains:
            raise StorageDomainNotInPool(sdUUID=sd, spUUID=sp)
        return ref, record

    async def _task(self, args: Any, verb: str, op: str, work: Any) -> str:
        domain_ref = await self.api.domain(args["storagedomainID"])
        api = self.api

        def run(context: Any) -> Any:
            return api.domain_work(domain_ref, op, lambda d: work(d, context))

        return await self.api.submit(verb, run)

    # -- Volume -----------------------------------------------------------------------------

    async def create(self, request: Call) -> str:
        """Volume.create: a task that makes the volume (ILLEGAL until complete)."""
        args = request.args
        await self._member(args, spm=True)
        img = check_uuid(args["imageID"], "imageID")
        vol = check_uuid(args["volumeID"], "volumeID")
        fmt = _enum(VolumeFormat, args["volFormat"], "volFormat")
        prealloc = _enum(Preallocation, args["preallocate"], "preallocate")
        disk_type = str(args["diskType"])
        if disk_type.isdigit():
            disk_type = "DATA"  # old engines sent 2 for a data disk
        if disk_type not in DISK_TYPES:
            raise InvalidArgument(diskType=disk_type, reason=f"one of {sorted(DISK_TYPES)}")
        size = int(args["size"])
        if size <= 0 and args["srcVolUUID"] in ("", BLANK_UUID):
            raise InvalidArgument(size=args["size"], reason="must be > 0 bytes")
        parent = args["srcVolUUID"] or BLANK_UUID
        parent_image = args["srcImgUUID"]
        parent_image = None if parent_image in ("", BLANK_UUID, img) else parent_image
        existing = await self.api.read(args["storagedomainID"], "volumes", lambda d: d.volumes())
        if vol in existing:
            raise VolumeAlreadyExists(volUUID=vol)
        initial = args["initialSize"]

        def work(domain: FileDomain, context: Any) -> None:
            domain.create_volume(
                img,
                vol,
                size=size,
                fmt=fmt,
                prealloc=prealloc,
                disk_type=disk_type,
                description=args["desc"],
                parent=parent,
                parent_image=parent_image,
                initial_size=int(initial) if initial else None,
                legal=args["legal"],
                progress=context.progress,
            )

        return await self._task(args, "createVolume", "create volume", work)

    async def get_info(self, request: Call) -> dict[str, Any]:
        """Volume.getInfo."""
        args = request.args
        await self._member(args)
        img, vol = args["imageID"], args["volumeID"]
        info: dict[str, Any] = await self.api.read(
            args["storagedomainID"], "volume info", lambda d: d.volume_info(img, vol)
        )
        return info

    async def get_size(self, request: Call) -> dict[str, str]:
        """Volume.getSize: {apparentsize, truesize}."""
        args = request.args
        await self._member(args)
        img, vol = args["imageID"], args["volumeID"]
        size: dict[str, str] = await self.api.read(
            args["storagedomainID"], "volume size", lambda d: d.volume_size(img, vol)
        )
        return size

    async def delete(self, request: Call) -> str:
        """Volume.delete: a task."""
        args = request.args
        await self._member(args, spm=True)
        img, vol = args["imageID"], args["volumeID"]
        await self._exists(args)
        return await self._task(
            args, "deleteVolume", "delete volume", lambda d, _c: d.delete_volume(img, vol)
        )

    async def _exists(self, args: Any) -> None:
        img, vol = args["imageID"], args["volumeID"]
        volumes = await self.api.read(args["storagedomainID"], "volumes", lambda d: d.volumes(img))
        if vol not in volumes:
            raise VolumeDoesNotExist(volUUID=vol, imgUUID=img)

    async def set_legality(self, request: Call) -> bool:
        """Volume.setLegality."""
        args = request.args
        await self._member(args, spm=True)
        legality = _enum(Legality, args["legality"], "legality")
        img, vol = args["imageID"], args["volumeID"]
        await self.api.write(
            args["storagedomainID"], "set legality", lambda d: d.set_legality(img, vol, legality)
        )
        return True

    async def set_description(self, request: Call) -> bool:
        """Volume.setDescription."""
        args = request.args
        await self._member(args, spm=True)
        img, vol, text = args["imageID"], args["volumeID"], args["description"]
        await self.api.write(
            args["storagedomainID"],
            "set description",
            lambda d: d.set_volume_description(img, vol, text),
        )
        return True

    async def extend_size(self, request: Call) -> str:
        """Volume.extendSize: a task that grows the volume."""
        args = request.args
        await self._member(args, spm=True)
        img, vol, size = args["imageID"], args["volumeID"], int(args["newSize"])
        await self._exists(args)
        return await self._task(
            args, "extendVolumeSize", "extend volume", lambda d, _c: d.extend_volume(img, vol, size)
        )

    # -- Image ------------------------------------------------------------------------------

    async def prepare(self, request: Call) -> dict[str, Any]:
        """Image.prepare: check the chain; answer the leaf's path."""
        args = request.args
        await self._member(args)
        img, vol, allow = args["imageID"], args["volumeID"], args["allowIllegal"]
        path = await self.api.read(
            args["storagedomainID"],
            "prepare",
            lambda d: d.prepare_image(img, vol, allow_illegal=allow),
        )
        return {"path": str(path)}

    async def teardown(self, request: Call) -> bool:
        """Image.teardown."""
        args = request.args
        await self._member(args)
        img, vol = args["imageID"], args["volumeID"] or None
        await self.api.read(
            args["storagedomainID"], "teardown", lambda d: d.teardown_image(img, vol)
        )
        return True

    async def delete_image(self, request: Call) -> str:
        """Image.delete: a task that removes every volume of the image."""
        args = request.args
        await self._member(args, spm=True)
        img = args["imageID"]
        await self.api.read(args["storagedomainID"], "volumes", lambda d: d.volumes(img))
        return await self._task(
            args, "deleteImage", "delete image", lambda d, _c: d.delete_image(img)
        )

    async def image_volumes(self, request: Call) -> list[str]:
        """Image.getVolumes."""
        args = request.args
        await self._member(args)
        img = args["imageID"]
        volumes: list[str] = await self.api.read(
            args["storagedomainID"], "volumes", lambda d: d.volumes(img)
        )
        return volumes


def volume_verbs(api: StorageApi) -> list[Verb]:
    """Return the Volume and Image verbs."""
    h = VolumeHandlers(api)
    ids = (VOL, SP, SD, IMG)
    errors = (StoragePoolUnknown, VolumeDoesNotExist)

    def verb(
        namespace: str, name: str, doc: str, handler: Any, *params: Param, **extra: Any
    ) -> Verb:
        return Verb(
            namespace=namespace,
            name=name,
            doc=doc,
            params=params,
            handler=handler,
            errors=extra.pop("errors", errors),
            **extra,
        )

    ignored = (
        Param(name="postZero", kind=Kind.BOOL, doc="ignored", default=False),
        Param(name="force", kind=Kind.BOOL, doc="ignored", default=False),
        Param(name="discard", kind=Kind.BOOL, doc="ignored", default=False),
    )
    return [
        verb(
            "Volume",
            "create",
            "Create a volume (SPM; a task).",
            h.create,
            *ids,
            Param(name="size", kind=Kind.INT, doc="capacity in bytes"),
            Param(name="volFormat", kind=Kind.INT, doc="4 COW, 5 RAW"),
            Param(name="preallocate", kind=Kind.INT, doc="1 PREALLOCATED, 2 SPARSE"),
            Param(name="diskType", kind=Kind.STR_OR_INT, doc="DATA, ISOF, ...", default="DATA"),
            Param(name="desc", kind=Kind.STR, doc="description", default=""),
            Param(name="srcImgUUID", kind=Kind.STR, doc="the parent's image", default=BLANK_UUID),
            Param(name="srcVolUUID", kind=Kind.STR, doc="the parent volume", default=BLANK_UUID),
            Param(name="initialSize", kind=Kind.STR_OR_INT, doc="bytes to allocate", default=""),
            Param(name="addBitmaps", kind=Kind.BOOL, doc="ignored", default=False),
            Param(name="legal", kind=Kind.BOOL, doc="LEGAL when created", default=True),
            Param(name="sequence", kind=Kind.INT, doc="ignored", default=0),
            Param(name="bitmap", kind=Kind.STR, doc="ignored", default=""),
            returns="task id",
            errors=(VolumeAlreadyExists, StoragePoolUnknown),
        ),
        verb("Volume", "getInfo", "The volume's metadata.", h.get_info, *ids, returns="VolumeInfo"),
        verb(
            "Volume", "getSize", "The volume's sizes.", h.get_size, *ids, returns="VolumeSizeInfo"
        ),
        verb(
            "Volume",
            "delete",
            "Delete a volume (SPM; a task).",
            h.delete,
            *ids,
            *ignored,
            returns="task id",
        ),
        verb(
            "Volume",
            "setLegality",
            "Mark the volume LEGAL or ILLEGAL.",
            h.set_legality,
            *ids,
            Param(name="legality", kind=Kind.STR, doc="LEGAL or ILLEGAL"),
        ),
        verb(
            "Volume",
            "setDescription",
            "Describe the volume.",
            h.set_description,
            *ids,
            Param(name="description", kind=Kind.STR, doc="the text"),
        ),
        verb(
            "Volume",
            "extendSize",
            "Grow the volume (SPM; a task).",
            h.extend_size,
            *ids,
            Param(name="newSize", kind=Kind.INT, doc="new capacity in bytes"),
            returns="task id",
        ),
        verb(
            "Image",
            "prepare",
            "Check the chain; the leaf's path.",
            h.prepare,
            IMG,
            SP,
            SD,
            VOL,
            Param(name="allowIllegal", kind=Kind.BOOL, doc="also an ILLEGAL chain", default=False),
            returns="{path}",
        ),
        verb(
            "Image",
            "teardown",
            "Release a prepared image.",
            h.teardown,
            IMG,
            SP,
            SD,
            Param(name="volumeID", kind=Kind.STR, doc="the leaf", default=""),
        ),
        verb(
            "Image",
            "delete",
            "Delete the image (SPM; a task).",
            h.delete_image,
            IMG,
            SP,
            SD,
            *ignored,
            returns="task id",
        ),
        verb(
            "Image",
            "getVolumes",
            "The image's volumes.",
            h.image_volumes,
            IMG,
            SP,
            SD,
            returns="[UUID]",
        ),
    ]
