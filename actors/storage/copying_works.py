"""The SPM tasks that copy images: Volume.copy, Image.move, cloneStructure, syncData.

Each is a frozen work the task manager runs on one of its workers (called with
the task's `TaskContext`), as VDSM runs `Image.copyCollapsed`, `Image.move`,
`Image.cloneStructure` and `Image.syncData` (lib/vdsm/storage/image.py). A work
asks the domains for facts and changes with the messages of copying.py and
moves the data with qemu-img itself, so no actor waits for a copy:

    CopyCollapsed (Volume.copy)   the source volume with its whole chain, flattened
                                  into one new volume: a template from a VM's disk,
                                  or a VM's disk cloned from a template
    CopyImage (Image.move)        the chain as a chain: every volume, same ids, same
                                  parents, each holding only its own layer; op MOVE
                                  then deletes the source image
    CloneStructure                the chain laid out in the destination, no data
    SyncData                      the data of some volumes of a cloned chain

Every destination volume is ILLEGAL while its data is written and turns LEGAL
only after the data was flushed (copying.py's invariant); a work that fails or is
stopped rolls back what it created (VDSM's task recovery), and one killed with the
agent leaves its volumes ILLEGAL, its task read back as aborted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.copying import (
    Begin,
    ImageState,
    Layout,
    MakeVolume,
    ReadFacts,
    ReadLayout,
    RemoveImage,
    RemoveVolume,
    Seal,
    VolumeFacts,
)
from hostvisor.actors.storage.copying_errors import (
    CopyImageError,
    DestImageActionError,
    MiscNotImplemented,
)
from hostvisor.actors.storage.errors import ImageIsNotLegalChain
from hostvisor.actors.storage.model import BLANK_UUID, Preallocation, VolumeFormat, VolumeRole
from hostvisor.actors.storage.proxy import StorageClient, wait
from hostvisor.actors.storage.sdm import answer, flush
from hostvisor.actors.storage.tasks import TaskContext

log = logging.getLogger(__name__)

MOVE, COPY = 2, 1
"""Image.move's `operation` (VDSM's MOVE_OP, COPY_OP)."""
UNDO_WAIT = 60.0
"""Seconds a rollback step waits for a domain."""


def _undo(client: StorageClient, sd: str, op: Any) -> Callable[[], None]:
    """A rollback step: run `op` as a write of `sd` and wait (not abortable: it is the abort)."""

    def step() -> None:
        wait(client.write(sd, op), timeout=UNDO_WAIT, what=f"domain {sd}")

    return step


def _convert(  # noqa: PLR0913 - one layer's copy, keyword-only
    source: VolumeFacts,
    target: str,
    *,
    dst_fmt: VolumeFormat,
    ctx: TaskContext,
    progress: Callable[[float], None],
    backing: VolumeFacts | None = None,
    prealloc: Preallocation = Preallocation.SPARSE,
    existing: bool = False,
) -> None:
    """Copy one volume's data with qemu-img and flush it (a worker; blocks for the copy).

    Raises CopyImageError (qemu-img failed) or TaskAborted.
    """
    try:
        qemuimg.convert(
            source.path,
            target,
            src_fmt=source.qemu_format,
            dst_fmt=dst_fmt.qemu_format,
            preallocation="falloc" if prealloc is Preallocation.PREALLOCATED else None,
            backing=backing.vol if backing is not None else None,
            backing_fmt=backing.qemu_format if backing is not None else None,
            existing=existing,
            progress=progress,
            abort=ctx.aborted,
        )
        flush(target)
    except (qemuimg.QemuImgError, OSError) as error:
        raise CopyImageError(volUUID=source.vol, reason=str(error)) from None


def _share(total: int, index: int, ctx: TaskContext) -> Callable[[float], None]:
    """Progress of layer `index` of `total`, as a fraction of the whole task."""
    return lambda fraction: ctx.progress((index + fraction) / total)


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    """One end of a copy: a domain, an image, a volume (the volume may be unnamed)."""

    sd: str
    img: str
    vol: str = BLANK_UUID


# -- Volume.copy --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyCollapsed:
    """Volume.copy: the source with its chain flattened into one new volume (copyCollapsed).

    `fmt`/`prealloc` None keep the source's. `shared` makes the result a template
    (volType SHARED). An existing destination image is replaced when `force` is
    set or when it is not LEGAL, as VDSM does. Answers the new volume's id.
    """

    source: Side
    destination: Side
    client: StorageClient
    description: str = ""
    fmt: VolumeFormat | None = None
    prealloc: Preallocation | None = None
    shared: bool = False
    force: bool = False

    def __call__(self, ctx: TaskContext) -> str:
        """Run the copy (a worker thread; blocks for the copy's length)."""
        src, dst, client = self.source, self.destination, self.client
        ctx.progress(0.0)
        leaf: VolumeFacts = answer(
            client.read(src.sd, ReadFacts(img=src.img, vol=src.vol, legal_chain=True)),
            ctx,
            src.sd,
        )
        present: Layout | None = answer(client.read(dst.sd, ImageState(img=dst.img)), ctx, dst.sd)
        if present is not None and (self.force or not present.legal):
            answer(client.write(dst.sd, RemoveImage(img=dst.img)), ctx, dst.sd)
        fmt = self.fmt or leaf.fmt
        prealloc = self.prealloc or leaf.prealloc
        make = MakeVolume(
            img=dst.img,
            vol=dst.vol,
            capacity=leaf.capacity,
            fmt=fmt,
            prealloc=prealloc,
            disk_type=leaf.disk_type,
            description=self.description,
        )
        target: str = answer(client.write(dst.sd, make), ctx, dst.sd)
        ctx.add_rollback(_undo(client, dst.sd, RemoveVolume(img=dst.img, vol=dst.vol)))
        _convert(leaf, target, dst_fmt=fmt, prealloc=prealloc, ctx=ctx, progress=_share(1, 0, ctx))
        role = VolumeRole.SHARED if self.shared else None
        answer(client.write(dst.sd, Seal(img=dst.img, vol=dst.vol, role=role)), ctx, dst.sd)
        log.info("copied %s/%s to %s/%s/%s", src.sd, src.vol, dst.sd, dst.img, dst.vol)
        return dst.vol


# -- Image.move, Image.cloneStructure -----------------------------------------------------


def _lay_out_chain(
    chain: Layout, client: StorageClient, sd: str, ctx: TaskContext
) -> dict[str, str]:
    """Create the chain's volumes in domain `sd`, ILLEGAL, base first; {vol: data path}.

    Once the first exists, the task's rollback removes the image: never before, so
    a lay out refused (the image is being made by another task) undoes nothing.
    """
    targets: dict[str, str] = {}
    for member in chain.volumes:
        parent_image = None
        if chain.template is not None and member.parent == chain.template.vol:
            parent_image = chain.template.image
        make = MakeVolume(
            img=chain.img,
            vol=member.vol,
            capacity=member.capacity,
            fmt=member.fmt,
            prealloc=member.prealloc,
            disk_type=member.disk_type,
            description=member.description,
            parent=member.parent,
            parent_image=parent_image,
        )
        targets[member.vol] = answer(client.write(sd, make), ctx, sd)
        if len(targets) == 1:
            ctx.add_rollback(_undo(client, sd, RemoveImage(img=chain.img)))
    return targets


def _seal_chain(
    volumes: tuple[VolumeFacts, ...], client: StorageClient, sd: str, img: str, ctx: TaskContext
) -> None:
    """Mark the copied volumes LEGAL with their source's role, base first, leaf last."""
    for member in volumes:
        role = member.role if member.role is not VolumeRole.LEAF else None
        answer(client.write(sd, Seal(img=img, vol=member.vol, role=role)), ctx, sd)


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyImage:
    """Image.move: copy the chain volume by volume into `dst_sd`; MOVE then drops the source.

    An image already in the destination is replaced when `force` is set or when it
    is not LEGAL. The source's removal after a MOVE is best effort, as VDSM's: a
    failure is logged and the task still succeeds (the copy is complete).
    """

    sd: str
    dst_sd: str
    img: str
    client: StorageClient
    op: int = MOVE
    force: bool = False

    def __call__(self, ctx: TaskContext) -> bool:
        """Run the copy, then the removal (a worker thread; blocks)."""
        client, img = self.client, self.img
        ctx.progress(0.0)
        chain: Layout = answer(client.read(self.sd, ReadLayout(img=img)), ctx, self.sd)
        present = answer(client.read(self.dst_sd, ImageState(img=img)), ctx, self.dst_sd)
        if present is not None and (self.force or not present.legal):
            answer(client.write(self.dst_sd, RemoveImage(img=img)), ctx, self.dst_sd)
        targets = _lay_out_chain(chain, client, self.dst_sd, ctx)
        by_id = {member.vol: member for member in chain.volumes}
        if chain.template is not None:
            by_id[chain.template.vol] = chain.template
        for index, member in enumerate(chain.volumes):
            _convert(
                member,
                targets[member.vol],
                dst_fmt=member.fmt,
                prealloc=member.prealloc,
                backing=by_id.get(member.parent),
                ctx=ctx,
                progress=_share(len(chain.volumes), index, ctx),
            )
        _seal_chain(chain.volumes, client, self.dst_sd, img, ctx)
        ctx.clear_rollbacks()  # the copy is complete: a stop from now on undoes nothing
        if self.op == MOVE:
            self._drop_source(ctx)
        return True

    def _drop_source(self, ctx: TaskContext) -> None:
        try:
            answer(self.client.write(self.sd, RemoveImage(img=self.img)), ctx, self.sd)
        except (HostvisorError, pykka.ActorDeadError) as error:
            log.warning(
                "image %s copied to %s, not removed from %s: %s",
                self.img,
                self.dst_sd,
                self.sd,
                error,
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class CloneStructure:
    """Image.cloneStructure: the chain's volumes made in `dst_sd`, same ids, no data.

    The clone turns LEGAL once all of it exists (a crash half-way leaves it ILLEGAL),
    so that a VM may mirror into its leaf; Image.syncData then fills the rest.
    """

    sd: str
    dst_sd: str
    img: str
    client: StorageClient

    def __call__(self, ctx: TaskContext) -> None:
        """Lay the chain out, then seal it (a worker thread; blocks)."""
        client, img = self.client, self.img
        chain: Layout = answer(client.read(self.sd, ReadLayout(img=img, legal=False)), ctx, self.sd)
        _lay_out_chain(chain, client, self.dst_sd, ctx)
        _seal_chain(chain.volumes, client, self.dst_sd, img, ctx)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncData:
    """Image.syncData: copy the data of a cloned chain's volumes (ALL, INTERNAL or LEAF).

    INTERNAL leaves out the leaves (the destination's may differ: a VM mirrors into
    it), LEAF copies only the leaf. Each destination volume is ILLEGAL while its data
    is written into it (the image made by cloneStructure is kept: `-n`).
    """

    sd: str
    dst_sd: str
    img: str
    sync_type: str
    client: StorageClient

    def __call__(self, ctx: TaskContext) -> None:
        """Check the two chains match, then copy each layer (a worker thread; blocks)."""
        client, img = self.client, self.img
        source: Layout = answer(client.read(self.sd, ReadLayout(img=img)), ctx, self.sd)
        dest: Layout = answer(
            client.read(self.dst_sd, ReadLayout(img=img, legal=False)), ctx, self.dst_sd
        )
        pairs = sync_pairs(source, dest, self.sync_type, self.dst_sd)
        by_id = {member.vol: member for member in dest.volumes}
        if dest.template is not None:
            by_id[dest.template.vol] = dest.template
        for index, (src, dst) in enumerate(pairs):
            begin = Begin(img=img, vol=dst.vol)
            answer(client.write(self.dst_sd, begin), ctx, self.dst_sd)
            _convert(
                src,
                dst.path,
                dst_fmt=dst.fmt,
                backing=by_id.get(dst.parent),
                existing=True,
                ctx=ctx,
                progress=_share(len(pairs), index, ctx),
            )
            seal = Seal(img=img, vol=dst.vol, bump=True)
            answer(client.write(self.dst_sd, seal), ctx, self.dst_sd)


def sync_pairs(
    source: Layout, dest: Layout, sync_type: str, dst_sd: str
) -> list[tuple[VolumeFacts, VolumeFacts]]:
    """The (source, destination) volumes `sync_type` copies, checked as VDSM checks them.

    Raises:
        MiscNotImplemented: an unknown sync type.
        ImageIsNotLegalChain: no volume is left to sync.
        DestImageActionError: the chains differ in length or ids.
    """
    src, dst = list(source.volumes), list(dest.volumes)
    if sync_type == "INTERNAL":
        if not src or not dst:
            raise ImageIsNotLegalChain(imgUUID=source.img)
        src, dst = src[:-1], dst[:-1]
    elif sync_type == "LEAF":
        if not src or not dst:
            raise ImageIsNotLegalChain(imgUUID=source.img)
        src, dst = src[-1:], dst[-1:]
    elif sync_type != "ALL":
        raise MiscNotImplemented(syncType=sync_type)
    if len(src) != len(dst) or any(a.vol != b.vol for a, b in zip(src, dst, strict=True)):
        raise DestImageActionError(imgUUID=source.img, sdUUID=dst_sd)
    return list(zip(src, dst, strict=True))
