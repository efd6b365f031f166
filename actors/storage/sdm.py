"""SDM jobs: storage work any host may run, polled with Host.getJobs (§3.1 SDM).

`CopyData` is `SDM.copy_data`: copy one volume's data into another (the Engine
creates the destination volume first). The verb answers at once; the job runs as
work of the task manager (on the work facility, never on an actor's thread nor on
a domain's writer), with qemu-img's progress readable in `Host.getJobs`. The
recipe, every step a typed message to the domain that owns the volume:

    source ── VolumeData (read) ──▶ path, format, capacity (chain checked, LEGAL)
    dest   ── ReadFacts (read, ILLEGAL allowed) ──▶ path, format, capacity, parent
    dest   ── Begin (write) ──▶ its generation checked (the endpoint's `generation`),
                                ILLEGAL: an interrupted copy is never mistaken
    qemu-img convert (progress, abortable) ──▶ fsync the destination
    dest   ── End (write) ──▶ generation + 1, and LEGAL only once the data is on
                              disk, and only if the Engine's `legal` is true

A destination with a parent (one layer of a chain copied volume by volume, as
the Engine's CopyImageGroupVolumesData does) keeps its parent as backing file and
gets only the source's top layer, as VDSM's copy_data does.

No deadline on the copy itself: it reports progress and stops when aborted. Each
wait for a domain is event-driven (the domain answers, or fails its queued work
when it stops) and abortable (`ctx.aborted` is looked at every second).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.errors import InvalidArgument, Unavailable
from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.copying import MAX_GENERATION, Begin, End, ReadFacts
from hostvisor.actors.storage.domain_ops import VolumeData
from hostvisor.actors.storage.model import BLANK_UUID, check_uuid
from hostvisor.actors.storage.proxy import StorageClient
from hostvisor.actors.storage.tasks import TaskContext

POLL = 1.0
"""Seconds between looks at the abort flag while a domain's answer is awaited."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One side of a copy: a volume of a domain ("div": domain, image, volume)."""

    sd: str
    img: str
    vol: str
    generation: int | None = None
    """The generation the caller expects the volume to have (None: any)."""

    @classmethod
    def from_wire(cls, wire: Any, name: str) -> Endpoint:
        """Check the wire form `{endpoint_type: "div", sd_id, img_id, vol_id, generation?}`.

        `endpoint_type` may be left out (VDSM's VolumeInfo, the `vol_info` of
        update_volume, amend_volume and sparsify_volume, has none).

        Raises:
            InvalidArgument: not a "div" endpoint, an id is not a UUID, or the
                generation is not an int in 0..999.
        """
        if not isinstance(wire, dict) or wire.get("endpoint_type", "div") != "div":
            raise InvalidArgument(param=name, reason="only 'div' endpoints are supported")
        generation = wire.get("generation")
        if generation is not None and (
            isinstance(generation, bool)
            or not isinstance(generation, int)
            or not 0 <= generation <= MAX_GENERATION
        ):
            raise InvalidArgument(param=f"{name}.generation", value=repr(generation))
        return cls(
            sd=check_uuid(wire.get("sd_id", ""), f"{name}.sd_id"),
            img=check_uuid(wire.get("img_id", ""), f"{name}.img_id"),
            vol=check_uuid(wire.get("vol_id", ""), f"{name}.vol_id"),
            generation=generation,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyData:
    """The `SDM.copy_data` job: a task manager work (call it with the job's context)."""

    source: Endpoint
    destination: Endpoint
    client: StorageClient
    legal: bool = True
    """Whether the destination is marked LEGAL once copied (the Engine's `legal`)."""

    @property
    def description(self) -> str:
        """Host.getJobs' description: the job's name, as VDSM's sdm.api.copy_data.Job."""
        return "copy_data"

    def __call__(self, ctx: TaskContext) -> None:
        """Run the recipe (a worker thread; blocks for the copy's length)."""
        src, dst, client = self.source, self.destination, self.client
        src_path, src_fmt, src_cap = answer(
            client.read(src.sd, VolumeData(img=src.img, vol=src.vol)), ctx, src.sd
        )
        dest = answer(client.read(dst.sd, ReadFacts(img=dst.img, vol=dst.vol)), ctx, dst.sd)
        if dest.capacity < src_cap:
            raise InvalidArgument(
                destination=dst.vol, reason="smaller than the source", size=dest.capacity
            )
        backing = None
        if dest.parent != BLANK_UUID:
            parent = answer(
                client.read(dst.sd, ReadFacts(img=dst.img, vol=dest.parent)), ctx, dst.sd
            )
            backing = (dest.parent, parent.qemu_format)
        begin = Begin(img=dst.img, vol=dst.vol, generation=dst.generation)
        answer(client.write(dst.sd, begin), ctx, dst.sd)
        qemuimg.convert(
            src_path,
            dest.path,
            src_fmt=src_fmt,
            dst_fmt=dest.qemu_format,
            backing=backing[0] if backing else None,
            backing_fmt=backing[1] if backing else None,
            progress=ctx.progress,
            abort=ctx.aborted,
        )
        flush(dest.path)  # durable before it is called LEGAL
        end = End(img=dst.img, vol=dst.vol, legal=self.legal)
        answer(client.write(dst.sd, end), ctx, dst.sd)


def answer(future: pykka.Future[Any], ctx: TaskContext, what: str) -> Any:
    """Wait for a domain's answer until it comes, or the job is aborted (a worker; blocks).

    Raises:
        TaskAborted: the work was asked to stop meanwhile.
        Unavailable: the domain's actor died.
        HostvisorError: the domain's own answer was an error.
    """
    while True:
        try:
            return future.get(timeout=POLL)
        except pykka.Timeout:
            ctx.check_aborted()
        except pykka.ActorDeadError:
            raise Unavailable(actor=what, reason="actor is not running") from None


def flush(path: str) -> None:
    """Flush a copied volume to disk: qemu-img convert leaves its writes in the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
