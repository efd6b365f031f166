"""SDM jobs: storage work any host may run, polled with Host.getJobs (§3.1 SDM).

`SDM.copy_data` copies one volume's data into another (the Engine creates the
destination volume first). The call returns at once; the copy runs in a job worker
of the task manager — never on an actor's thread, never on the domain's writer —
with qemu-img's progress readable in `Host.getJobs`. The destination is ILLEGAL
until the copy is complete and flushed to disk, so an interrupted copy (or a power
loss right after it) is never mistaken for a good one.
"""

from __future__ import annotations

import os
from typing import Any

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import Legality, VolumeFormat, check_uuid
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.storage_api import TASKS, StorageApi
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb


class Endpoint:
    """One side of a copy: a volume of a domain ("div": domain, image, volume)."""

    def __init__(self, wire: Any, name: str) -> None:
        """Check the wire form `{endpoint_type: "div", sd_id, img_id, vol_id}`."""
        if not isinstance(wire, dict) or wire.get("endpoint_type", "div") != "div":
            raise InvalidArgument(param=name, reason="only 'div' endpoints are supported")
        self.sd = check_uuid(wire.get("sd_id", ""), f"{name}.sd_id")
        self.img = check_uuid(wire.get("img_id", ""), f"{name}.img_id")
        self.vol = check_uuid(wire.get("vol_id", ""), f"{name}.vol_id")

    def where(self, domain: FileDomain, *, allow_illegal: bool) -> tuple[str, str, int]:
        """(path, qemu format, capacity) of the volume, its chain checked."""
        path = domain.prepare_image(self.img, self.vol, allow_illegal=allow_illegal)
        info = domain.volume_info(self.img, self.vol)
        return str(path), VolumeFormat[info["format"]].qemu_format, int(info["capacity"])


class SdmHandlers:
    """The handlers of the SDM verbs, over one `StorageApi`."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.api = api

    async def copy_data(self, request: Call) -> bool:
        """SDM.copy_data: copy a volume's data into another volume, as a job."""
        args = request.args
        job_id = args["job_id"]
        source = Endpoint(args["source"], "source")
        destination = Endpoint(args["destination"], "destination")
        src_ref = await self.api.domain(source.sd)
        dst_ref = await self.api.domain(destination.sd)
        api = self.api

        def copy(context: Any) -> None:
            src_path, src_fmt, src_cap = api.domain_work(
                src_ref, "copy source", lambda d: source.where(d, allow_illegal=False), kind="read"
            )
            dst_path, dst_fmt, dst_cap = api.domain_work(
                dst_ref,
                "copy destination",
                lambda d: destination.where(d, allow_illegal=True),
                kind="read",
            )
            if dst_cap < src_cap:
                raise InvalidArgument(
                    destination=destination.vol, reason="smaller than the source", size=dst_cap
                )
            _set_legality(api, dst_ref, destination, Legality.ILLEGAL)
            qemuimg.convert(
                src_path,
                dst_path,
                src_fmt=src_fmt,
                dst_fmt=dst_fmt,
                progress=context.progress,
                abort=context.aborted,
            )
            _flush(dst_path)  # durable before it is called LEGAL
            _set_legality(api, dst_ref, destination, Legality.LEGAL)

        tasks = self.api.registry.lookup(TASKS)
        description = f"copy_data {source.vol} -> {destination.vol}"
        await settled(call(tasks, "submit_job", job_id, copy, description=description))
        return True


def _flush(path: str) -> None:
    """Flush a copied volume to disk: qemu-img convert leaves its writes in the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_legality(
    api: StorageApi, ref: pykka.ActorRef[Any], volume: Endpoint, legality: Legality
) -> None:
    api.domain_work(ref, "set legality", lambda d: d.set_legality(volume.img, volume.vol, legality))


def sdm_verbs(api: StorageApi) -> list[Verb]:
    """Return the SDM verbs."""
    h = SdmHandlers(api)
    return [
        Verb(
            namespace="SDM",
            name="copy_data",
            doc="Copy a volume's data into another volume (a job; see Host.getJobs).",
            params=(
                Param(name="job_id", kind=Kind.STR, doc="the caller's job id"),
                Param(
                    name="source", kind=Kind.OBJECT, doc="{endpoint_type, sd_id, img_id, vol_id}"
                ),
                Param(name="destination", kind=Kind.OBJECT, doc="the same, of the target"),
                Param(name="copy_bitmaps", kind=Kind.BOOL, doc="ignored", default=False),
            ),
            handler=h.copy_data,
        ),
    ]
