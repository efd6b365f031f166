"""Metadata files of file storage domains: atomic writes, VDSM's two text formats.

Two formats live on a file domain (reference/vdsm-wire.md §8):

- the domain's `dom_md/metadata`: `KEY=VALUE` lines sorted by key, then one line
  `_SHA_CKSUM=<hex sha1>`. The checksum is VDSM's: the SHA-1 of the concatenated
  `KEY=VALUE` strings (no newlines) in key order, each encoded as ASCII with
  non-ASCII characters turned into XML character references (`&#233;`).
- a volume's `<volUUID>.meta`: `KEY=VALUE` lines sorted by key, then `EOF`.

Every write goes through `atomic_write`, so a reader (or a host that crashed half
way through a write) sees the old file or the new one, never a mix. Everything here
blocks on the file system; call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from hostvisor.actors.storage.errors import (
    StorageDomainAccessError,
    StorageDomainMetadataError,
    StorageError,
    VolumeMetadataReadError,
)

CHECKSUM_KEY = "_SHA_CKSUM"
"""The last line of a domain metadata file."""

VOLUME_END = "EOF"
"""The last line of a volume metadata file."""

METADATA_MODE = 0o660
"""Permissions of metadata files, as VDSM sets them."""


def atomic_write(path: Path, data: bytes, *, mode: int = METADATA_MODE) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file.

    The data goes to a temporary file in the same directory, which is flushed to
    disk and renamed over `path`; the directory is flushed too, so the rename
    survives a power cut. A leftover temporary file (the writer was killed before
    the rename) has a name starting with `.` and is never read.

    Raises:
        OSError: the directory cannot be written (callers map it to their error).
    """
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fchmod(temp.fileno(), mode)
            os.fsync(temp.fileno())
        Path(temp_name).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temp_name).unlink()
        raise
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (renames, creations, removals) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- domain metadata -------------------------------------------------------------------


def domain_checksum(values: Mapping[str, str]) -> str:
    """The `_SHA_CKSUM` VDSM computes over a domain's metadata values."""
    digest = hashlib.sha1()  # noqa: S324 - VDSM's on-disk format, not a security measure
    for key in sorted(values):
        line = f"{key}={values[key].strip()}"
        digest.update(line.encode("ascii", "xmlcharrefreplace"))
    return digest.hexdigest()


def format_domain_metadata(values: Mapping[str, str]) -> bytes:
    """The bytes of a domain metadata file holding `values` and its checksum.

    Raises:
        StorageError: a key or value cannot be stored in this line format.
    """
    _check_pairs(values)  # before stripping: a line break in a value is refused
    stripped = {key: value.strip() for key, value in values.items()}
    return _format_lines(stripped, f"{CHECKSUM_KEY}={domain_checksum(values)}")


def parse_domain_metadata(data: bytes, *, source: str = "") -> dict[str, str]:
    """Parse and verify a domain metadata file's bytes.

    Raises:
        StorageDomainMetadataError: the checksum is missing or wrong, or a line
            is not `KEY=VALUE`.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StorageDomainMetadataError(path=source, reason=f"not UTF-8: {error}") from None
    values: dict[str, str] = {}
    declared: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise StorageDomainMetadataError(path=source, reason=f"bad line {line!r}")
        if key == CHECKSUM_KEY:
            declared = value.strip()
        else:
            values[key] = value.strip()
    if declared is None:
        raise StorageDomainMetadataError(path=source, reason="no checksum")
    computed = domain_checksum(values)
    if declared != computed:
        raise StorageDomainMetadataError(path=source, declared=declared, computed=computed)
    return values


def read_domain_metadata(path: Path) -> dict[str, str]:
    """Read a domain's `dom_md/metadata`, verifying its checksum.

    Raises:
        StorageDomainAccessError: the file cannot be read.
        StorageDomainMetadataError: the checksum is missing or wrong.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise StorageDomainAccessError(path=str(path), reason=error.strerror) from None
    return parse_domain_metadata(data, source=str(path))


def write_domain_metadata(path: Path, values: Mapping[str, str]) -> None:
    """Atomically write a domain's metadata with VDSM's checksum.

    Raises:
        StorageDomainAccessError: the file cannot be written.
        StorageError: a key or value cannot be stored in this line format.
    """
    data = format_domain_metadata(values)
    try:
        atomic_write(Path(path), data)
    except OSError as error:
        raise StorageDomainAccessError(path=str(path), reason=error.strerror) from None


# -- volume metadata -------------------------------------------------------------------


def format_volume_metadata(values: Mapping[str, str]) -> bytes:
    """The bytes of a `.meta` file: sorted `KEY=VALUE` lines, then `EOF`.

    Raises:
        StorageError: a key or value cannot be stored in this line format.
    """
    return _format_lines(values, VOLUME_END)


def parse_volume_metadata(data: bytes, *, source: str = "") -> dict[str, str]:
    """Parse a `.meta` file's bytes; the `EOF` line must be there.

    Raises:
        VolumeMetadataReadError: no `EOF` line (a torn or foreign file).
    """
    values: dict[str, str] = {}
    text = data.rstrip(b"\0").decode("utf-8", errors="replace")
    for line in text.splitlines():
        if line.strip() == VOLUME_END:
            return values
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    raise VolumeMetadataReadError(path=source, reason="no EOF line")


def read_volume_metadata(path: Path) -> dict[str, str]:
    """Read a volume's `.meta` file.

    Raises:
        FileNotFoundError: there is no such file (callers turn it into
            VolumeDoesNotExist, which needs ids this module does not have).
        VolumeMetadataReadError: the file cannot be read or has no `EOF` line.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise VolumeMetadataReadError(path=str(path), reason=error.strerror) from None
    return parse_volume_metadata(data, source=str(path))


def write_volume_metadata(path: Path, values: Mapping[str, str]) -> None:
    """Atomically write a volume's `.meta` file.

    Raises:
        OSError: the file cannot be written.
        StorageError: a key or value cannot be stored in this line format.
    """
    atomic_write(Path(path), format_volume_metadata(values))


def _format_lines(values: Mapping[str, str], last: str) -> bytes:
    """Sorted `KEY=VALUE` lines, then `last` (the checksum line, or `EOF`)."""
    _check_pairs(values)
    lines = [f"{key}={values[key]}\n" for key in sorted(values)]
    lines.append(f"{last}\n")
    return "".join(lines).encode("utf-8")


def _check_pairs(values: Mapping[str, str]) -> None:
    for key, value in values.items():
        if not key or "=" in key or any(c in key for c in "\r\n\0") or key != key.strip():
            raise StorageError(reason="bad metadata key", key=key)
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise StorageError(reason="bad metadata value", key=key, value=value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise StorageError(reason="metadata value is not valid Unicode", key=key) from None
