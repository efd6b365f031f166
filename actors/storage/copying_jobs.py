"""SDM jobs on one volume: SDM.update_volume, SDM.amend_volume, SDM.sparsify_volume.

Each is a frozen work the task manager runs as a job under the caller's id, polled
with Host.getJobs (VDSM's lib/vdsm/storage/sdm/api/{update_volume, amend_volume,
sparsify_volume}.py). Like VDSM's, amend and sparsify are "volume operations"
that do not mark the volume ILLEGAL (a failed amend must not make a disk unusable):
they check the caller's generation first and advance it when they end.

Sparsify here is qemu-img based, not virt-sparsify (libguestfs needs an appliance
this host does not have): it returns to the storage every block that reads as
zeros, in place — a raw volume by punching holes (`fallocate --dig-holes`), a qcow2
volume by rewriting it with qemu-img's zero detection into a file beside it that
atomically replaces it. Unlike virt-sparsify it cannot see blocks a guest file
system freed without zeroing them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.copying import Attributes, Begin, End, ReadFacts, UpdateAttributes
from hostvisor.actors.storage.copying_errors import UnsupportedOperation
from hostvisor.actors.storage.errors import StorageError
from hostvisor.actors.storage.filevolume import VOLUME_MODE
from hostvisor.actors.storage.model import BLANK_UUID, VolumeFormat, VolumeRole
from hostvisor.actors.storage.proxy import StorageClient
from hostvisor.actors.storage.sdm import Endpoint, answer, flush
from hostvisor.actors.storage.tasks import TaskContext

COMPATS = ("0.10", "1.1")
"""The qcow2 compat levels qemu-img amends to."""
FALLOCATE = "fallocate"


class SparsifyError(StorageError):
    """Sparsifying the volume failed (fallocate or qemu-img)."""

    message = "Cannot sparsify volume"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateVolume:
    """SDM.update_volume: legality, description, generation, SHARED, in one write."""

    volume: Endpoint
    attributes: Attributes
    client: StorageClient

    @property
    def description(self) -> str:
        """Host.getJobs' description (VDSM's)."""
        return "update_volume"

    def __call__(self, ctx: TaskContext) -> None:
        """Write the attributes (a worker; blocks on the domain's writer)."""
        vol = self.volume
        change = UpdateAttributes(
            img=vol.img, vol=vol.vol, generation=vol.generation, attributes=self.attributes
        )
        answer(self.client.write(vol.sd, change), ctx, vol.sd)
        ctx.progress(1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class AmendVolume:
    """SDM.amend_volume: change a qcow2 volume's compat level (qemu-img amend)."""

    volume: Endpoint
    compat: str
    client: StorageClient

    @property
    def description(self) -> str:
        """Host.getJobs' description (VDSM's)."""
        return "amend_volume"

    def __call__(self, ctx: TaskContext) -> None:
        """Check, amend, advance the generation (a worker; blocks).

        Raises UnsupportedOperation (not COW, a template), GenerationMismatch,
        StorageError (qemu-img refused).
        """
        vol, client = self.volume, self.client
        found = answer(client.read(vol.sd, ReadFacts(img=vol.img, vol=vol.vol)), ctx, vol.sd)
        if found.fmt is not VolumeFormat.COW:
            raise UnsupportedOperation(reason="volume is not COW format", vol_id=vol.vol)
        if found.role is VolumeRole.SHARED:
            raise UnsupportedOperation(reason="volume is shared", vol_id=vol.vol)
        begin = Begin(img=vol.img, vol=vol.vol, generation=vol.generation, illegal=False)
        answer(client.write(vol.sd, begin), ctx, vol.sd)
        try:
            qemuimg.amend(found.path, compat=self.compat)
            flush(found.path)
        except qemuimg.QemuImgError as error:
            raise StorageError(
                reason="cannot amend volume", vol_id=vol.vol, error=str(error)
            ) from None
        answer(client.write(vol.sd, End(img=vol.img, vol=vol.vol)), ctx, vol.sd)
        ctx.progress(1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class SparsifyVolume:
    """SDM.sparsify_volume: give a leaf volume's zero blocks back to the storage."""

    volume: Endpoint
    client: StorageClient

    @property
    def description(self) -> str:
        """Host.getJobs' description (VDSM's)."""
        return "sparsify_volume"

    def __call__(self, ctx: TaskContext) -> None:
        """Check it is a leaf, sparsify it, advance the generation (a worker; blocks).

        Raises UnsupportedOperation (not a leaf), GenerationMismatch, SparsifyError.
        """
        vol, client = self.volume, self.client
        found = answer(client.read(vol.sd, ReadFacts(img=vol.img, vol=vol.vol)), ctx, vol.sd)
        if found.role is not VolumeRole.LEAF:
            raise UnsupportedOperation(
                reason="Volume to be sparsified is not a leaf volume", vol_id=vol.vol
            )
        begin = Begin(img=vol.img, vol=vol.vol, generation=vol.generation, illegal=False)
        answer(client.write(vol.sd, begin), ctx, vol.sd)
        path = Path(found.path)
        if found.fmt is VolumeFormat.RAW:
            _dig_holes(path)
        else:
            backing = None
            if found.parent != BLANK_UUID:
                parent = answer(
                    client.read(vol.sd, ReadFacts(img=vol.img, vol=found.parent)), ctx, vol.sd
                )
                backing = (parent.vol, parent.qemu_format)
            _rewrite_qcow2(path, backing, ctx)
        answer(client.write(vol.sd, End(img=vol.img, vol=vol.vol)), ctx, vol.sd)
        ctx.progress(1.0)


def _dig_holes(path: Path) -> None:
    """Punch holes over the zero blocks of a raw file, in place; blocks. Raises SparsifyError."""
    result = subprocess.run(
        [FALLOCATE, "--dig-holes", str(path)],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise SparsifyError(path=str(path), rc=result.returncode, stderr=result.stderr.strip())
    flush(str(path))


def _rewrite_qcow2(path: Path, backing: tuple[str, str] | None, ctx: TaskContext) -> None:
    """Rewrite a qcow2 volume without its zero clusters, then rename it into place.

    Only this layer is rewritten (the backing file stays). The new file is flushed
    before the rename and the directory after it, so a crash leaves the old volume
    or the new one, whole. Raises SparsifyError or TaskAborted.
    """
    scratch = path.with_name(f".{path.name}.sparsify")
    try:
        qemuimg.convert(
            path,
            scratch,
            src_fmt="qcow2",
            dst_fmt="qcow2",
            backing=backing[0] if backing else None,
            backing_fmt=backing[1] if backing else None,
            progress=lambda fraction: ctx.progress(fraction * 0.99),
            abort=ctx.aborted,
        )
        scratch.chmod(VOLUME_MODE)
        flush(str(scratch))
        stat = path.stat()
        os.chown(scratch, stat.st_uid, stat.st_gid)
        scratch.replace(path)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except qemuimg.QemuImgError as error:
        raise SparsifyError(path=str(path), error=str(error)) from None
    finally:
        scratch.unlink(missing_ok=True)


def check_compat(compat: object) -> str:
    """The qcow2 compat asked for. Raises InvalidArgument for another value (VDSM: ValueError)."""
    if compat not in COMPATS:
        raise InvalidArgument(
            param="qcow2_attr.compat", value=repr(compat), reason=f"one of {COMPATS}"
        )
    return str(compat)
