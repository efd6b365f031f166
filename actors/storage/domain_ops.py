"""The messages a StorageDomainActor runs: typed, frozen, each its own check and act.

Three kinds, by where they run (see `domain_actor`):
- `DomainRead`: runs off the actor's thread, alongside anything else;
- `DomainWrite`: runs on the domain's writer, after every write asked before it, so
  its check and its act see no other change in between (check-then-act is safe
  *inside* one write, never across two);
- `DomainTask`: a long write run as an SPM task: `check` runs as a read before the
  verb answers the task id, then `apply` runs on the writer, reporting progress
  (the volume and image tasks are in actors/storage/volume_tasks.py).

The recipe of each operation lives here, next to the actor; api/ only binds params.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.storage.errors import (
    StorageDomainAlreadyAttached,
    StoragePoolAlreadyExists,
    VolumeIsBusy,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.metadata import write_domain_metadata
from hostvisor.actors.storage.model import Legality, VolumeFormat
from hostvisor.actors.storage.tasks import TaskContext

T = TypeVar("T")

POOL_KEY = "POOL_UUID"


class DomainRead(Generic[T]):
    """A read of the domain; `apply` blocks on its disk and may run beside others."""

    __slots__ = ()
    op = "read"

    def apply(self, domain: FileDomain) -> T:
        """Read the domain (a worker thread; blocks)."""
        raise NotImplementedError


class DomainWrite(Generic[T]):
    """A change of the domain; `apply` checks and acts with no other write between."""

    __slots__ = ()
    op = "write"

    def apply(self, domain: FileDomain) -> T:
        """Check, then change the domain (a worker thread, the domain's turn; blocks)."""
        raise NotImplementedError


class DomainTask:
    """A long change run as a task: `check` before the task id is answered, `apply` in it."""

    __slots__ = ()
    op = "task"
    verb = "task"

    @property
    def claim(self) -> str | None:
        """What no two running tasks of the domain may share (a volume id), if anything."""
        return None

    def busy(self) -> HostvisorError:
        """The verb's error when another task of the domain holds the same claim."""
        return VolumeIsBusy(volUUID=self.claim, reason="a task of the domain uses it")

    def check(self, domain: FileDomain) -> None:
        """Raise the verb's error if the task cannot start (a worker thread; blocks)."""

    def apply(self, domain: FileDomain, ctx: TaskContext) -> Any:
        """Do the work (a worker thread, the domain's turn; blocks)."""
        raise NotImplementedError


def pool_of(meta: dict[str, str]) -> str:
    """The pool a domain's metadata says it is in ("" for none)."""
    return meta.get(POOL_KEY, "")


# -- reads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Where(DomainRead[Path]):
    """The domain's directory (no I/O)."""

    op = "where"

    def apply(self, domain: FileDomain) -> Path:
        """Return `domain.path`."""
        return domain.path


@dataclass(frozen=True, slots=True, kw_only=True)
class Metadata(DomainRead[dict[str, str]]):
    """The domain's metadata."""

    op = "metadata"

    def apply(self, domain: FileDomain) -> dict[str, str]:
        """Read dom_md/metadata."""
        return domain.metadata()


@dataclass(frozen=True, slots=True, kw_only=True)
class Info(DomainRead[dict[str, Any]]):
    """StorageDomain.getInfo."""

    op = "info"

    def apply(self, domain: FileDomain) -> dict[str, Any]:
        """Return the domain's info."""
        return domain.info()


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats(DomainRead[dict[str, Any]]):
    """StorageDomain.getStats."""

    op = "stats"

    def apply(self, domain: FileDomain) -> dict[str, Any]:
        """Return the domain's space."""
        return domain.stats()


@dataclass(frozen=True, slots=True, kw_only=True)
class Images(DomainRead[list[str]]):
    """StorageDomain.getImages."""

    op = "images"

    def apply(self, domain: FileDomain) -> list[str]:
        """Return the image ids."""
        return domain.images()


@dataclass(frozen=True, slots=True, kw_only=True)
class Volumes(DomainRead[list[str]]):
    """The volumes of one image (or of all, with `img` None)."""

    img: str | None = None
    op = "volumes"

    def apply(self, domain: FileDomain) -> list[str]:
        """Return the volume ids. Raises ImageDoesNotExistInSD."""
        return domain.volumes(self.img)


@dataclass(frozen=True, slots=True, kw_only=True)
class Validate(DomainRead[None]):
    """StorageDomain.validate: raises when the domain is unusable."""

    op = "validate"

    def apply(self, domain: FileDomain) -> None:
        """Validate the domain."""
        domain.validate()


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeInfo(DomainRead[dict[str, Any]]):
    """Volume.getInfo."""

    img: str
    vol: str
    op = "volume info"

    def apply(self, domain: FileDomain) -> dict[str, Any]:
        """Return the volume's info."""
        return domain.volume_info(self.img, self.vol)


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeSize(DomainRead[dict[str, str]]):
    """Volume.getSize."""

    img: str
    vol: str
    op = "volume size"

    def apply(self, domain: FileDomain) -> dict[str, str]:
        """Return {apparentsize, truesize}."""
        return domain.volume_size(self.img, self.vol)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareImage(DomainRead[Path]):
    """Image.prepare: check the chain, answer the leaf's path."""

    img: str
    vol: str
    allow_illegal: bool = False
    op = "prepare"

    def apply(self, domain: FileDomain) -> Path:
        """Return the leaf's path."""
        return domain.prepare_image(self.img, self.vol, allow_illegal=self.allow_illegal)


@dataclass(frozen=True, slots=True, kw_only=True)
class TeardownImage(DomainRead[None]):
    """Image.teardown."""

    img: str
    vol: str | None = None
    op = "teardown"

    def apply(self, domain: FileDomain) -> None:
        """Release the prepared image."""
        domain.teardown_image(self.img, self.vol)


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeData(DomainRead[tuple[str, str, int]]):
    """A volume's (path, qemu format, capacity), its chain checked: a VM disk, a copy's end."""

    img: str
    vol: str
    allow_illegal: bool = False
    op = "prepare"

    def apply(self, domain: FileDomain) -> tuple[str, str, int]:
        """Prepare the chain and read the leaf's format and capacity."""
        path = domain.prepare_image(self.img, self.vol, allow_illegal=self.allow_illegal)
        info = domain.volume_info(self.img, self.vol)
        return str(path), VolumeFormat[info["format"]].qemu_format, int(info["capacity"])


# -- writes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SetDescription(DomainWrite[None]):
    """StorageDomain.setDescription."""

    text: str
    op = "set description"

    def apply(self, domain: FileDomain) -> None:
        """Write DESCRIPTION."""
        domain.update_metadata(DESCRIPTION=self.text)


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinPool(DomainWrite[dict[str, str]]):
    """StoragePool.create, for one domain: join `sp` unless in a pool; return the old metadata.

    Raises StoragePoolAlreadyExists (already in `sp`) or StorageDomainAlreadyAttached.
    """

    sp: str
    changes: tuple[tuple[str, str], ...] = ()
    """The master's pool keys (ROLE, MASTER_VERSION, ...), besides POOL_UUID."""
    op = "join pool"

    def apply(self, domain: FileDomain) -> dict[str, str]:
        """Check the domain is in no pool, then write the pool's keys."""
        before = domain.metadata()
        current = pool_of(before)
        if current == self.sp:
            raise StoragePoolAlreadyExists(spUUID=self.sp, sdUUID=domain.sd_uuid)
        if current:
            raise StorageDomainAlreadyAttached(sdUUID=domain.sd_uuid, spUUID=current)
        domain.update_metadata(**{POOL_KEY: self.sp}, **dict(self.changes))
        return before


@dataclass(frozen=True, slots=True, kw_only=True)
class UndoJoin(DomainWrite[None]):
    """Roll a `JoinPool` back: restore the metadata it replaced, if still in `sp`."""

    sp: str
    before: tuple[tuple[str, str], ...]
    op = "undo join pool"

    def apply(self, domain: FileDomain) -> None:
        """Restore the old metadata unless something else changed the pool since."""
        if pool_of(domain.metadata()) == self.sp:
            write_domain_metadata(domain.metadata_path, dict(self.before))


@dataclass(frozen=True, slots=True, kw_only=True)
class Attach(DomainWrite[None]):
    """StorageDomain.attach: join `sp` unless in another pool."""

    sp: str
    op = "attach"

    def apply(self, domain: FileDomain) -> None:
        """Raise StorageDomainAlreadyAttached if in another pool; write POOL_UUID."""
        current = pool_of(domain.metadata())
        if current and current != self.sp:
            raise StorageDomainAlreadyAttached(sdUUID=domain.sd_uuid, spUUID=current)
        if current != self.sp:
            domain.update_metadata(**{POOL_KEY: self.sp})


@dataclass(frozen=True, slots=True, kw_only=True)
class Detach(DomainWrite[None]):
    """StorageDomain.detach: leave the pool."""

    op = "detach"

    def apply(self, domain: FileDomain) -> None:
        """Clear POOL_UUID."""
        domain.update_metadata(**{POOL_KEY: ""})


@dataclass(frozen=True, slots=True, kw_only=True)
class Format(DomainWrite[None]):
    """StorageDomain.format: remove the domain, unless in a pool (or `auto_detach`)."""

    auto_detach: bool = False
    op = "format"

    def apply(self, domain: FileDomain) -> None:
        """Raise StorageDomainAlreadyAttached while in a pool; remove the domain."""
        current = pool_of(domain.metadata())
        if current and not self.auto_detach:
            raise StorageDomainAlreadyAttached(sdUUID=domain.sd_uuid, spUUID=current)
        domain.format()


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLegality(DomainWrite[None]):
    """Volume.setLegality (and the copy job's ILLEGAL/LEGAL flips)."""

    img: str
    vol: str
    legality: Legality
    op = "set legality"

    def apply(self, domain: FileDomain) -> None:
        """Write the volume's LEGALITY."""
        domain.set_legality(self.img, self.vol, self.legality)


@dataclass(frozen=True, slots=True, kw_only=True)
class SetVolumeDescription(DomainWrite[None]):
    """Volume.setDescription."""

    img: str
    vol: str
    text: str
    op = "set volume description"

    def apply(self, domain: FileDomain) -> None:
        """Write the volume's DESCRIPTION."""
        domain.set_volume_description(self.img, self.vol, self.text)
