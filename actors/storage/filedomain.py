"""One file storage domain on disk: `<root>/<sdUUID>/` with `dom_md/` and `images/`.

The layout is VDSM's version 5 file domain (reference/vdsm-wire.md §8)::

    <root>/<sdUUID>/dom_md/metadata   KEY=VALUE lines + _SHA_CKSUM (metadata.py)
                          /ids        sanlock lockspace (written at creation on shared types)
                          /leases     the SDM lease at 1 x ALIGNMENT (likewise)
                          /inbox      SPM mailbox, 16 MiB sparse
                          /outbox     SPM mailbox, 16 MiB sparse
                          /xleases    external leases: an empty index at ALIGNMENT
                   /images/<imgUUID>/<volUUID>{,.meta,.lease}   (filevolume.py)

`root` is the mount point (or the LOCALFS link) of the domain's connection. This
module is plain blocking code with no global state; the domain actor owns one
`FileDomain` and calls it from one worker thread at a time.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, final

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage import clusterlock, xleases
from hostvisor.actors.storage.errors import (
    StorageDomainAccessError,
    StorageDomainAlreadyExists,
    StorageDomainCreationError,
    StorageDomainDoesNotExist,
    StorageDomainFSNotMounted,
    StorageDomainMetadataError,
    StorageDomainNotEmpty,
    StorageDomainTypeError,
    StorageInvalidParameter,
    UnsupportedDomainVersion,
)
from hostvisor.actors.storage.filevolume import IMAGES_DIR, FileVolumes
from hostvisor.actors.storage.metadata import (
    METADATA_MODE,
    fsync_directory,
    read_domain_metadata,
    write_domain_metadata,
)
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    DomainClass,
    DomainType,
    check_uuid,
)

MD_DIR: Final = "dom_md"
ISO_IMAGE_UUID: Final = "11111111-1111-1111-1111-111111111111"
"""The image directory an ISO domain keeps its files in (VDSM's sd.ISO_IMAGE_UUID)."""
METADATA_FILE: Final = "metadata"
SPECIAL_FILES: Final = ("metadata", "ids", "leases", "inbox", "outbox", "xleases")
SUPPORTED_VERSIONS: Final = frozenset({5})

MiB: Final = 1024 * 1024
MAILBOX_SIZE: Final = 16 * MiB
"""inbox and outbox are 16 MiB on every domain (sparse on a file domain)."""

BLOCK_SIZES: Final = (512, 4096)
ALIGNMENTS: Final = (1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB)
MAX_HOSTS: Final = 2000
DESCRIPTION_MAX: Final = 50

LEASE_DEFAULTS: Final = {
    "LOCKRENEWALINTERVALSEC": "5",
    "LEASETIMESEC": "60",
    "IOOPTIMEOUTSEC": "10",
    "LEASERETRIES": "3",
}
"""VDSM's default lease parameters, written into every new domain."""

ROLE_REGULAR: Final = "Regular"
ROLE_MASTER: Final = "Master"
IDENTITY_KEYS: Final = frozenset(
    {"SDUUID", "TYPE", "CLASS", "VERSION", "BLOCK_SIZE", "ALIGNMENT", "REMOTE_PATH"}
)
"""Metadata keys fixed at creation; `update_metadata` refuses to change them."""
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")

_CREATING: Final = ".creating-"
_REMOVING: Final = ".removing-"
_DIRECT_IO_TEST: Final = "__DIRECT_IO_TEST__"


def alignment_for(block_size: int, max_hosts: int) -> int:
    """The lease alignment VDSM uses for a block size and a number of hosts.

    Raises:
        StorageInvalidParameter: no supported alignment fits that many hosts.
    """
    if not 1 <= max_hosts <= MAX_HOSTS:
        raise StorageInvalidParameter(name="max_hosts", value=max_hosts)
    for alignment in ALIGNMENTS:
        if block_size * max_hosts <= alignment:
            return alignment
    raise StorageInvalidParameter(name="max_hosts", value=max_hosts, block_size=block_size)


@final
class FileDomain(FileVolumes):
    """A file storage domain directory; volumes and images come from FileVolumes.

    Not thread-safe: one caller at a time (the domain actor's worker). Every
    method reads the disk afresh, so another host's changes are seen.
    """

    def __init__(self, path: Path) -> None:
        """Open the domain at `path` (`<root>/<sdUUID>`), which must hold dom_md/metadata.

        Raises:
            StorageDomainDoesNotExist: no domain there.
        """
        self._path = Path(path)
        self._sd_uuid = self._path.name
        if not (self._path / MD_DIR / METADATA_FILE).is_file():
            raise StorageDomainDoesNotExist(sdUUID=self._sd_uuid, path=str(self._path))

    def __repr__(self) -> str:
        """Name the domain and where it lives."""
        return f"<FileDomain {self._sd_uuid} at {self._path}>"

    @property
    def sd_uuid(self) -> str:
        """The domain's UUID (its directory name)."""
        return self._sd_uuid

    @property
    def path(self) -> Path:
        """The domain's directory, `<root>/<sdUUID>`."""
        return self._path

    def lock_areas(self) -> clusterlock.Areas | None:
        """The domain's sanlock areas, or None when a local lock protects it (blocking).

        A local lock protects a LOCALFS domain, any domain while no sanlock daemon
        answers, and a shared domain made without one (its `ids` never written).
        """
        meta = self.metadata()
        if not clusterlock.uses_sanlock(meta.get("TYPE", ""), self._sd_uuid):
            return None
        try:
            unformatted = (self._path / MD_DIR / "ids").stat().st_size == 0
        except OSError:
            return None
        if unformatted:
            clusterlock.refuse_unformatted(meta.get("TYPE", ""), self._sd_uuid)
            return None
        return clusterlock.Areas(
            sd_uuid=self._sd_uuid,
            md_dir=self._path / MD_DIR,
            alignment=int(meta.get("ALIGNMENT", str(MiB))),
            block_size=int(meta.get("BLOCK_SIZE", "512")),
        )

    @property
    def metadata_path(self) -> Path:
        """`dom_md/metadata`."""
        return self._path / MD_DIR / METADATA_FILE

    # -- creation and discovery --------------------------------------------------------

    @classmethod
    def create(  # noqa: PLR0913 - StorageDomain.create's own parameters, keyword-only
        cls,
        root: Path,
        sd_uuid: str,
        *,
        name: str,
        domain_type: DomainType,
        domain_class: DomainClass,
        remote_path: str,
        version: int = 5,
        block_size: int = 512,
        max_hosts: int = MAX_HOSTS,
    ) -> FileDomain:
        """Create a new domain under `root`, completely or not at all.

        The domain is built in a hidden directory next to its final place and
        renamed into place at the end; a crash leaves only a hidden leftover
        that a later create of the same domain removes. `block_size` 0 means
        "detect": 4096 if the file system refuses 512-byte direct I/O.

        Raises:
            StorageDomainTypeError: not a file domain type (NFS, LOCALFS, POSIXFS).
            UnsupportedDomainVersion: a version other than 5.
            StorageInvalidParameter: bad block size, host count, name, class.
            StorageDomainFSNotMounted: `root` is not a directory.
            StorageDomainAlreadyExists: `<root>/<sd_uuid>` exists.
            StorageDomainNotEmpty: `root` already holds another domain.
            StorageDomainCreationError: the file system refused a write.
        """
        check_uuid(sd_uuid, "sdUUID")
        _check_creation_args(domain_type, domain_class, version, name, remote_path)
        root = Path(root)
        if not root.is_dir():
            raise StorageDomainFSNotMounted(path=str(root), remotePath=remote_path)
        final_path = root / sd_uuid
        if final_path.exists():
            raise StorageDomainAlreadyExists(sdUUID=sd_uuid)
        _remove_leftovers(root, sd_uuid)
        _check_empty(root, remote_path)
        building = root / f".{sd_uuid}{_CREATING}{uuid.uuid4().hex[:8]}"
        try:
            building.mkdir(mode=0o755)
            if block_size == 0:
                block_size = _detect_block_size(building)
            if block_size not in BLOCK_SIZES:
                raise StorageInvalidParameter(name="block_size", value=block_size)
            alignment = alignment_for(block_size, max_hosts)
            values = {
                "VERSION": str(version),
                "SDUUID": sd_uuid,
                "TYPE": domain_type.name,
                "CLASS": domain_class.word,
                "DESCRIPTION": name,
                "ROLE": ROLE_REGULAR,
                "POOL_UUID": "",
                "LOCKPOLICY": "",
                **LEASE_DEFAULTS,
                "REMOTE_PATH": remote_path,
                "BLOCK_SIZE": str(block_size),
                "ALIGNMENT": str(alignment),
            }
            _build_layout(building, sd_uuid, values, alignment, block_size)
            if clusterlock.uses_sanlock(domain_type.name, sd_uuid):  # VDSM's initLock
                clusterlock.Areas(
                    sd_uuid=sd_uuid,
                    md_dir=building / MD_DIR,
                    alignment=alignment,
                    block_size=block_size,
                ).format()
            for extra in _class_dirs(domain_class):
                (building / extra).mkdir(parents=True, mode=0o755)
            building.rename(final_path)
            fsync_directory(root)
        except OSError as error:
            raise StorageDomainCreationError(sdUUID=sd_uuid, reason=error.strerror) from None
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return cls(final_path)

    @classmethod
    def find(cls, roots: Iterable[Path], sd_uuid: str) -> FileDomain:
        """The domain `sd_uuid` under the first of `roots` that has it.

        Raises:
            StorageDomainDoesNotExist: no root holds it.
        """
        for root in roots:
            candidate = Path(root) / sd_uuid
            if (candidate / MD_DIR / METADATA_FILE).is_file():
                return cls(candidate)
        raise StorageDomainDoesNotExist(sdUUID=sd_uuid)

    @classmethod
    def scan(cls, roots: Iterable[Path]) -> list[FileDomain]:
        """Every domain directly under any of `roots` (unreadable roots are skipped)."""
        found: list[FileDomain] = []
        for root in roots:
            try:
                entries = sorted(Path(root).iterdir())
            except OSError:
                continue
            found.extend(
                cls(entry)
                for entry in entries
                if _is_uuid(entry.name) and (entry / MD_DIR / METADATA_FILE).is_file()
            )
        return found

    # -- metadata ----------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        """The domain's metadata as stored (checksum verified, checksum key removed).

        Raises:
            StorageDomainAccessError: the file cannot be read.
            StorageDomainMetadataError: the checksum is wrong or missing.
        """
        return read_domain_metadata(self.metadata_path)

    def update_metadata(self, **changes: str) -> dict[str, str]:
        """Change some metadata keys atomically; return the new metadata.

        Keys are upper-case metadata keys: the domain's (ROLE, POOL_UUID,
        DESCRIPTION, ...) or the legacy pool keys a master domain carries
        (POOL_DESCRIPTION, POOL_DOMAINS, MASTER_VERSION, ...). Values must be
        strings without line breaks.

        Raises:
            StorageInvalidParameter: an identity key (SDUUID, TYPE, ...) or a bad value.
            StorageDomainMetadataError / StorageDomainAccessError: as `metadata`.
        """
        for key, value in changes.items():
            if key in IDENTITY_KEYS or not _KEY.match(key):
                raise StorageInvalidParameter(name=key, reason="not an updatable key")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise StorageInvalidParameter(name=key, value=value)
        if "ROLE" in changes and changes["ROLE"] not in (ROLE_REGULAR, ROLE_MASTER):
            raise StorageInvalidParameter(name="ROLE", value=changes["ROLE"])
        values = self.metadata()
        values.update(changes)
        write_domain_metadata(self.metadata_path, values)
        return values

    @property
    def version(self) -> int:
        """The domain's format version."""
        return int(self.metadata()["VERSION"])

    # -- StorageDomain verbs -----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """StorageDomain.getInfo's `info`, with VDSM's field names and types.

        Raises:
            StorageDomainAccessError / StorageDomainMetadataError: as `metadata`.
        """
        values = self.metadata()
        try:
            return {
                "uuid": self._sd_uuid,
                "type": values["TYPE"],
                "class": values["CLASS"],
                "name": values["DESCRIPTION"],
                "role": values["ROLE"],
                "pool": [p for p in values["POOL_UUID"].split(",") if p],
                "version": values["VERSION"],
                "block_size": int(values["BLOCK_SIZE"]),
                "alignment": int(values["ALIGNMENT"]),
                "remotePath": values["REMOTE_PATH"],
            }
        except (KeyError, ValueError) as error:
            raise StorageDomainMetadataError(
                sdUUID=self._sd_uuid, reason=f"bad or missing key: {error}"
            ) from None

    def stats(self) -> dict[str, Any]:
        """StorageDomain.getStats: free and total bytes (strings) from statvfs.

        Raises:
            StorageDomainAccessError: the file system cannot be queried.
        """
        try:
            st = os.statvfs(self._path)
        except OSError as error:
            raise StorageDomainAccessError(sdUUID=self._sd_uuid, reason=error.strerror) from None
        return {
            "disktotal": str(st.f_frsize * st.f_blocks),
            "diskfree": str(st.f_frsize * st.f_bavail),
            "mdasize": 0,
            "mdafree": 0,
            "mdavalid": True,
            "mdathreshold": True,
        }

    def validate(self) -> None:
        """Check that the domain is usable: metadata, special files and images/.

        Raises:
            StorageDomainAccessError: a special file or images/ is missing or unreadable.
            StorageDomainMetadataError: the metadata is corrupt or names another domain.
        """
        values = self.metadata()
        if values.get("SDUUID") != self._sd_uuid:
            raise StorageDomainMetadataError(
                sdUUID=self._sd_uuid, reason=f"metadata names {values.get('SDUUID')!r}"
            )
        missing = [n for n in SPECIAL_FILES if not (self._path / MD_DIR / n).is_file()]
        if not (self._path / IMAGES_DIR).is_dir():
            missing.append(IMAGES_DIR)
        if missing:
            raise StorageDomainAccessError(sdUUID=self._sd_uuid, missing=missing)
        if not os.access(self._path / IMAGES_DIR, os.R_OK | os.W_OK | os.X_OK):
            raise StorageDomainAccessError(sdUUID=self._sd_uuid, reason="images/ not writable")

    def format(self) -> None:
        """Remove the domain and everything in it (StorageDomain.format).

        The directory is first renamed to a hidden name, so the domain vanishes
        at once even if removing its files is interrupted.

        Raises:
            StorageDomainAccessError: the directory cannot be renamed.
        """
        doomed = self._path.with_name(f".{self._sd_uuid}{_REMOVING}{uuid.uuid4().hex[:8]}")
        try:
            self._path.rename(doomed)
            fsync_directory(self._path.parent)
        except OSError as error:
            raise StorageDomainAccessError(sdUUID=self._sd_uuid, reason=error.strerror) from None
        shutil.rmtree(doomed, ignore_errors=True)

    def pool_uuids(self) -> list[str]:
        """The pools the domain's metadata says it belongs to."""
        return [p for p in self.metadata().get("POOL_UUID", "").split(",") if p]

    def is_attached(self) -> bool:
        """True when POOL_UUID names a pool (BLANK counts as none)."""
        return any(p != BLANK_UUID for p in self.pool_uuids())

    def block_size(self) -> int:
        """The domain's block size (512 or 4096)."""
        return int(self.metadata().get("BLOCK_SIZE", "512"))


# -- helpers -------------------------------------------------------------------------------


def _check_creation_args(
    domain_type: DomainType, domain_class: DomainClass, version: int, name: str, remote: str
) -> None:
    if not isinstance(domain_type, DomainType) or not domain_type.is_file:
        raise StorageDomainTypeError(domainType=domain_type)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedDomainVersion(version=version)
    if not isinstance(domain_class, DomainClass):
        raise StorageInvalidParameter(name="domainClass", value=domain_class)
    for field, value in (("name", name), ("remotePath", remote)):
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise StorageInvalidParameter(name=field, value=value)
    if len(name) > DESCRIPTION_MAX:
        raise StorageInvalidParameter(name="name", reason=f"longer than {DESCRIPTION_MAX}")


def _is_uuid(name: str) -> bool:
    try:
        check_uuid(name, "name")
    except InvalidArgument:
        return False
    return True


def _remove_leftovers(root: Path, sd_uuid: str) -> None:
    """Remove hidden directories a crashed create or format of this domain left."""
    for entry in root.glob(f".{sd_uuid}.*"):
        if _CREATING in entry.name or _REMOVING in entry.name:
            shutil.rmtree(entry, ignore_errors=True)


def _check_empty(root: Path, remote_path: str) -> None:
    """Refuse a connection that already holds another domain (VDSM's rule).

    Other entries (a fresh file system's lost+found, VDSM's direct I/O probe)
    are allowed.
    """
    others = [
        e.name for e in root.iterdir() if (e / MD_DIR).is_dir() and not e.name.startswith(".")
    ]
    if others:
        raise StorageDomainNotEmpty(remotePath=remote_path, domains=sorted(others))


def _class_dirs(domain_class: DomainClass) -> tuple[str, ...]:
    """What a class of domain holds beside the layout (VDSM's localFsSD/nfsSD create).

    An ISO domain keeps its files in images/<ISO_IMAGE_UUID>; an export (Backup)
    domain keeps VMs' OVFs in the master tree.
    """
    if domain_class is DomainClass.ISO:
        return (f"{IMAGES_DIR}/{ISO_IMAGE_UUID}",)
    if domain_class is DomainClass.BACKUP:
        return ("master/vms", "master/tasks")
    return ()


def _build_layout(
    base: Path, sd_uuid: str, values: Mapping[str, str], alignment: int, block_size: int
) -> None:
    md = base / MD_DIR
    md.mkdir(mode=0o775)
    (base / IMAGES_DIR).mkdir(mode=0o755)
    for name, size in (
        ("ids", 0),
        ("leases", 0),
        ("inbox", MAILBOX_SIZE),
        ("outbox", MAILBOX_SIZE),
    ):
        with (md / name).open("wb") as special:
            special.truncate(size)
            os.fchmod(special.fileno(), METADATA_MODE)
            os.fsync(special.fileno())
    _format_xleases(md / "xleases", sd_uuid, alignment, block_size)
    write_domain_metadata(md / METADATA_FILE, values)
    fsync_directory(md)
    fsync_directory(base)


def _format_xleases(path: Path, lockspace: str, alignment: int, block_size: int) -> None:
    """Write an empty external-leases index (VDSM's xleases format) at `alignment`."""
    index = xleases.empty_index(lockspace)
    padding = -len(index) % block_size
    with path.open("wb") as out:
        out.truncate(alignment)
        out.seek(alignment)
        out.write(index + b"\0" * padding)
        os.fchmod(out.fileno(), METADATA_MODE)
        os.fsync(out.fileno())


def _detect_block_size(directory: Path) -> int:
    """512 if the file system takes 512-byte direct I/O, else 4096."""
    probe = directory / _DIRECT_IO_TEST
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0)
    try:
        fd = os.open(probe, flags, 0o600)
    except OSError as error:
        if error.errno == errno.EINVAL:  # no direct I/O at all (tmpfs): 512 is safe
            return 512
        raise
    try:
        with mmap.mmap(-1, max(BLOCK_SIZES)) as page:  # page aligned and zeroed
            for size in BLOCK_SIZES:
                with memoryview(page) as whole, whole[:size] as block:
                    try:
                        os.pwrite(fd, block, 0)
                    except OSError as error:
                        if error.errno != errno.EINVAL:
                            raise
                        continue
                return size
        return max(BLOCK_SIZES)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
