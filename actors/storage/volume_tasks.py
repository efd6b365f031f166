"""The volume and image tasks a StorageDomainActor runs (Volume.create, .delete, ...).

Each is a typed, frozen `DomainTask`: its `claim` keeps two tasks of one domain off
the same volume, its `check` answers the verb before the task id is given, and its
`apply` runs on the domain's writer, reporting progress through the task's context.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.storage.domain_ops import DomainTask
from hostvisor.actors.storage.errors import (
    VolumeAlreadyExists,
    VolumeDoesNotExist,
    VolumeHasChildren,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import BLANK_UUID, Preallocation, VolumeFormat
from hostvisor.actors.storage.tasks import TaskContext


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateVolume(DomainTask):
    """Volume.create: the volume, ILLEGAL until complete (see FileVolumes.create_volume)."""

    img: str
    vol: str
    size: int
    fmt: VolumeFormat
    prealloc: Preallocation
    disk_type: str = "DATA"
    description: str = ""
    parent: str = BLANK_UUID
    parent_image: str | None = None
    initial_size: int | None = None
    legal: bool = True
    op = "create volume"
    verb = "createVolume"

    @property
    def claim(self) -> str:
        """The new volume's id: two creates of one id never run together."""
        return self.vol

    def busy(self) -> HostvisorError:
        """Another create of this id runs: the volume exists, as far as this one knows."""
        return VolumeAlreadyExists(volUUID=self.vol)

    def check(self, domain: FileDomain) -> None:
        """Raise VolumeAlreadyExists if the domain has the volume."""
        if self.vol in domain.volumes():
            raise VolumeAlreadyExists(volUUID=self.vol)

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:
        """Create the volume (it checks again, on the writer)."""
        domain.create_volume(
            self.img,
            self.vol,
            size=self.size,
            fmt=self.fmt,
            prealloc=self.prealloc,
            disk_type=self.disk_type,
            description=self.description,
            parent=self.parent,
            parent_image=self.parent_image,
            initial_size=self.initial_size,
            legal=self.legal,
            progress=ctx.progress,
        )


def _existing(domain: FileDomain, img: str, vol: str) -> None:
    if vol not in domain.volumes(img):
        raise VolumeDoesNotExist(volUUID=vol, imgUUID=img)


@dataclass(frozen=True, slots=True, kw_only=True)
class _OnExistingVolume(DomainTask):
    """A task on one existing volume: it claims the volume and checks it exists."""

    img: str
    vol: str

    @property
    def claim(self) -> str:
        """The volume's id."""
        return self.vol

    def check(self, domain: FileDomain) -> None:
        """Raise VolumeDoesNotExist unless the image has the volume."""
        _existing(domain, self.img, self.vol)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteVolume(_OnExistingVolume):
    """Volume.delete."""

    op = "delete volume"
    verb = "deleteVolume"

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:  # noqa: ARG002
        """Delete the volume."""
        domain.delete_volume(self.img, self.vol)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtendVolume(_OnExistingVolume):
    """Volume.extendSize."""

    size: int
    op = "extend volume"
    verb = "extendVolumeSize"

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:  # noqa: ARG002
        """Grow the volume."""
        domain.extend_volume(self.img, self.vol, self.size)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteImage(DomainTask):
    """Image.delete: every volume of the image."""

    img: str
    op = "delete image"
    verb = "deleteImage"

    @property
    def claim(self) -> str:
        """The image's id."""
        return self.img

    def check(self, domain: FileDomain) -> None:
        """Raise ImageDoesNotExistInSD unless the image exists."""
        domain.volumes(self.img)

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:  # noqa: ARG002
        """Delete the image."""
        domain.delete_image(self.img)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteVolumes(DomainTask):
    """Image.deleteVolumes: some volumes of one image (the Engine's deleteVolume).

    Deleted children first, whatever the order given: each round deletes every listed
    volume no other volume is based on any more, until none is left, or none can go
    (a volume outside the list is based on one: VolumeHasChildren).
    """

    img: str
    vols: tuple[str, ...]
    op = "delete volumes"
    verb = "deleteVolume"

    @property
    def claim(self) -> str:
        """The image's id: no other change of the image runs beside it."""
        return self.img

    def check(self, domain: FileDomain) -> None:
        """Raise VolumeDoesNotExist unless the image has every listed volume."""
        for vol in self.vols:
            _existing(domain, self.img, vol)

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:
        """Delete the volumes, children first, reporting progress.

        Raises VolumeHasChildren when a round deletes nothing.
        """
        left = list(dict.fromkeys(self.vols))
        total = len(left)
        while left:
            blocked: VolumeHasChildren | None = None
            deleted = 0
            for vol in list(left):
                try:
                    domain.delete_volume(self.img, vol)
                except VolumeHasChildren as error:
                    blocked = error
                    continue
                left.remove(vol)
                deleted += 1
                ctx.progress((total - len(left)) / total)
            if left and not deleted and blocked is not None:
                raise blocked
