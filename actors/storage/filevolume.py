"""Images and volumes of a file storage domain: `images/<imgUUID>/<volUUID>{,.meta,.lease}`.

`FileVolumes` holds the volume operations of `FileDomain` (filedomain.py), kept
apart only for size. Each volume is three files in its image's directory: the
data (raw or qcow2), the `.meta` (metadata.py's volume format, v5 keys CAP, CTIME,
DESCRIPTION, DISKTYPE, DOMAIN, FORMAT, GEN, IMAGE, LEGALITY, PUUID, SEQ, TYPE,
VOLTYPE) and the `.lease` (the volume's sanlock resource area, offset 0).

Crash safety: a new volume's `.meta` is written first with LEGALITY=ILLEGAL, then
the data, then the lease, and only then does LEGALITY become LEGAL; a deleted
volume turns ILLEGAL before its files go. Every metadata change is an atomic
rename. So a process killed at any point leaves no LEGAL volume whose data is
incomplete; `illegal_volumes()` lists what such a crash left.

A snapshot layer is qcow2 with its parent as backing file, named relative to the
image directory (just the parent's UUID), so the chain opens under any mount path.
A parent in another image (a template) is hard-linked into the new image's
directory, as VDSM does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.errors import (
    IllegalVolumeSnapshot,
    ImageDeleteError,
    ImageDoesNotExistInSD,
    ImageIsNotLegalChain,
    StorageError,
    StorageInvalidParameter,
    VolumeAlreadyExists,
    VolumeCreationError,
    VolumeDoesNotExist,
    VolumeHasChildren,
    VolumeMetadataReadError,
)
from hostvisor.actors.storage.metadata import (
    fsync_directory,
    read_volume_metadata,
    write_volume_metadata,
)
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    Legality,
    Preallocation,
    VolumeFormat,
    VolumeRole,
    check_uuid,
)

log = logging.getLogger(__name__)

IMAGES_DIR: Final = "images"
META_EXT: Final = ".meta"
LEASE_EXT: Final = ".lease"
LEASE_OFFSET: Final = 0
VOLUME_MODE: Final = 0o660
REMOVED_PREFIX: Final = "_remove_me_"
DESCRIPTION_MAX: Final = 210
"""VDSM truncates longer volume descriptions to this many characters."""
CAPACITY_ALIGNMENT: Final = 4096
"""Capacities are rounded up to 4 KiB, as VDSM does for v5 domains."""
ALLOCATION_CHUNK: Final = 64 * 1024 * 1024
"""Preallocation proceeds (and reports progress) in steps of this many bytes."""
DISK_TYPES: Final = frozenset(
    {"DATA", "ISOF", "MEMD", "MEMM", "OVFS", "HEVD", "HESD", "HEMD", "HECI", "SCRD", "1", "2"}
)
"""VDSM's disk types, with the two legacy numeric ones it still reads."""

Progress = Callable[[float], None]


class FileVolumes:
    """Volume and image operations over `<domain>/images/`; mixed into FileDomain."""

    _path: Path
    _sd_uuid: str

    # -- paths and metadata ------------------------------------------------------------

    def volume_path(self, img: str, vol: str) -> Path:
        """Where volume `vol`'s data lives (whether or not it exists)."""
        return self._path / IMAGES_DIR / img / vol

    def _image_dir(self, img: str) -> Path:
        """The existing directory of image `img`.

        Raises:
            ImageDoesNotExistInSD: no such image.
        """
        check_uuid(img, "imgUUID")
        path = self._path / IMAGES_DIR / img
        if not path.is_dir():
            raise ImageDoesNotExistInSD(imgUUID=img, sdUUID=self._sd_uuid)
        return path

    def _read_meta(self, img: str, vol: str) -> dict[str, str]:
        check_uuid(vol, "volUUID")
        meta_path = self._image_dir(img) / f"{vol}{META_EXT}"
        try:
            return read_volume_metadata(meta_path)
        except FileNotFoundError:
            raise VolumeDoesNotExist(volUUID=vol, imgUUID=img) from None

    def _update_meta(self, img: str, vol: str, **changes: str) -> dict[str, str]:
        values = self._read_meta(img, vol)
        values.update(changes)
        write_volume_metadata(self._path / IMAGES_DIR / img / f"{vol}{META_EXT}", values)
        return values

    def _metas(self, img_dir: Path) -> Iterator[tuple[str, dict[str, str] | None]]:
        """(volUUID, metadata or None when unreadable) of every `.meta` in a directory."""
        for meta_path in sorted(img_dir.glob(f"*{META_EXT}")):
            vol = meta_path.name.removesuffix(META_EXT)
            try:
                yield vol, read_volume_metadata(meta_path)
            except (FileNotFoundError, VolumeMetadataReadError):
                yield vol, None

    # -- listings ----------------------------------------------------------------------

    def images(self) -> list[str]:
        """The UUIDs of the images in the domain (StorageDomain.getImages)."""
        root = self._path / IMAGES_DIR
        return sorted(e.name for e in root.iterdir() if e.is_dir() and _is_uuid(e.name))

    def volumes(self, img: str | None = None) -> list[str]:
        """The volumes of one image, or of every image; a template's links are not counted.

        Raises:
            ImageDoesNotExistInSD: `img` is given and does not exist.
        """
        images = [img] if img is not None else self.images()
        found: list[str] = []
        for image in images:
            for vol, meta in self._metas(self._image_dir(image)):
                if meta is None or meta.get("IMAGE", image) == image:
                    found.append(vol)
        return found

    def illegal_volumes(self) -> list[tuple[str, str]]:
        """(imgUUID, volUUID) of every volume that is not LEGAL or whose .meta is unreadable.

        These are what an interrupted create or delete leaves behind.
        """
        found: list[tuple[str, str]] = []
        for image in self.images():
            for vol, meta in self._metas(self._path / IMAGES_DIR / image):
                if meta is None or (
                    meta.get("IMAGE") == image and meta.get("LEGALITY") != Legality.LEGAL
                ):
                    found.append((image, vol))
        return found

    # -- creation ----------------------------------------------------------------------

    def create_volume(  # noqa: PLR0913 - Volume.create's own parameters, keyword-only
        self,
        img: str,
        vol: str,
        *,
        size: int,
        fmt: VolumeFormat,
        prealloc: Preallocation,
        disk_type: str = "DATA",
        description: str = "",
        parent: str = BLANK_UUID,
        parent_image: str | None = None,
        initial_size: int | None = None,
        legal: bool = True,
        progress: Progress | None = None,
        illegal_parent: bool = False,
    ) -> None:
        """Create a volume, crash-safely (see the module docstring); blocks until done.

        With `parent` set the volume is a qcow2 snapshot layer on it: `size` 0
        means the parent's capacity, and the parent becomes INTERNAL.
        `parent_image` names the parent's image when it is a template in another
        image. `initial_size` is only for preallocated raw volumes: how much to
        allocate now. `progress` gets fractions 0..1 while the data is written.
        `illegal_parent` lets a copy lay out a chain whose volumes all stay
        ILLEGAL until their data is in (actors/storage/copying.py).

        Raises:
            VolumeAlreadyExists: `vol` is already in the image.
            VolumeDoesNotExist / ImageDoesNotExistInSD: the parent is missing.
            IllegalVolumeSnapshot: the parent is not LEGAL.
            StorageInvalidParameter: a bad size, format, disk type or description.
            VolumeCreationError: qemu-img or the file system failed (nothing is left).
        """
        check_uuid(vol, "volUUID")
        check_uuid(parent, "srcVolUUID")
        fmt, prealloc = _enum(VolumeFormat, fmt), _enum(Preallocation, prealloc)
        description = _description(description)
        if disk_type not in DISK_TYPES:
            raise StorageInvalidParameter(name="diskType", value=disk_type)
        img_dir = self._path / IMAGES_DIR / check_uuid(img, "imgUUID")
        if (img_dir / vol).exists() or (img_dir / f"{vol}{META_EXT}").exists():
            raise VolumeAlreadyExists(volUUID=vol, imgUUID=img)
        parent_meta = None
        if parent != BLANK_UUID:
            parent_meta = self._check_parent(
                img, parent, parent_image or img, fmt, illegal_parent=illegal_parent
            )
        capacity = _capacity(size, parent_meta)
        allocation = _allocation(fmt, prealloc, capacity, initial_size)
        meta = {
            "CAP": str(capacity),
            "CTIME": str(int(time.time())),
            "DESCRIPTION": description,
            "DISKTYPE": disk_type,
            "DOMAIN": self._sd_uuid,
            "FORMAT": fmt.name,
            "GEN": "0",
            "IMAGE": img,
            "LEGALITY": Legality.ILLEGAL.value,
            "PUUID": parent,
            "SEQ": "0",
            "TYPE": prealloc.name,
            "VOLTYPE": VolumeRole.LEAF.value,
        }
        try:
            with contextlib.ExitStack() as undo:
                self._lay_out(img, vol, parent, parent_image or img, meta, undo)
                backing = None
                if parent_meta is not None:
                    backing = (parent, VolumeFormat[parent_meta["FORMAT"]].qemu_format)
                _write_data(
                    img_dir / vol,
                    fmt=fmt,
                    prealloc=prealloc,
                    capacity=capacity,
                    allocation=allocation,
                    backing=backing,
                    progress=progress,
                )
                self._make_lease(vol, img_dir / f"{vol}{LEASE_EXT}")
                if parent_meta is not None and parent_meta.get("IMAGE") == img:
                    self._update_meta(img, parent, VOLTYPE=VolumeRole.INTERNAL.value)
                    undo.callback(self._restore_leaf, img, parent)
                if legal:
                    self._update_meta(img, vol, LEGALITY=Legality.LEGAL.value)
                fsync_directory(img_dir)
                undo.pop_all()
        except (OSError, qemuimg.QemuImgError) as error:
            raise VolumeCreationError(volUUID=vol, imgUUID=img, reason=str(error)) from None

    def _check_parent(
        self,
        img: str,
        parent: str,
        parent_image: str,
        fmt: VolumeFormat,
        *,
        illegal_parent: bool = False,
    ) -> dict[str, str]:
        """The metadata of a snapshot's parent, after checking it can have a child."""
        if fmt is not VolumeFormat.COW:
            raise StorageInvalidParameter(name="volFormat", reason="a snapshot layer is COW")
        meta = self._read_meta(parent_image, parent)
        if not self.volume_path(parent_image, parent).exists():
            raise VolumeDoesNotExist(volUUID=parent, imgUUID=parent_image)
        if meta.get("LEGALITY") != Legality.LEGAL and not (illegal_parent and parent_image == img):
            raise IllegalVolumeSnapshot(volUUID=parent, imgUUID=parent_image)
        if parent_image != img and meta.get("VOLTYPE") != VolumeRole.SHARED:
            raise StorageInvalidParameter(
                name="srcImgUUID", reason="a parent in another image must be a SHARED template"
            )
        return meta

    def _lay_out(
        self,
        img: str,
        vol: str,
        parent: str,
        parent_image: str,
        meta: dict[str, str],
        undo: contextlib.ExitStack,
    ) -> None:
        """Make the image directory, link a template, write the ILLEGAL .meta."""
        img_dir = self._path / IMAGES_DIR / img
        if not img_dir.is_dir():
            img_dir.mkdir(mode=0o755)
            undo.callback(_rmdir_quietly, img_dir)
            fsync_directory(img_dir.parent)
        if parent_image != img:
            source = self._path / IMAGES_DIR / parent_image
            for name in (parent, f"{parent}{META_EXT}", f"{parent}{LEASE_EXT}"):
                if (source / name).exists() and not (img_dir / name).exists():
                    (img_dir / name).hardlink_to(source / name)
                    undo.callback((img_dir / name).unlink, missing_ok=True)
        undo.callback((img_dir / vol).unlink, missing_ok=True)
        undo.callback((img_dir / f"{vol}{LEASE_EXT}").unlink, missing_ok=True)
        write_volume_metadata(img_dir / f"{vol}{META_EXT}", meta)
        undo.callback((img_dir / f"{vol}{META_EXT}").unlink, missing_ok=True)

    def _restore_leaf(self, img: str, vol: str) -> None:
        """Make `vol` LEAF again if it no longer has children (undo and delete)."""
        with contextlib.suppress(VolumeDoesNotExist, ImageDoesNotExistInSD, OSError):
            meta = self._read_meta(img, vol)
            if meta.get("VOLTYPE") == VolumeRole.INTERNAL and not self._children(img, vol):
                self._update_meta(img, vol, VOLTYPE=VolumeRole.LEAF.value)

    # -- queries -----------------------------------------------------------------------

    def volume_info(self, img: str, vol: str) -> dict[str, Any]:
        """Volume.getInfo's `info`: VDSM's fields, sizes as strings of bytes.

        `status` is "OK", "ILLEGAL" (LEGALITY is not LEGAL) or "INVALID" (the
        data file is missing). `lease` is there only on a domain with sanlock
        volume leases and a lease file, as VDSM reports it.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
        """
        meta = self._read_meta(img, vol)
        info: dict[str, Any] = {
            "uuid": vol,
            "type": meta.get("TYPE", ""),
            "format": meta.get("FORMAT", ""),
            "disktype": meta.get("DISKTYPE", ""),
            "voltype": meta.get("VOLTYPE", ""),
            "capacity": meta.get("CAP", "0"),
            "parent": meta.get("PUUID", BLANK_UUID),
            "description": meta.get("DESCRIPTION", ""),
            "pool": "",
            "domain": meta.get("DOMAIN", self._sd_uuid),
            "image": meta.get("IMAGE", img),
            "ctime": meta.get("CTIME", ""),
            "mtime": "0",
            "legality": meta.get("LEGALITY", ""),
            "generation": int(meta.get("GEN", "0")),
            "sequence": int(meta.get("SEQ", "0")),
            "children": self._children(img, vol),
        }
        try:
            info.update(self.volume_size(img, vol))
            info["status"] = "OK"
        except VolumeDoesNotExist:
            info.update(apparentsize="0", truesize="0", status="INVALID")
        if info["legality"] != Legality.LEGAL:
            info["status"] = Legality.ILLEGAL.value
        # As VDSM: only a domain with volume leases (sanlock's) reports one; a local
        # lock has none, so LOCALFS volumes carry no `lease` (fileSD.getVolumeLease).
        areas = self.lock_areas()
        lease = self.volume_path(img, vol).with_name(f"{vol}{LEASE_EXT}")
        if areas is not None and lease.exists():
            info["lease"] = self._lease_info(areas, vol, lease)
        return info

    def lock_areas(self) -> Any:
        """The domain's sanlock areas (`clusterlock.Areas`), None under a local lock."""
        return None  # FileDomain's says

    def _make_lease(self, vol: str, lease: Path) -> None:
        """Make the volume's `.lease` (blocking).

        On a shared domain it is a free sanlock resource (VDSM's `newVolumeLease`);
        under a local lock, an empty file.
        """
        _touch(lease)
        areas = self.lock_areas()
        if areas is not None:
            areas.format_volume_lease(vol, lease)

    def _lease_info(self, areas: Any, vol: str, lease: Path) -> dict[str, Any]:
        """Volume.getInfo's `lease`: as sanlock reports it (blocking).

        A lease sanlock cannot read (it needs repair) is reported by its place alone,
        {path, offset}, as VDSM's volume.getInfo does.
        """
        try:
            found: dict[str, Any] = areas.volume_lease(vol, lease)
        except StorageError as error:
            log.warning("volume %s: its lease cannot be read: %s", vol, error)
            return {"path": str(lease), "offset": LEASE_OFFSET}
        return found

    def volume_size(self, img: str, vol: str) -> dict[str, str]:
        """Volume.getSize: file size and allocated bytes, as strings.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
        """
        check_uuid(vol, "volUUID")
        try:
            st = (self._image_dir(img) / vol).stat()
        except FileNotFoundError:
            raise VolumeDoesNotExist(volUUID=vol, imgUUID=img) from None
        return {"apparentsize": str(st.st_size), "truesize": str(st.st_blocks * 512)}

    def _children(self, img: str, vol: str) -> list[str]:
        return [
            child
            for child, meta in self._metas(self._path / IMAGES_DIR / img)
            if meta is not None and meta.get("PUUID") == vol and child != vol
        ]

    def chain(self, img: str, vol: str) -> list[str]:
        """The volumes from the base up to `vol` (base first), following PUUID.

        Raises:
            VolumeDoesNotExist: `vol` itself is missing.
            ImageIsNotLegalChain: a parent is missing or the chain loops.
        """
        result: list[str] = []
        current = vol
        while current != BLANK_UUID:
            if current in result:
                raise ImageIsNotLegalChain(imgUUID=img, reason=f"loop at {current}")
            try:
                meta = self._read_meta(img, current)
            except VolumeDoesNotExist:
                if current == vol:
                    raise
                raise ImageIsNotLegalChain(imgUUID=img, missing=current) from None
            result.append(current)
            current = meta.get("PUUID", BLANK_UUID)
        result.reverse()
        return result

    # -- changes -----------------------------------------------------------------------

    def set_legality(self, img: str, vol: str, legality: Legality) -> None:
        """Set LEGALITY (LEGAL, ILLEGAL or FAKE); atomic.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
            StorageInvalidParameter: not a legality.
        """
        self._update_meta(img, vol, LEGALITY=_enum(Legality, legality).value)

    def set_volume_description(self, img: str, vol: str, text: str) -> None:
        """Set DESCRIPTION (truncated to 210 characters, as VDSM does); atomic.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
            StorageInvalidParameter: the text has a line break.
        """
        self._update_meta(img, vol, DESCRIPTION=_description(text))

    def extend_volume(self, img: str, vol: str, new_size: int) -> None:
        """Grow a volume's capacity to `new_size` bytes (rounded up to 4 KiB).

        The data grows first (qemu-img resize; a preallocated raw volume is also
        allocated), then CAP; `prepare_image` repairs a CAP left behind by a crash.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
            StorageInvalidParameter: `new_size` is smaller than the capacity.
            QemuImgError: qemu-img refused.
        """
        meta = self._read_meta(img, vol)
        capacity = int(meta.get("CAP", "0"))
        wanted = _round_up(_positive_int("newSize", new_size), CAPACITY_ALIGNMENT)
        if wanted < capacity:
            raise StorageInvalidParameter(name="newSize", value=new_size, capacity=capacity)
        if wanted == capacity:
            return
        fmt = _enum(VolumeFormat, VolumeFormat[meta.get("FORMAT", "RAW")])
        path = self.volume_path(img, vol)
        qemuimg.resize(path, wanted, fmt.qemu_format)
        if fmt is VolumeFormat.RAW and meta.get("TYPE") == Preallocation.PREALLOCATED.name:
            _allocate(path, capacity, wanted, None)
        self._update_meta(img, vol, CAP=str(wanted))

    def delete_volume(self, img: str, vol: str) -> None:
        """Delete a volume: ILLEGAL first, then its files; its parent becomes LEAF.

        A template's link in an image based on it is just unlinked.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
            VolumeHasChildren: a volume of the image, or another image, is based on it.
        """
        meta = self._read_meta(img, vol)
        img_dir = self._path / IMAGES_DIR / img
        files = [img_dir / vol, img_dir / f"{vol}{LEASE_EXT}", img_dir / f"{vol}{META_EXT}"]
        children = self._children(img, vol)
        if children:
            raise VolumeHasChildren(volUUID=vol, imgUUID=img, children=children)
        if meta.get("IMAGE", img) != img:
            for path in files:
                path.unlink(missing_ok=True)
            return
        data = img_dir / vol
        if meta.get("VOLTYPE") == VolumeRole.SHARED and data.exists() and data.stat().st_nlink > 1:
            raise VolumeHasChildren(volUUID=vol, imgUUID=img, reason="images are based on it")
        if meta.get("LEGALITY") != Legality.ILLEGAL:
            self._update_meta(img, vol, LEGALITY=Legality.ILLEGAL.value)
        for path in files:
            path.unlink(missing_ok=True)
        fsync_directory(img_dir)
        parent = meta.get("PUUID", BLANK_UUID)
        if parent != BLANK_UUID:
            self._restore_leaf(img, parent)

    def delete_image(self, img: str) -> None:
        """Delete an image and all its volumes (the directory vanishes at once).

        Raises:
            ImageDoesNotExistInSD: no such image.
            ImageDeleteError: the directory cannot be renamed.
        """
        img_dir = self._image_dir(img)
        doomed = img_dir.with_name(f"{REMOVED_PREFIX}{img}")
        try:
            shutil.rmtree(doomed, ignore_errors=True)
            img_dir.rename(doomed)
            fsync_directory(img_dir.parent)
        except OSError as error:
            raise ImageDeleteError(imgUUID=img, reason=error.strerror) from None
        shutil.rmtree(doomed, ignore_errors=True)

    # -- prepare -----------------------------------------------------------------------

    def prepare_image(self, img: str, vol: str, *, allow_illegal: bool = False) -> Path:
        """Check the chain up to `vol` is whole and LEGAL; return the leaf's data path.

        Also repairs a CAP smaller than the data's virtual size (an interrupted
        extend) and makes sure the leaf is writable by its owner and group.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
            ImageIsNotLegalChain: a volume of the chain is missing or not LEGAL.
        """
        chain = self.chain(img, vol)
        for member in chain:
            meta = self._read_meta(img, member)
            if not self.volume_path(img, member).exists():
                raise ImageIsNotLegalChain(imgUUID=img, missing=member)
            if not allow_illegal and meta.get("LEGALITY") != Legality.LEGAL:
                raise ImageIsNotLegalChain(imgUUID=img, illegal=member)
            if meta.get("VOLTYPE") != VolumeRole.SHARED:
                self._repair_capacity(img, member, meta)
        leaf = self.volume_path(img, vol)
        leaf.chmod(VOLUME_MODE)
        return leaf

    def teardown_image(self, img: str, vol: str | None = None) -> None:
        """Undo `prepare_image`; a file domain has nothing to deactivate.

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
        """
        if vol is None:
            self._image_dir(img)
        else:
            self._read_meta(img, vol)

    def _repair_capacity(self, img: str, vol: str, meta: dict[str, str]) -> None:
        info = qemuimg.info(self.volume_path(img, vol))
        assert isinstance(info, dict)  # noqa: S101 - no backing_chain, so one dict
        virtual = int(info["virtual-size"])
        if int(meta.get("CAP", "0")) < virtual:
            self._update_meta(img, vol, CAP=str(virtual))


# -- helpers -------------------------------------------------------------------------------


def _write_data(  # noqa: PLR0913 - the volume's whole recipe
    path: Path,
    *,
    fmt: VolumeFormat,
    prealloc: Preallocation,
    capacity: int,
    allocation: int,
    backing: tuple[str, str] | None,
    progress: Progress | None,
) -> None:
    """Create the data file; a preallocated raw volume is allocated in reported steps.

    `backing` is (file name in the same directory, qemu format) of a snapshot's parent.
    """
    if progress is not None:
        progress(0.0)
    if fmt is VolumeFormat.COW:
        qemuimg.create(
            path,
            "qcow2",
            capacity,
            backing=backing[0] if backing else None,
            backing_fmt=backing[1] if backing else None,
            preallocation="falloc" if prealloc is Preallocation.PREALLOCATED else None,
        )
    else:
        qemuimg.create(path, "raw", capacity)
        if allocation:
            _allocate(path, 0, allocation, progress)
    path.chmod(VOLUME_MODE)
    with path.open("rb") as data:
        os.fsync(data.fileno())
    if progress is not None:
        progress(1.0)


def _allocate(path: Path, start: int, end: int, progress: Progress | None) -> None:
    """Allocate bytes [start, end) of a file in steps, reporting the fraction done."""
    total = end - start
    with path.open("r+b") as data:
        offset = start
        while offset < end:
            step = min(ALLOCATION_CHUNK, end - offset)
            os.posix_fallocate(data.fileno(), offset, step)
            offset += step
            if progress is not None and total:
                progress(min((offset - start) / total, 1.0) * 0.999)
        os.fsync(data.fileno())


def _capacity(size: int, parent_meta: dict[str, str] | None) -> int:
    if parent_meta is None:
        return _round_up(_positive_int("size", size), CAPACITY_ALIGNMENT)
    parent_capacity = int(parent_meta.get("CAP", "0"))
    if not size:
        return parent_capacity
    capacity = _round_up(_positive_int("size", size), CAPACITY_ALIGNMENT)
    if capacity < parent_capacity:
        raise StorageInvalidParameter(
            name="size", value=size, reason="smaller than the parent", parent=parent_capacity
        )
    return capacity


def _allocation(
    fmt: VolumeFormat, prealloc: Preallocation, capacity: int, initial_size: int | None
) -> int:
    """Bytes a raw volume allocates at creation (0 for sparse and qcow2)."""
    raw_prealloc = fmt is VolumeFormat.RAW and prealloc is Preallocation.PREALLOCATED
    if initial_size is None:
        return capacity if raw_prealloc else 0
    if not isinstance(initial_size, int) or initial_size < 0:
        raise StorageInvalidParameter(name="initialSize", value=initial_size)
    if not raw_prealloc:
        raise VolumeCreationError(reason="initial size is only for preallocated raw volumes")
    if initial_size > capacity:
        raise VolumeCreationError(reason="initial size above capacity", initialSize=initial_size)
    return max(initial_size, CAPACITY_ALIGNMENT)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise StorageInvalidParameter(name=name, value=value)
    return value


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _description(text: str) -> str:
    if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
        raise StorageInvalidParameter(name="description", value=text)
    return text[:DESCRIPTION_MAX]


_E = TypeVar("_E", VolumeFormat, Preallocation, Legality)


def _enum(kind: type[_E], value: Any) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise StorageInvalidParameter(name=kind.__name__, value=value) from None


def _touch(path: Path) -> None:
    with path.open("wb") as lease:
        os.fchmod(lease.fileno(), VOLUME_MODE)


def _rmdir_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _is_uuid(name: str) -> bool:
    try:
        check_uuid(name, "name")
    except InvalidArgument:
        return False
    return True


# -- merging (chain and metadata changes of a merge: actors/storage/merging.py) -------------


def volume_meta(volumes: FileVolumes, img: str, vol: str) -> dict[str, str]:
    """A volume's metadata, as its `.meta` says (a worker thread; blocks on the disk).

    Raises:
        ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
    """
    return volumes._read_meta(img, vol)  # noqa: SLF001 - this module's own helper


def update_volume_meta(volumes: FileVolumes, img: str, vol: str, **changes: str) -> None:
    """Change some keys of a volume's metadata, atomically (a worker thread; blocks).

    Raises:
        ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
    """
    volumes._update_meta(img, vol, **changes)  # noqa: SLF001 - this module's own helper


def volume_children(volumes: FileVolumes, img: str, vol: str) -> list[str]:
    """The volumes of the image whose parent is `vol` (a worker thread; blocks)."""
    return volumes._children(img, vol)  # noqa: SLF001 - this module's own helper
