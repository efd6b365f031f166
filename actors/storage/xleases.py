r"""External leases on `dom_md/xleases`: VDSM's index and sanlock resources (blocking).

The volume's layout is VDSM's (lib/vdsm/storage/xlease.py), in slots of one
ALIGNMENT each:

    slot 0              lockspace (unused: the domain's lockspace is on `ids`)
    slot 1              the index: a 512-byte metadata block, then 64-byte records
                        `lease_id \0 offset(11 digits) \0 updating reserved \n`
    slot 2              sanlock's own (unused)
    slot 3 + n          the sanlock resource of record n

A lease is created by writing its sanlock resource first and its record second,
and removed the other way round, so the index never names a resource that is not
there. `Volume.rebuild` (Lease.rebuild_leases) mends an index and resources that
disagree anyway (a write that failed half-way, a damaged record), VDSM's way. The
index is written a whole block at a time (direct I/O where the file
system takes it). Only the SPM adds or removes leases (the domain's writer
serializes them on this host); any host may look one up.

`filedomain._format_xleases` writes the empty index when a domain is made.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hostvisor.actors.storage import clusterlock
from hostvisor.actors.storage.errors import AcquireLockFailure, StorageError

RESERVED_SLOTS: Final = 3
METADATA_SIZE: Final = 512
RECORD_SIZE: Final = 64
INDEX_SIZE: Final = 62 * 4096
MAX_RECORDS: Final = (INDEX_SIZE - METADATA_SIZE) // RECORD_SIZE
INDEX_MAGIC: Final = 0x12152016
META_STRUCT: Final = struct.Struct(">i x 4s x 48s x 10s x c 440x c")
RECORD_STRUCT: Final = struct.Struct("48s x 11s x 3c")
LVB_SIZE: Final = 512
"""Bytes of a lease's value block (VDSM's clusterlock.LVB_SIZE)."""


class NoSuchLease(StorageError):
    """No lease with that id in the domain's xleases (VDSM's NoSuchLease)."""

    code = 936
    message = "No such lease"


class LeaseExists(StorageError):
    """A lease with that id exists already (VDSM's xlease.LeaseExists, a general error)."""

    code = 100
    message = "Lease exists"


class NoSpace(StorageError):
    """Every record of the index is used (VDSM's xlease.NoSpace)."""

    code = 100
    message = "No space to add lease"


class InvalidIndex(StorageError):
    """The xleases index is not VDSM's format (bad magic) or cannot be read."""

    code = 100
    message = "Invalid xleases index"


class SanlockLVBError(StorageError):
    """Reading or writing a lease's value block failed (VDSM's SanlockLVBError)."""

    code = 947
    message = "Sanlock LVB error"


def lease_offset(recnum: int, alignment: int) -> int:
    """Where record `recnum`'s resource lives in the volume."""
    return (RESERVED_SLOTS + recnum) * alignment


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Lease.info's answer: where a lease lives."""

    sd_id: str
    lease_id: str
    path: str
    offset: int

    def wire(self) -> dict[str, Any]:
        """VDSM's LeaseInfo: {sd_id, lease_id, path, offset}."""
        return {
            "sd_id": self.sd_id,
            "lease_id": self.lease_id,
            "path": self.path,
            "offset": self.offset,
        }


class Volume:
    """The xleases volume of one domain (read afresh for each operation; not thread-safe)."""

    def __init__(self, path: Path, lockspace: str, alignment: int, block_size: int) -> None:
        """Name the volume; nothing is read here."""
        self.path = Path(path)
        self.lockspace = lockspace
        self.alignment = alignment
        self.block_size = block_size

    # -- the index ---------------------------------------------------------------------------

    def _read_index(self) -> bytes:
        try:
            with self.path.open("rb") as volume:
                volume.seek(self.alignment)
                data = volume.read(INDEX_SIZE)
        except OSError as error:
            raise InvalidIndex(path=str(self.path), reason=error.strerror) from None
        if len(data) < METADATA_SIZE:
            raise InvalidIndex(path=str(self.path), reason="truncated")
        magic = META_STRUCT.unpack(data[:METADATA_SIZE])[0]
        if magic != INDEX_MAGIC:
            raise InvalidIndex(path=str(self.path), reason=f"bad magic {magic:#x}")
        return data

    def _records(self, index: bytes) -> int:
        return min(MAX_RECORDS, (len(index) - METADATA_SIZE) // RECORD_SIZE)

    def _record(self, index: bytes, recnum: int) -> tuple[str, bool]:
        start = METADATA_SIZE + recnum * RECORD_SIZE
        name, _offset, updating, _reserved, _term = RECORD_STRUCT.unpack(
            index[start : start + RECORD_SIZE]
        )
        return name.rstrip(b"\0").decode("ascii", "replace"), updating == b"u"

    def _find(self, index: bytes, lease_id: str) -> int:
        for recnum in range(self._records(index)):
            name, updating = self._record(index, recnum)
            if name == lease_id and not updating:
                return recnum
        return -1

    def _free(self, index: bytes) -> int:
        for recnum in range(self._records(index)):
            if not self._record(index, recnum)[0]:
                return recnum
        return -1

    def _write_record(self, index: bytes, recnum: int, name: str, offset: int) -> None:
        """Rewrite the block holding record `recnum` (direct I/O where it is taken)."""
        record = RECORD_STRUCT.pack(name.encode("ascii"), b"%011d" % offset, b"-", b"-", b"\n")
        start = METADATA_SIZE + recnum * RECORD_SIZE
        block_start = start - start % self.block_size
        block = bytearray(index[block_start : block_start + self.block_size])
        block[start - block_start : start - block_start + RECORD_SIZE] = record
        _write_block(self.path, self.alignment + block_start, bytes(block))

    # -- leases ------------------------------------------------------------------------------

    def lookup(self, lease_id: str) -> LeaseInfo:
        """Where `lease_id` lives. Raises NoSuchLease, InvalidIndex."""
        recnum = self._find(self._read_index(), lease_id)
        if recnum == -1:
            raise NoSuchLease(lease_id=lease_id, sd_id=self.lockspace)
        offset = lease_offset(recnum, self.alignment)
        return LeaseInfo(self.lockspace, lease_id, str(self.path), offset)

    def add(self, lease_id: str) -> LeaseInfo:
        """Create the lease: its sanlock resource, then its record.

        Raises LeaseExists, NoSpace, InvalidIndex, or StorageError (sanlock refused).
        """
        index = self._read_index()
        if self._find(index, lease_id) != -1:
            raise LeaseExists(lease_id=lease_id)
        recnum = self._free(index)
        if recnum == -1:
            raise NoSpace(lease_id=lease_id)
        offset = lease_offset(recnum, self.alignment)
        self._ensure_size(offset + self.alignment)
        self._write_resource(self.lockspace, lease_id, offset)
        self._write_record(index, recnum, lease_id, offset)
        return LeaseInfo(self.lockspace, lease_id, str(self.path), offset)

    def remove(self, lease_id: str) -> None:
        """Remove the lease: its record, then (best effort) its sanlock resource.

        Raises NoSuchLease, InvalidIndex.
        """
        index = self._read_index()
        recnum = self._find(index, lease_id)
        if recnum == -1:
            raise NoSuchLease(lease_id=lease_id, sd_id=self.lockspace)
        self._write_record(index, recnum, "", 0)
        with contextlib.suppress(StorageError):  # the index no longer names it: removed
            self._write_resource("", "", lease_offset(recnum, self.alignment))

    def leases(self) -> dict[str, int]:
        """Every lease of the index: {lease id: offset}."""
        index = self._read_index()
        found = {}
        for recnum in range(self._records(index)):
            name, _updating = self._record(index, recnum)
            if name:
                found[name] = lease_offset(recnum, self.alignment)
        return found

    def rebuild(self) -> dict[str, int]:
        """Make the index and the sanlock resources agree (VDSM's `xlease.rebuild_index`).

        The index is the truth where it can be read. For each record's slot:
        a record with its resource is kept; a record whose resource is missing (or
        names another lease) gets its resource written again; an empty record over a
        leftover resource has the resource cleared; a record that cannot be parsed is
        restored from the resource at its slot when the index names that lease nowhere
        else, and cleared (with the resource) otherwise; slots past the end of the
        volume are emptied. The index's metadata is marked updating while this runs,
        and the whole index is written back at the end, so a crash midway leaves it
        marked (a second rebuild mends it).

        Returns counts of what changed: {"leases", "resources_written",
        "resources_cleared", "records_restored", "records_cleared"}. Blocks (direct
        I/O and sanlock reads on the domain's mount).

        Raises:
            InvalidIndex: the index's metadata is not VDSM's (format the volume instead).
            StorageError: sanlock refused to read or write a resource.
        """
        index = self._read_index()
        meta = _metadata(index, self.lockspace)
        _write_block(self.path, self.alignment, _pack_metadata(meta, updating=True))
        records = bytearray(index[METADATA_SIZE:])
        names: set[str] = set()
        for recnum in range(self._records(index)):
            with contextlib.suppress(InvalidIndex):
                if name := _parse_record(records, recnum)[0]:
                    names.add(name)
        counts = dict.fromkeys(
            ("resources_written", "resources_cleared", "records_restored", "records_cleared"), 0
        )
        max_offset = self.path.stat().st_size - self.alignment
        for recnum in range(self._records(index)):
            offset = lease_offset(recnum, self.alignment)
            if offset > max_offset:
                _set_record(records, recnum, "", 0)
                continue
            self._mend(records, recnum, offset, names, counts)
        block = _pack_metadata(meta, updating=False) + bytes(records)
        block += b"\0" * (-len(block) % self.block_size)
        _write_block(self.path, self.alignment, block)
        return {"leases": len(names), **counts}

    def _mend(
        self,
        records: bytearray,
        recnum: int,
        offset: int,
        names: set[str],
        counts: dict[str, int],
    ) -> None:
        """Rebuild's step for one slot (see `rebuild`)."""
        resource = self._resource_at(offset)
        try:
            name, _updating = _parse_record(records, recnum)
        except InvalidIndex:
            if resource is not None and resource not in names:
                _set_record(records, recnum, resource, offset)
                names.add(resource)
                counts["records_restored"] += 1
            else:
                _set_record(records, recnum, "", 0)
                counts["records_cleared"] += 1
                if resource is not None:
                    self._write_resource("", "", offset)
                    counts["resources_cleared"] += 1
            return
        if not name:
            if resource is not None:
                self._write_resource("", "", offset)
                counts["resources_cleared"] += 1
        elif resource != name:
            self._write_resource(self.lockspace, name, offset)
            counts["resources_written"] += 1

    def _resource_at(self, offset: int) -> str | None:
        """The name of the sanlock resource at `offset`, None when there is none."""
        api = _api()
        try:
            res = api.read_resource(
                str(self.path), offset, align=self.alignment, sector=self.block_size
            )
        except api.SanlockException as error:
            if error.errno == clusterlock.LEADER_MAGIC:
                return None
            raise StorageError(path=str(self.path), offset=offset, reason=str(error)) from None
        name = bytes(res["resource"]).decode("utf-8", "replace")
        return name or None  # an empty name: a cleared resource

    def _ensure_size(self, size: int) -> None:
        with self.path.open("r+b") as volume:
            if os.fstat(volume.fileno()).st_size < size:
                volume.truncate(size)

    def _write_resource(self, lockspace: str, resource: str, offset: int) -> None:
        api = _api()
        try:
            api.write_resource(
                lockspace.encode(),
                resource.encode(),
                [(str(self.path), offset)],
                align=self.alignment,
                sector=self.block_size,
            )
        except api.SanlockException as error:
            raise StorageError(lease=resource, reason=str(error)) from None


def _metadata(index: bytes, lockspace: str) -> tuple[bytes, bytes]:
    """(version, lockspace) of the index's metadata block. Raises InvalidIndex."""
    _magic, version, name, _mtime, _updating, _term = META_STRUCT.unpack(index[:METADATA_SIZE])
    if version != b"0001":
        raise InvalidIndex(reason=f"unsupported index version {version!r}")
    owner = name.rstrip(b"\0").decode("ascii", "replace")
    if owner != lockspace:
        raise InvalidIndex(reason=f"the index belongs to lockspace {owner!r}")
    return version, name


def empty_index(lockspace: str) -> bytes:
    """A new, empty index for `lockspace`: INDEX_SIZE bytes, VDSM's layout on any block size.

    The metadata block is always METADATA_SIZE (512) bytes and the records follow it,
    also on a 4 KiB-sector domain, so a VDSM host reads the same index.
    """
    meta = _pack_metadata((b"0001", lockspace.encode("ascii")), updating=False)
    records = _empty_record() * MAX_RECORDS
    return (meta + records).ljust(INDEX_SIZE, b"\0")


def _empty_record() -> bytes:
    return RECORD_STRUCT.pack(b"", b"%011d" % 0, b"-", b"-", b"\n")


def _pack_metadata(meta: tuple[bytes, bytes], *, updating: bool) -> bytes:
    version, name = meta
    mtime = b"%010d" % int(time.time())
    flag = b"u" if updating else b"-"
    return META_STRUCT.pack(INDEX_MAGIC, version, name, mtime, flag, b"\n")


def _parse_record(records: bytes | bytearray, recnum: int) -> tuple[str, bool]:
    """(lease id, updating) of record `recnum`, VDSM's checks. Raises InvalidIndex."""
    start = recnum * RECORD_SIZE
    raw = bytes(records[start : start + RECORD_SIZE])
    name, offset, updating, _reserved, _term = RECORD_STRUCT.unpack(raw)
    try:
        text = name.rstrip(b"\0").decode("ascii")
        int(offset)
    except ValueError:  # UnicodeDecodeError is one
        raise InvalidIndex(record=recnum, reason="cannot parse the record") from None
    return text, updating == b"u"


def _set_record(records: bytearray, recnum: int, name: str, offset: int) -> None:
    start = recnum * RECORD_SIZE
    records[start : start + RECORD_SIZE] = RECORD_STRUCT.pack(
        name.encode("ascii"), b"%011d" % offset, b"-", b"-", b"\n"
    )


# -- the status of a lease, and its value block ------------------------------------------------


def status(info: LeaseInfo, alignment: int, block_size: int, host_id: int) -> dict[str, Any]:
    """Lease.status: {owners, version[, metadata]} as VDSM's `lease_status`.

    `owners` are the host ids sanlock reports holding it and `version` its lease
    version then; a free lease has no owners and version None (VDSM's inspect). A
    free lease is briefly acquired (this host must hold its host id) to read its
    value block, the `metadata`; one taken meanwhile by another host is reported
    without it.

    Raises StorageError: sanlock cannot read the lease.
    """
    disk = (info.path, info.offset)
    version, owner = clusterlock.inspect(info.sd_id, info.lease_id, disk, alignment, block_size)
    if owner != -1:
        return {"owners": [owner], "version": version}
    answer: dict[str, Any] = {"owners": [], "version": None}
    try:
        with acquired(info, host_id) as fd:
            answer["metadata"] = get_lvb(info, fd)
    except (StorageError, AcquireLockFailure):
        pass  # held elsewhere now, or this host has not joined: no metadata
    return answer


class acquired:  # noqa: N801 - used as a context manager, like contextlib's
    """Hold a lease (with its value block) for the length of a `with` block."""

    def __init__(self, info: LeaseInfo, host_id: int) -> None:
        """Name the lease; it is acquired on entering."""
        self.info = info
        self.host_id = host_id
        self.fd = -1

    def __enter__(self) -> int:
        """Acquire it through a new registration. Raises AcquireLockFailure."""
        api = _api()
        self.fd = api.register()
        try:
            api.acquire(
                self.info.sd_id.encode(),
                self.info.lease_id.encode(),
                [(self.info.path, self.info.offset)],
                slkfd=self.fd,
                lvb=True,
            )
        except api.SanlockException as error:
            os.close(self.fd)
            raise AcquireLockFailure(
                lease=self.info.lease_id, reason=error.args[-1], errno=error.errno
            ) from None
        return self.fd

    def __exit__(self, *_exc: object) -> None:
        """Release it and close the registration."""
        api = _api()
        try:
            api.release(
                self.info.sd_id.encode(),
                self.info.lease_id.encode(),
                [(self.info.path, self.info.offset)],
                slkfd=self.fd,
            )
        except api.SanlockException:
            pass  # closing the registration releases it
        finally:
            os.close(self.fd)


def get_lvb(info: LeaseInfo, _fd: int) -> dict[str, Any]:
    """The lease's value block as a dict ({} when never written). Held with lvb."""
    api = _api()
    try:
        data = api.get_lvb(
            info.sd_id.encode(), info.lease_id.encode(), [(info.path, info.offset)], size=LVB_SIZE
        )
    except api.SanlockException as error:
        raise SanlockLVBError(lease=info.lease_id, reason=str(error)) from None
    text = bytes(data).rstrip(b"\0").decode("utf-8")
    return json.loads(text) if text else {}


def set_lvb(info: LeaseInfo, values: dict[str, Any]) -> None:
    """Write the lease's value block (held with lvb). Raises SanlockLVBError."""
    data = json.dumps(values).encode("utf-8")
    if len(data) > LVB_SIZE:
        raise SanlockLVBError(lease=info.lease_id, reason="the metadata is too big")
    api = _api()
    try:
        api.set_lvb(
            info.sd_id.encode(),
            info.lease_id.encode(),
            [(info.path, info.offset)],
            data.ljust(LVB_SIZE, b"\0"),
        )
    except api.SanlockException as error:
        raise SanlockLVBError(lease=info.lease_id, reason=str(error)) from None


def _api() -> Any:
    return clusterlock.module()


def _write_block(path: Path, offset: int, block: bytes) -> None:
    """Write one aligned block at `offset`, durably (O_DIRECT where taken, then fsync)."""
    fd = -1
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | getattr(os, "O_DIRECT", 0))
        direct = True
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        direct = False
    try:
        if direct:
            with mmap.mmap(-1, len(block)) as buffer:
                buffer.write(block)
                try:
                    os.pwritev(fd, [buffer], offset)
                except OSError as error:
                    if error.errno != errno.EINVAL:
                        raise
                    os.close(fd)
                    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                    os.pwrite(fd, block, offset)
        else:
            os.pwrite(fd, block, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
