"""What copying asks of one storage domain: typed reads and writes of its volumes.

Copies span domains and run for minutes, so none of them runs on a domain's
writer: the task or job (actors/storage/copying_works.py, copying_jobs.py) runs
on a worker of the task manager and asks each domain for what it needs with the
messages below, exactly as `SDM.copy_data` does (actors/storage/sdm.py). A
read's `apply` runs on a worker beside other reads; a write's on the domain's
writer, its check and its change with no other write between. Each blocks on the
disk (and on qemu-img for Measure and QemuInfo); none runs on an actor's thread.
The data itself moves with qemu-img, outside every actor.

The invariant every copy keeps: a volume whose data is being written is ILLEGAL
on disk (`MakeVolume` makes new ones ILLEGAL, `Begin` marks existing ones), and it
turns LEGAL only in `Seal` (or `End`), after its data was flushed. So an agent killed at
any point leaves no LEGAL volume with partial data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.copying_errors import (
    GenerationMismatch,
    InvalidVolumeUpdate,
    UnsupportedOperation,
)
from hostvisor.actors.storage.domain_ops import DomainRead, DomainWrite
from hostvisor.actors.storage.errors import (
    ImageDoesNotExistInSD,
    ImageIsNotLegalChain,
    StorageInvalidParameter,
    VolumeDoesNotExist,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.filevolume import (
    DESCRIPTION_MAX,
    update_volume_meta,
    volume_meta,
)
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    Legality,
    Preallocation,
    VolumeFormat,
    VolumeRole,
)

MAX_GENERATION = 999
"""A volume's generation counts 0..999 and wraps, as VDSM's does."""


def next_generation(generation: int) -> int:
    """The generation after `generation` (wraps after 999)."""
    return (generation + 1) % (MAX_GENERATION + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeFacts:
    """One volume as its metadata describes it, with its data's path."""

    vol: str
    image: str
    """The image the volume belongs to (a template's link names the template's image)."""
    capacity: int
    fmt: VolumeFormat
    prealloc: Preallocation
    disk_type: str
    description: str
    parent: str
    role: VolumeRole
    legality: str
    generation: int
    path: str

    @property
    def qemu_format(self) -> str:
        """qemu-img's name of the volume's format."""
        return self.fmt.qemu_format


def facts(domain: FileDomain, img: str, vol: str) -> VolumeFacts:
    """Read one volume's facts (a worker thread; blocks).

    Raises:
        ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
    """
    meta = volume_meta(domain, img, vol)
    try:
        return VolumeFacts(
            vol=vol,
            image=meta.get("IMAGE", img),
            capacity=int(meta.get("CAP", "0")),
            fmt=VolumeFormat[meta.get("FORMAT", "RAW")],
            prealloc=Preallocation[meta.get("TYPE", "SPARSE")],
            disk_type=meta.get("DISKTYPE", "DATA"),
            description=meta.get("DESCRIPTION", ""),
            parent=meta.get("PUUID", BLANK_UUID),
            role=VolumeRole(meta.get("VOLTYPE", VolumeRole.LEAF.value)),
            legality=meta.get("LEGALITY", ""),
            generation=int(meta.get("GEN", "0")),
            path=str(domain.volume_path(img, vol)),
        )
    except (KeyError, ValueError):
        raise ImageIsNotLegalChain(imgUUID=img, unreadable=vol) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """An image's chain, base first, and the template it is based on, if any."""

    img: str
    volumes: tuple[VolumeFacts, ...]
    template: VolumeFacts | None = None
    in_use: bool = False
    """A template image that images of its domain are based on (their links)."""

    @property
    def legal(self) -> bool:
        """Whether the chain is whole and every volume, and the template, is LEGAL."""
        members = (*self.volumes, *((self.template,) if self.template else ()))
        return bool(self.volumes) and all(m.legality == Legality.LEGAL for m in members)

    def holds(self, vol: str) -> bool:
        """Whether `vol` is one of the image's own volumes."""
        return any(member.vol == vol for member in self.volumes)


def layout(domain: FileDomain, img: str) -> Layout:
    """The chain of image `img`, found from its one LEAF (VDSM's getChain); blocks.

    A template image (one SHARED volume) is its own chain.

    Raises:
        ImageDoesNotExistInSD: no such image.
        ImageIsNotLegalChain: no leaf, more than one, or a broken chain.
    """
    own = [facts(domain, img, vol) for vol in domain.volumes(img)]
    if not own:
        raise ImageDoesNotExistInSD(imgUUID=img, sdUUID=domain.sd_uuid)
    if len(own) == 1 and own[0].role is VolumeRole.SHARED:
        try:
            in_use = Path(own[0].path).stat().st_nlink > 1
        except FileNotFoundError:
            raise ImageIsNotLegalChain(imgUUID=img, missing=own[0].vol) from None
        return Layout(img=img, volumes=(own[0],), in_use=in_use)
    leaves = [member for member in own if member.role is VolumeRole.LEAF]
    if len(leaves) != 1:
        raise ImageIsNotLegalChain(imgUUID=img, leaves=[leaf.vol for leaf in leaves])
    chain = [facts(domain, img, vol) for vol in domain.chain(img, leaves[0].vol)]
    template = chain.pop(0) if chain and chain[0].image != img else None
    return Layout(img=img, volumes=tuple(chain), template=template)


# -- reads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadFacts(DomainRead[VolumeFacts]):
    """One volume's facts; with `legal_chain`, its whole chain must be whole and LEGAL."""

    img: str
    vol: str
    legal_chain: bool = False
    op = "volume facts"

    def apply(self, domain: FileDomain) -> VolumeFacts:
        """Raises VolumeDoesNotExist, ImageDoesNotExistInSD or ImageIsNotLegalChain."""
        if self.legal_chain:
            domain.prepare_image(self.img, self.vol)
        return facts(domain, self.img, self.vol)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadLayout(DomainRead[Layout]):
    """An image's chain; with `legal`, ImageIsNotLegalChain unless all of it is LEGAL."""

    img: str
    legal: bool = True
    op = "image layout"

    def apply(self, domain: FileDomain) -> Layout:
        """Raises ImageDoesNotExistInSD or ImageIsNotLegalChain."""
        found = layout(domain, self.img)
        if self.legal and not found.legal:
            raise ImageIsNotLegalChain(imgUUID=self.img)
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageState(DomainRead[Layout | None]):
    """A destination image's chain, or None when the domain has no such image."""

    img: str
    op = "image state"

    def apply(self, domain: FileDomain) -> Layout | None:
        """Never raises for a missing image; a broken one reads as an ILLEGAL layout."""
        if self.img not in domain.images():
            return None
        try:
            return layout(domain, self.img)
        except (ImageIsNotLegalChain, ImageDoesNotExistInSD, VolumeDoesNotExist):
            return Layout(img=self.img, volumes=())


@dataclass(frozen=True, slots=True, kw_only=True)
class Measure(DomainRead[dict[str, int]]):
    """Volume.measure: the bytes a copy of the volume needs as `out_fmt`."""

    img: str
    vol: str
    out_fmt: VolumeFormat
    backing: bool = True
    base: str | None = None
    op = "measure"

    def apply(self, domain: FileDomain) -> dict[str, int]:
        """Run qemu-img measure. Raises VolumeDoesNotExist, UnsupportedOperation."""
        top = facts(domain, self.img, self.vol)
        base = None
        if self.backing and self.base:
            if top.parent == BLANK_UUID:
                raise UnsupportedOperation(reason="the volume has no parent", baseID=self.base)
            if top.parent != self.base:
                raise UnsupportedOperation(reason="base is not the parent", parent=top.parent)
            parent = facts(domain, self.img, top.parent)
            base = (parent.path, parent.qemu_format)
        return qemuimg.measure(
            top.path,
            fmt=top.qemu_format,
            out_fmt=self.out_fmt.qemu_format,
            backing=self.backing,
            base=base,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class QemuInfo(DomainRead[dict[str, Any]]):
    """Volume.getQemuImageInfo: qemu-img's view of the volume, in VDSM's words."""

    img: str
    vol: str
    op = "qemu image info"

    def apply(self, domain: FileDomain) -> dict[str, Any]:
        """Return {virtualsize, format, clustersize?, backingfile?, compat?, bitmaps?}."""
        top = facts(domain, self.img, self.vol)
        info = qemuimg.info(top.path)
        assert isinstance(info, dict)  # noqa: S101 - no backing_chain, so one dict
        result: dict[str, Any] = {"virtualsize": info["virtual-size"], "format": info["format"]}
        if "cluster-size" in info:
            result["clustersize"] = info["cluster-size"]
        if "backing-filename" in info:
            result["backingfile"] = info["backing-filename"]
        data = info.get("format-specific", {}).get("data", {})
        if "compat" in data:
            result["compat"] = data["compat"]
        if "bitmaps" in data:
            # VDSM's schema says objects; its code (volume.getQemuImageInfo) sends
            # Qcow2BitmapInfo namedtuples, which JSON makes [name, granularity, flags].
            result["bitmaps"] = [[b["name"], b["granularity"], b["flags"]] for b in data["bitmaps"]]
        return result


# -- writes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MakeVolume(DomainWrite[str]):
    """Create one destination volume, ILLEGAL, its parent possibly ILLEGAL too.

    The data file is made sparse (the copy writes it); `prealloc` is what the
    metadata records, as VDSM does on file domains. Answers the data's path.
    """

    img: str
    vol: str
    capacity: int
    fmt: VolumeFormat
    prealloc: Preallocation
    disk_type: str = "DATA"
    description: str = ""
    parent: str = BLANK_UUID
    parent_image: str | None = None
    op = "lay out volume"

    def apply(self, domain: FileDomain) -> str:
        """Raises VolumeAlreadyExists, VolumeCreationError, StorageInvalidParameter."""
        domain.create_volume(
            self.img,
            self.vol,
            size=self.capacity,
            fmt=self.fmt,
            prealloc=Preallocation.SPARSE,
            disk_type=self.disk_type,
            description=self.description[:DESCRIPTION_MAX],
            parent=self.parent,
            parent_image=self.parent_image,
            legal=False,
            illegal_parent=True,
        )
        if self.prealloc is not Preallocation.SPARSE:
            update_volume_meta(domain, self.img, self.vol, TYPE=self.prealloc.name)
        return str(domain.volume_path(self.img, self.vol))


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal(DomainWrite[None]):
    """A copied volume is complete: LEGAL (and SHARED for a template), in one write."""

    img: str
    vol: str
    role: VolumeRole | None = None
    bump: bool = False
    """Also advance the generation (an operation on an existing volume ended)."""
    op = "seal volume"

    def apply(self, domain: FileDomain) -> None:
        """Raises VolumeDoesNotExist."""
        changes = {"LEGALITY": Legality.LEGAL.value}
        if self.role is not None:
            changes["VOLTYPE"] = self.role.value
        if self.bump:
            generation = int(volume_meta(domain, self.img, self.vol).get("GEN", "0"))
            changes["GEN"] = str(next_generation(generation))
        update_volume_meta(domain, self.img, self.vol, **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Begin(DomainWrite[VolumeFacts]):
    """An operation on an existing volume starts: check its generation, maybe mark ILLEGAL.

    VDSM's `Volume.operation`: `generation` None skips the check.
    """

    img: str
    vol: str
    generation: int | None = None
    illegal: bool = True
    op = "begin volume operation"

    def apply(self, domain: FileDomain) -> VolumeFacts:
        """Raises VolumeDoesNotExist or GenerationMismatch."""
        found = facts(domain, self.img, self.vol)
        if self.generation is not None and self.generation != found.generation:
            raise GenerationMismatch(requested=self.generation, actual=found.generation)
        if self.illegal and found.legality != Legality.ILLEGAL:
            update_volume_meta(domain, self.img, self.vol, LEGALITY=Legality.ILLEGAL.value)
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class End(DomainWrite[None]):
    """An operation on an existing volume ended: advance its generation (and LEGAL)."""

    img: str
    vol: str
    legal: bool = False
    op = "end volume operation"

    def apply(self, domain: FileDomain) -> None:
        """Raises VolumeDoesNotExist."""
        generation = int(volume_meta(domain, self.img, self.vol).get("GEN", "0"))
        changes = {"GEN": str(next_generation(generation))}
        if self.legal:
            changes["LEGALITY"] = Legality.LEGAL.value
        update_volume_meta(domain, self.img, self.vol, **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveImage(DomainWrite[bool]):
    """Delete an image if it is there (a copy's rollback, a move's source); answers whether."""

    img: str
    op = "remove image"

    def apply(self, domain: FileDomain) -> bool:
        """Raises ImageDeleteError."""
        if self.img not in domain.images():
            return False
        domain.delete_image(self.img)
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveVolume(DomainWrite[None]):
    """Delete a volume a copy made (its rollback); its image too once empty."""

    img: str
    vol: str
    op = "remove volume"

    def apply(self, domain: FileDomain) -> None:
        """Raises VolumeHasChildren; a missing volume is not an error."""
        if self.img not in domain.images():
            return
        if self.vol in domain.volumes(self.img):
            domain.delete_volume(self.img, self.vol)
        if not domain.volumes(self.img):
            domain.delete_image(self.img)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attributes:
    """SDM.update_volume's `vol_attr`: each None is left as it is."""

    legality: Legality | None = None
    description: str | None = None
    generation: int | None = None
    shared: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAttributes(DomainWrite[None]):
    """SDM.update_volume: VDSM's `Volume.update_attributes`, in one metadata write."""

    img: str
    vol: str
    generation: int | None
    attributes: Attributes
    op = "update volume attributes"

    def apply(self, domain: FileDomain) -> None:
        """Raises VolumeDoesNotExist, GenerationMismatch or InvalidVolumeUpdate."""
        found = facts(domain, self.img, self.vol)
        if self.generation is not None and self.generation != found.generation:
            raise GenerationMismatch(requested=self.generation, actual=found.generation)
        attrs, changes = self.attributes, {}
        if attrs.shared:
            if found.role is not VolumeRole.LEAF:
                raise InvalidVolumeUpdate(vol_id=self.vol, reason=f"{found.role} volume")
            if found.parent != BLANK_UUID:
                raise InvalidVolumeUpdate(vol_id=self.vol, reason=f"has parent {found.parent}")
            changes["VOLTYPE"] = VolumeRole.SHARED.value
        if attrs.legality is not None:
            if attrs.legality == found.legality:
                raise InvalidVolumeUpdate(vol_id=self.vol, reason=f"already {found.legality}")
            changes["LEGALITY"] = attrs.legality.value
        if attrs.description is not None:
            if any(c in attrs.description for c in "\r\n\0"):
                raise StorageInvalidParameter(name="description", value=attrs.description)
            changes["DESCRIPTION"] = attrs.description[:DESCRIPTION_MAX]
        generation = attrs.generation
        if generation is None:
            generation = next_generation(found.generation)
        changes["GEN"] = str(generation)
        update_volume_meta(domain, self.img, self.vol, **changes)
