"""A volume's data streamed to or from a peer: the tasks behind HTTP image transfer.

VDSM serves two HTTP requests on its API port (lib/vdsm/rpc/http.py) for the
Engine's OVF stores: a PUT writes the request's body into a volume
(`Image.downloadFromStream`, the SPM task verb `downloadImageFromStream`), a GET
sends a volume's bytes back (`Image.uploadToStream`, `uploadImageToStream`). Each
is an SPM task whose id the HTTP answer carries in its `Task-Id` header; the
Engine then polls and clears it like any other task.

Here each is a `DomainTask` started through the pool's `member_task` (SPM only):
`check` runs on a worker and finds the volume before the task id is answered (so
an unknown volume is refused at once), then `apply` runs on the domain's writer, a
worker, in turn with the domain's other changes. It moves the bytes between the
volume's file and a blocking `ByteSource` / `ByteSink` the caller provides (api/http
bridges them to its connection), reports progress, honours Task.stop between
chunks and calls `done` once, with the error if any, whether it succeeded or not
(VDSM's callback).

As in VDSM (image.py `_activateVolumeForImportExport`, imageSharing.py):
- only an image of one volume may be streamed (a volume with a parent is refused);
  without a volume id the image's one volume is meant; its legality is not checked;
- a write replaces the volume's data with exactly the bytes sent: the file ends
  where they end (VDSM's `dd` without `conv=notrunc`), and is fsynced;
- a read must not see stale page cache (another host may have written the
  volume): VDSM reads with O_DIRECT; this drops the file's cached pages first.
Stream tasks claim nothing: like every task of the domain they run one at a time
on its writer, so a GET asked while a PUT of the same volume runs waits for it (as
VDSM's image lock makes it wait) instead of being refused as busy.

Unlike VDSM, a write longer than the volume's capacity and a read past the end of
its data are refused before the task starts (`OutsideVolume`), rather than
failing halfway.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from hostvisor.actors.storage.domain_ops import DomainTask
from hostvisor.actors.storage.errors import StorageError, StorageInvalidParameter
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.tasks import TaskContext

CHUNK: Final = 1024 * 1024
"""Bytes moved per step; progress and Task.stop are checked between steps."""


class ByteSource(Protocol):
    """Where a write's bytes come from (a worker thread reads it)."""

    def read(self, size: int) -> bytes:
        """Return 1..`size` bytes, or b"" when the peer ended early. Blocks.

        Raises:
            MiscFileReadError: the peer stopped sending or went away.
        """


class ByteSink(Protocol):
    """Where a read's bytes go (a worker thread writes it)."""

    def write(self, data: bytes) -> None:
        """Send `data` whole. Blocks until the peer has taken it.

        Raises:
            MiscFileWriteError: the peer stopped reading or went away.
        """


Done = Callable[[BaseException | None], None]
"""Told once when a stream task's work ends (a worker thread): None, or why it failed."""


class CopyImageError(StorageError):
    """The image cannot be streamed (VDSM: more than one volume)."""

    code = 261
    message = "low level Image copy failed"


class MiscFileReadError(StorageError):
    """Reading the data failed (the peer's stream, or the volume's file)."""

    code = 2001
    message = "Internal file read failure"


class MiscFileWriteError(StorageError):
    """Writing the data failed (the volume's file, or the peer's stream)."""

    code = 2002
    message = "Internal file write failure"


class OutsideVolume(StorageInvalidParameter):
    """The bytes asked for pass the volume's data (a read) or its capacity (a write).

    Its context carries `size`: the volume's data size (read) or capacity (write).
    """


def stream_volume(domain: FileDomain, img: str, vol: str | None) -> tuple[str, dict[str, Any]]:
    """The volume a stream task means, and its info (a worker; blocks).

    Raises:
        ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
        CopyImageError: the image has more than one volume, or the volume a parent.
    """
    if vol is None:
        volumes = domain.volumes(img)
        if len(volumes) != 1:
            raise CopyImageError(imgUUID=img, volumes=len(volumes), reason="not one volume")
        vol = volumes[0]
    chain = domain.chain(img, vol)
    if len(chain) > 1:
        raise CopyImageError(imgUUID=img, volUUID=vol, reason="the volume has a parent")
    return vol, domain.volume_info(img, vol)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class WriteVolume(DomainTask):
    """PUT: replace a volume's data with `length` bytes read from `source`."""

    img: str
    vol: str | None
    length: int
    source: ByteSource
    done: Done
    op = "write volume from stream"
    verb = "downloadImageFromStream"

    def check(self, domain: FileDomain) -> None:
        """Raise unless the volume exists alone in its image and holds `length` bytes."""
        vol, info = stream_volume(domain, self.img, self.vol)
        capacity = int(info["capacity"])
        if self.length > capacity:
            raise OutsideVolume(volUUID=vol, length=self.length, size=capacity)

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:
        """Copy the bytes into the volume's file, then truncate and fsync it. Blocks."""
        error: BaseException | None = None
        try:
            vol, _info = stream_volume(domain, self.img, self.vol)
            path = domain.prepare_image(self.img, vol, allow_illegal=True)
            _write(os.fspath(path), self.length, self.source, ctx)
        except BaseException as failure:
            error = failure
            raise
        finally:
            self.done(error)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ReadVolume(DomainTask):
    """GET: send `length` bytes of a volume's data from `offset` to `sink`."""

    img: str
    vol: str | None
    offset: int
    length: int
    sink: ByteSink
    done: Done
    op = "read volume to stream"
    verb = "uploadImageToStream"

    def check(self, domain: FileDomain) -> None:
        """Raise unless the volume exists alone in its image and has the bytes asked."""
        vol, info = stream_volume(domain, self.img, self.vol)
        size = int(info.get("apparentsize", "0"))
        if self.offset + self.length > size:
            raise OutsideVolume(volUUID=vol, offset=self.offset, length=self.length, size=size)

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:
        """Send the bytes, read past the page cache. Blocks."""
        error: BaseException | None = None
        try:
            vol, _info = stream_volume(domain, self.img, self.vol)
            path = domain.prepare_image(self.img, vol, allow_illegal=True)
            _read(os.fspath(path), self.offset, self.length, self.sink, ctx)
        except BaseException as failure:
            error = failure
            raise
        finally:
            self.done(error)


def _write(path: str, length: int, source: ByteSource, ctx: TaskContext) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as error:
        raise MiscFileWriteError(path=path, reason=error.strerror) from None
    try:
        written = 0
        while written < length:
            ctx.check_aborted()
            data = source.read(min(CHUNK, length - written))
            if not data:
                raise MiscFileReadError(reason=f"partial data {written} of {length} bytes")
            _write_all(fd, memoryview(data), path)
            written += len(data)
            ctx.progress(written / length)
        os.ftruncate(fd, length)
        os.fsync(fd)
    except OSError as error:
        raise MiscFileWriteError(path=path, reason=error.strerror) from None
    finally:
        os.close(fd)
    ctx.progress(1.0)


def _write_all(fd: int, data: memoryview, path: str) -> None:
    while data:
        count = os.write(fd, data)
        if count <= 0:
            raise MiscFileWriteError(path=path, reason="the file took no bytes")
        data = data[count:]


def _read(path: str, offset: int, length: int, sink: ByteSink, ctx: TaskContext) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise MiscFileReadError(path=path, reason=error.strerror) from None
    try:
        # VDSM reads with O_DIRECT; dropping the cached pages gets fresh data the same
        # way and works on every file system (tmpfs refuses O_DIRECT).
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        sent = 0
        while sent < length:
            ctx.check_aborted()
            data = os.pread(fd, min(CHUNK, length - sent), offset + sent)
            if not data:
                raise MiscFileReadError(path=path, reason=f"the data ends at {offset + sent}")
            sink.write(data)
            sent += len(data)
            ctx.progress(sent / length)
    except OSError as error:
        raise MiscFileReadError(path=path, reason=error.strerror) from None
    finally:
        os.close(fd)
    ctx.progress(1.0)
