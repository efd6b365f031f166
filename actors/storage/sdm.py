"""SDM jobs: storage work any host may run, polled with Host.getJobs (§3.1 SDM).

`CopyData` is `SDM.copy_data`: copy one volume's data into another (the Engine
creates the destination volume first). The verb answers at once; the job runs as
work of the task manager (on the work facility, never on an actor's thread nor on
a domain's writer), with qemu-img's progress readable in `Host.getJobs`. The
recipe, every step a typed message to the domain that owns the volume:

    source ── VolumeData (read) ──▶ path, format, capacity (chain checked, LEGAL)
    dest   ── VolumeData (read, ILLEGAL allowed) ──▶ path, format, capacity
    dest   ── SetLegality(ILLEGAL) (write) ──▶ an interrupted copy is never mistaken
    qemu-img convert (progress, abortable) ──▶ fsync the destination
    dest   ── SetLegality(LEGAL) (write) ──▶ only once the data is on disk, and
                                               only if the Engine's `legal` is true

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
from hostvisor.actors.storage.domain_ops import SetLegality, VolumeData
from hostvisor.actors.storage.model import Legality, check_uuid
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

    @classmethod
    def from_wire(cls, wire: Any, name: str) -> Endpoint:
        """Check the wire form `{endpoint_type: "div", sd_id, img_id, vol_id}`.

        Raises:
            InvalidArgument: not a "div" endpoint, or an id is not a UUID.
        """
        if not isinstance(wire, dict) or wire.get("endpoint_type", "div") != "div":
            raise InvalidArgument(param=name, reason="only 'div' endpoints are supported")
        return cls(
            sd=check_uuid(wire.get("sd_id", ""), f"{name}.sd_id"),
            img=check_uuid(wire.get("img_id", ""), f"{name}.img_id"),
            vol=check_uuid(wire.get("vol_id", ""), f"{name}.vol_id"),
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
        """Host.getJobs' description."""
        return f"copy_data {self.source.vol} -> {self.destination.vol}"

    def __call__(self, ctx: TaskContext) -> None:
        """Run the recipe (a worker thread; blocks for the copy's length)."""
        src, dst, client = self.source, self.destination, self.client
        src_path, src_fmt, src_cap = _await(
            client.read(src.sd, VolumeData(img=src.img, vol=src.vol)), ctx, src.sd
        )
        dst_path, dst_fmt, dst_cap = _await(
            client.read(dst.sd, VolumeData(img=dst.img, vol=dst.vol, allow_illegal=True)),
            ctx,
            dst.sd,
        )
        if dst_cap < src_cap:
            raise InvalidArgument(
                destination=dst.vol, reason="smaller than the source", size=dst_cap
            )
        self._legality(Legality.ILLEGAL, ctx)
        qemuimg.convert(
            src_path,
            dst_path,
            src_fmt=src_fmt,
            dst_fmt=dst_fmt,
            progress=ctx.progress,
            abort=ctx.aborted,
        )
        flush(dst_path)  # durable before it is called LEGAL
        if self.legal:
            self._legality(Legality.LEGAL, ctx)

    def _legality(self, legality: Legality, ctx: TaskContext) -> None:
        dst = self.destination
        change = SetLegality(img=dst.img, vol=dst.vol, legality=legality)
        _await(self.client.write(dst.sd, change), ctx, dst.sd)


def _await(future: pykka.Future[Any], ctx: TaskContext, what: str) -> Any:
    """Wait for a domain's answer until it comes, or the job is aborted."""
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
