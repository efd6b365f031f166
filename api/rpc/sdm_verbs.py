"""SDM jobs: storage work any host may run, polled with Host.getJobs (§3.1 SDM).

`SDM.copy_data` binds its endpoints and hands the task manager a `CopyData` job
(actors/storage/sdm.py holds the recipe: ILLEGAL, convert, flush, LEGAL). The
call returns at once; both domains are looked up first, so a domain no mount holds
answers the verb, not the job.
"""

from __future__ import annotations

from typing import Annotated, Any

from hostvisor.actors.storage.sdm import CopyData, Endpoint
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb


def sdm_verbs(api: StorageApi) -> list[Verb]:
    """Return the SDM verbs."""
    return verbs_of(SdmHandlers(api))


class SdmHandlers:
    """The handlers of the SDM verbs, over one `StorageApi` (the API loop)."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.client = api.client

    @verb(
        "SDM",
        "copy_data",
        doc="Copy a volume's data into another volume (a job; see Host.getJobs).",
    )
    async def copy_data(
        self,
        *,
        job_id: Annotated[str, Arg("the caller's job id")],
        source: Annotated[dict[str, Any], Arg("{endpoint_type, sd_id, img_id, vol_id}")],
        destination: Annotated[dict[str, Any], Arg("the same, of the target")],
        copy_bitmaps: Annotated[bool, Arg("ignored")] = False,  # noqa: ARG002
        legal: Annotated[
            bool, Arg("mark the destination LEGAL once copied (false: leave it ILLEGAL)")
        ] = True,
    ) -> bool:
        """SDM.copy_data: copy a volume's data into another volume, as a job.

        The Engine (JsonRpcVdsServer.copyData) always sends `legal`; with false the
        destination stays ILLEGAL after the copy and the Engine marks it later.
        """
        src = Endpoint.from_wire(source, "source")
        dst = Endpoint.from_wire(destination, "destination")
        await settled(self.client.domain(src.sd))
        await settled(self.client.domain(dst.sd))
        job = CopyData(source=src, destination=dst, client=self.client, legal=legal)
        await settled(self.client.tasks().submit_job(job_id, job, description=job.description))
        return True
