"""Typed calls of a VM actor's block-job methods (`BlockJobs`).

The only place their names are strings, next to the actor. Each returns at once
with a future of the answer; `merge`'s answer is itself a future that settles once
libvirt's commit runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.vm.blockjob_merge import Chains


def merge(  # noqa: PLR0913 - VM.merge's own params
    ref: pykka.ActorRef[Any],
    drive: Mapping[str, Any],
    *,
    base: str,
    top: str,
    bandwidth: int | str,
    job_id: str | None,
    chains: Chains,
) -> pykka.Future[Any]:
    """See `BlockJobs.merge` (a future of a future: the commit started)."""
    return call(ref, "merge", drive, base, top, bandwidth, job_id, chains)


def disk_replicate_start(
    ref: pykka.ActorRef[Any], src: Mapping[str, Any], dst: Mapping[str, Any], chains: Chains
) -> pykka.Future[Any]:
    """See `BlockJobs.disk_replicate_start` (a future of a future)."""
    return call(ref, "disk_replicate_start", src, dst, chains)


def disk_replicate_finish(
    ref: pykka.ActorRef[Any], src: Mapping[str, Any], dst: Mapping[str, Any], chains: Chains
) -> pykka.Future[Any]:
    """See `BlockJobs.disk_replicate_finish` (a future of a future)."""
    return call(ref, "disk_replicate_finish", src, dst, chains)
