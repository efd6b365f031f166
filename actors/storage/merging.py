"""Merges on storage: a volume chain's metadata made to match qemu's, and cold merge.

Every operation is a typed message a `StorageDomainActor` runs (domain_ops.py's kinds):

- `SyncVolumeChain` (a write): VDSM's `Image.syncVolumeChain`. Given the chain qemu
  uses (`actual`), fix the metadata: a leaf that left the chain turns ILLEGAL (before
  an active commit pivots, and after it); an internal volume that left it has its
  child re-parented onto its parent (after an internal commit); a leaf still in the
  chain that is ILLEGAL turns LEGAL again (a failed pivot). Runs on any host (HSM).
- `GrowCapacity` (a write): the base's CAP follows a larger top (a merge's base).
- `ReconcileVolumeChain` (a write): `Image.reconcileVolumeChain` — walk the backing
  files from the leaf with qemu-img, drop an ILLEGAL leaf, sync, answer the chain.
- `PrepareMerge`, `FinalizeMerge` (SPM tasks): `StoragePool.prepareMerge` and
  `.finalizeMerge` of a cold merge (VDSM's storage/merge.py); `MergeSubchain` is the
  `SDM.merge` job between them (qemu-img commit of top into base).

`VolumeChains` is what a VM's actor uses (from a worker) to reach these during a live
merge. Cold merge's order, as the Engine runs it (ColdMergeSnapshotSingleDiskCommand):
prepareMerge (base CAP ≥ top's) → SDM.merge (commit; base GEN + 1) → finalizeMerge
(leaf top: top ILLEGAL; internal top: top ILLEGAL, child rebased onto base and
re-parented) → Image.deleteVolumes of top.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from hostvisor.actors.errors import CallerError, InvalidArgument, Unavailable
from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.domain_ops import (
    DomainRead,
    DomainTask,
    DomainWrite,
    VolumeData,
    VolumeInfo,
)
from hostvisor.actors.storage.errors import ImageIsNotLegalChain, VolumeIsBusy
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.filevolume import update_volume_meta, volume_children, volume_meta
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    Legality,
    VolumeFormat,
    VolumeRole,
    check_uuid,
)
from hostvisor.actors.storage.proxy import StorageClient, wait
from hostvisor.actors.storage.tasks import TaskContext

POLL = 1.0
"""Seconds between looks at a job's abort flag while a domain's answer is awaited."""
CHAIN_TIMEOUT = 60.0
"""Seconds a VM's merge waits for a domain to change a chain's metadata."""


class SharedVolumeNonWritable(CallerError):
    """A template (SHARED) volume cannot be a merge's base or top (VDSM's code 219)."""

    code = 219
    message = "Shared volume is read only"


class GenerationMismatch(CallerError):
    """The base's generation is not the one the caller expects (VDSM's code 911)."""

    code = 911
    message = "The provided generation does not match the actual generation"


class VolumeIsNotInChain(CallerError):
    """A merge names a volume outside the image's chain (VDSM's code 920)."""

    code = 920
    message = "Volume is not part of the chain."


class WrongParentVolume(CallerError):
    """The top's parent is not the base (VDSM's code 921)."""

    code = 921
    message = "Wrong parent volume."


# -- the chain's metadata -------------------------------------------------------------------


def sync_volume_chain(domain: FileDomain, img: str, vol: str, actual: list[str]) -> None:
    """Make the metadata of `img`'s chain up to `vol` agree with `actual` (VDSM's rules).

    Runs on the domain's writer (blocks). Volumes of `actual` are base first. Raises
    VolumeDoesNotExist or ImageIsNotLegalChain when the chain cannot be read.
    """
    current = [v for v in domain.chain(img, vol) if not _shared(domain, img, v)]
    removed: list[str] = []
    for member in current:
        if member not in actual:
            removed.append(member)
        elif removed:
            break
    if not removed:
        if volume_meta(domain, img, vol).get("LEGALITY") != Legality.LEGAL:
            update_volume_meta(domain, img, vol, LEGALITY=Legality.LEGAL.value)
        return
    parent = volume_meta(domain, img, removed[0]).get("PUUID", BLANK_UUID)
    tail = removed[-1]
    if volume_meta(domain, img, tail).get("VOLTYPE") == VolumeRole.LEAF:
        update_volume_meta(domain, img, tail, LEGALITY=Legality.ILLEGAL.value)
        return
    for child in volume_children(domain, img, tail):
        update_volume_meta(domain, img, child, PUUID=parent)


def _shared(domain: FileDomain, img: str, vol: str) -> bool:
    return volume_meta(domain, img, vol).get("VOLTYPE") == VolumeRole.SHARED


def _capacity(domain: FileDomain, img: str, vol: str) -> int:
    return int(volume_meta(domain, img, vol).get("CAP", "0"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncVolumeChain(DomainWrite[None]):
    """VDSM's `imageSyncVolumeChain`: the metadata follows the chain qemu uses."""

    img: str
    vol: str
    """The chain's leaf as the metadata knows it (the drive's volume)."""
    actual: tuple[str, ...]
    op = "sync volume chain"

    def apply(self, domain: FileDomain) -> None:
        """See `sync_volume_chain`."""
        sync_volume_chain(domain, self.img, self.vol, list(self.actual))


@dataclass(frozen=True, slots=True, kw_only=True)
class GrowCapacity(DomainWrite[None]):
    """A merge's base: its CAP becomes the top's when the top's is larger (metadata only)."""

    img: str
    base: str
    top: str
    op = "grow capacity"

    def apply(self, domain: FileDomain) -> None:
        """Write the base's CAP if the top's is larger (qcow2 grows by itself)."""
        top = _capacity(domain, self.img, self.top)
        if top > _capacity(domain, self.img, self.base):
            update_volume_meta(domain, self.img, self.base, CAP=str(top))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileVolumeChain(DomainWrite[list[str]]):
    """Image.reconcileVolumeChain: the chain qemu-img sees from `leaf`, synced.

    Not for a running VM's image (qemu may be rewriting the chain).
    """

    img: str
    leaf: str
    op = "reconcile volume chain"

    def apply(self, domain: FileDomain) -> list[str]:
        """Walk backing files from the leaf; drop it if ILLEGAL; sync; return the chain.

        Raises VolumeDoesNotExist, ImageDoesNotExistInSD, QemuImgError.
        """
        meta = volume_meta(domain, self.img, self.leaf)
        chain: list[str] = []
        current: str | None = self.leaf
        while current is not None:
            if current in chain:
                raise ImageIsNotLegalChain(imgUUID=self.img, reason=f"loop at {current}")
            chain.insert(0, current)
            info = qemuimg.info(domain.volume_path(self.img, current))
            assert isinstance(info, dict)  # noqa: S101 - no backing_chain: one dict
            backing = info.get("backing-filename")
            current = Path(backing).name if backing else None
        if meta.get("LEGALITY") == Legality.ILLEGAL:
            chain.remove(self.leaf)
        if chain:
            sync_volume_chain(domain, self.img, chain[-1], chain)
        return chain


# -- cold merge ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Subchain:
    """The Engine's `subchainInfo` (SubchainInfoHelper): top is merged into its parent base."""

    sd: str
    img: str
    top: str
    base: str
    base_generation: int | None = None

    @classmethod
    def from_wire(cls, wire: Any, name: str = "subchainInfo") -> Subchain:
        """Check `{sd_id, img_id, top_id, base_id, base_generation?}`.

        Raises:
            InvalidArgument: not a dict, an id missing or not a UUID, a bad generation.
        """
        if not isinstance(wire, dict):
            raise InvalidArgument(param=name, reason="must be an object")
        generation = wire.get("base_generation")
        if generation is not None and (
            isinstance(generation, bool) or not isinstance(generation, int) or generation < 0
        ):
            raise InvalidArgument(param=f"{name}.base_generation", value=repr(generation))
        ids = {key: wire.get(key) for key in ("sd_id", "img_id", "top_id", "base_id")}
        for key, value in ids.items():
            if not isinstance(value, str):
                raise InvalidArgument(param=f"{name}.{key}", reason="a UUID is required")
            check_uuid(value, f"{name}.{key}")
        return cls(
            sd=str(ids["sd_id"]),
            img=str(ids["img_id"]),
            top=str(ids["top_id"]),
            base=str(ids["base_id"]),
            base_generation=generation,
        )

    def chain(self, domain: FileDomain) -> list[str]:
        """The image's chain from its (only) leaf, base first, a template included."""
        leaves = [
            vol
            for vol in domain.volumes(self.img)
            if volume_meta(domain, self.img, vol).get("VOLTYPE") == VolumeRole.LEAF
        ]
        if len(leaves) != 1:
            raise ImageIsNotLegalChain(imgUUID=self.img, leaves=leaves)
        return domain.chain(self.img, leaves[0])

    def validate(self, domain: FileDomain) -> list[str]:
        """VDSM's SubchainInfo.validate; return the chain.

        Raises VolumeIsNotInChain, WrongParentVolume, SharedVolumeNonWritable,
        ImageDoesNotExistInSD, ImageIsNotLegalChain.
        """
        chain = self.chain(domain)
        for vol in (self.base, self.top):
            if vol not in chain:
                raise VolumeIsNotInChain(sdUUID=self.sd, imgUUID=self.img, volUUID=vol)
        if volume_meta(domain, self.img, self.top).get("PUUID") != self.base:
            raise WrongParentVolume(base=self.base, top=self.top)
        for vol in (self.base, self.top):
            if _shared(domain, self.img, vol):
                raise SharedVolumeNonWritable(volUUID=vol)
        return chain


@dataclass(frozen=True, slots=True, kw_only=True)
class _OnSubchain(DomainTask):
    """A cold merge step: claims the image, checks the subchain before the task id."""

    subchain: Subchain

    @property
    def claim(self) -> str:
        """The image's id: no other change of the image runs beside it."""
        return self.subchain.img

    def busy(self) -> VolumeIsBusy:
        """Another task of the image runs."""
        return VolumeIsBusy(volUUID=self.subchain.base, reason="a task of the image runs")

    def check(self, domain: FileDomain) -> None:
        """Raise the subchain's error (see `Subchain.validate`)."""
        self.subchain.validate(domain)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareMerge(_OnSubchain):
    """StoragePool.prepareMerge: the base can hold the top (CAP, or a raw base's size)."""

    op = "prepare merge"
    verb = "prepareMerge"

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:  # noqa: ARG002
        """Validate again; grow the base's capacity to the top's if smaller."""
        sub = self.subchain
        sub.validate(domain)
        top = _capacity(domain, sub.img, sub.top)
        if top <= _capacity(domain, sub.img, sub.base):
            return
        base_meta = volume_meta(domain, sub.img, sub.base)
        if base_meta.get("FORMAT") == VolumeFormat.RAW.name:
            domain.extend_volume(sub.img, sub.base, top)
        else:
            update_volume_meta(domain, sub.img, sub.base, CAP=str(top))


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalizeMerge(_OnSubchain):
    """StoragePool.finalizeMerge: the top leaves the chain (ILLEGAL; its child rebased)."""

    op = "finalize merge"
    verb = "finalizeMerge"

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:  # noqa: ARG002
        """Take the top out of the chain (on the writer; blocks).

        A leaf top turns ILLEGAL. An internal top turns ILLEGAL, then its child is
        rebased onto the base (qemu-img rebase -u, a relative name) and re-parented.

        Raises the subchain's errors, or QemuImgError (the top is LEGAL again then).
        """
        sub = self.subchain
        chain = sub.validate(domain)
        remaining = [vol for vol in chain if vol != sub.top]
        top_meta = volume_meta(domain, sub.img, sub.top)
        if top_meta.get("VOLTYPE") != VolumeRole.LEAF:
            child = volume_children(domain, sub.img, sub.top)[0]
            base_fmt = VolumeFormat[volume_meta(domain, sub.img, sub.base)["FORMAT"]]
            update_volume_meta(domain, sub.img, sub.top, LEGALITY=Legality.ILLEGAL.value)
            try:
                _rebase(domain.volume_path(sub.img, child), sub.base, base_fmt.qemu_format)
            except qemuimg.QemuImgError:
                update_volume_meta(domain, sub.img, sub.top, LEGALITY=Legality.LEGAL.value)
                raise
        sync_volume_chain(domain, sub.img, chain[-1], remaining)


def _rebase(path: Path, backing: str, backing_fmt: str) -> None:
    """Point a qcow2's backing file at `backing` (a name in its directory), unsafely."""
    command = [
        qemuimg.QEMU_IMG,
        *("rebase", "-u", "-f", "qcow2", "-F", backing_fmt, "-b", backing, str(path)),
    ]
    _checked(command, cwd=path.parent)


def _checked(command: list[str], *, cwd: Path) -> None:
    result = subprocess.run(
        command, capture_output=True, check=False, stdin=subprocess.DEVNULL, cwd=cwd
    )
    if result.returncode != 0:
        raise qemuimg.QemuImgError(
            command=" ".join(command),
            rc=result.returncode,
            stderr=result.stderr.decode("utf-8", errors="replace").strip(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MergePaths(DomainRead[tuple[str, str, str]]):
    """SDM.merge's start: validate the subchain, check the base's generation; paths."""

    subchain: Subchain
    op = "merge paths"

    def apply(self, domain: FileDomain) -> tuple[str, str, str]:
        """Return (top path, top qemu format, base path). Raises GenerationMismatch, ..."""
        sub = self.subchain
        sub.validate(domain)
        generation = int(volume_meta(domain, sub.img, sub.base).get("GEN", "0"))
        if sub.base_generation is not None and sub.base_generation != generation:
            raise GenerationMismatch(requested=sub.base_generation, actual=generation)
        top_fmt = VolumeFormat[volume_meta(domain, sub.img, sub.top)["FORMAT"]].qemu_format
        return (
            str(domain.volume_path(sub.img, sub.top)),
            top_fmt,
            str(domain.volume_path(sub.img, sub.base)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BumpGeneration(DomainWrite[int]):
    """A volume operation ended: the volume's GEN grows by one (VDSM's Volume.operation)."""

    img: str
    vol: str
    op = "bump generation"

    def apply(self, domain: FileDomain) -> int:
        """Write GEN + 1; return it."""
        generation = int(volume_meta(domain, self.img, self.vol).get("GEN", "0")) + 1
        update_volume_meta(domain, self.img, self.vol, GEN=str(generation))
        return generation


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeSubchain:
    """The `SDM.merge` job: qemu-img commit of the top into the base (a task manager work)."""

    subchain: Subchain
    client: StorageClient

    @property
    def description(self) -> str:
        """Host.getJobs' description: the job's name, as VDSM's sdm.api.merge.Job."""
        return "merge_subchain"

    def __call__(self, ctx: TaskContext) -> None:
        """Validate, commit (progress, abortable), bump the base's GEN (a worker; blocks)."""
        sub = self.subchain
        top, top_fmt, base = _await(self.client.read(sub.sd, MergePaths(subchain=sub)), ctx)
        command = [qemuimg.QEMU_IMG, "commit", "-p", "-t", "none", "-b", base, "-f", top_fmt, top]
        with subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(top).parent,
        ) as process:
            stderr = qemuimg._follow(process, ctx.progress, ctx.aborted)  # noqa: SLF001
            code = process.wait()
        ctx.check_aborted()
        if code != 0:
            raise qemuimg.QemuImgError(command=" ".join(command), rc=code, stderr=stderr)
        _await(self.client.write(sub.sd, BumpGeneration(img=sub.img, vol=sub.base)), ctx)


def _await(future: pykka.Future[Any], ctx: TaskContext) -> Any:
    """Wait for a domain's answer until it comes, or the job is aborted."""
    while True:
        try:
            return future.get(timeout=POLL)
        except pykka.Timeout:
            ctx.check_aborted()
        except pykka.ActorDeadError:
            raise Unavailable(actor="storage domain", reason="actor is not running") from None


# -- what a VM's live merge uses ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VolumeChains:
    """A live merge's reach into storage (blocking: call from a worker, never an actor)."""

    client: StorageClient
    timeout: float = CHAIN_TIMEOUT

    def info(self, sd: str, img: str, vol: str) -> dict[str, Any]:
        """Volume.getInfo's answer. Raises VolumeDoesNotExist, StorageError, Timeout."""
        answer: dict[str, Any] = wait(
            self.client.read(sd, VolumeInfo(img=img, vol=vol)), timeout=self.timeout, what=sd
        )
        return answer

    def sync(self, sd: str, img: str, vol: str, actual: list[str]) -> None:
        """Run `SyncVolumeChain` on the domain. Raises StorageError, Timeout, ..."""
        op = SyncVolumeChain(img=img, vol=vol, actual=tuple(actual))
        wait(self.client.write(sd, op), timeout=self.timeout, what=sd)

    def prepare(self, sd: str, img: str, vol: str) -> tuple[str, str]:
        """A volume's (path, qemu format), its chain checked (an ILLEGAL one allowed)."""
        op = VolumeData(img=img, vol=vol, allow_illegal=True)
        path, fmt, _capacity = wait(self.client.read(sd, op), timeout=self.timeout, what=sd)
        return str(path), str(fmt)

    def grow_capacity(self, sd: str, img: str, base: str, top: str) -> None:
        """Run `GrowCapacity` on the domain."""
        op = GrowCapacity(img=img, base=base, top=top)
        wait(self.client.write(sd, op), timeout=self.timeout, what=sd)


__all__ = [
    "BumpGeneration",
    "FinalizeMerge",
    "GenerationMismatch",
    "GrowCapacity",
    "MergePaths",
    "MergeSubchain",
    "PrepareMerge",
    "ReconcileVolumeChain",
    "SharedVolumeNonWritable",
    "Subchain",
    "SyncVolumeChain",
    "VolumeChains",
    "VolumeIsNotInChain",
    "WrongParentVolume",
]
