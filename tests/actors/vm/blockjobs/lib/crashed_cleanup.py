"""Leave a guest as an agent killed mid-cleanup of an active-layer merge leaves it.

    python crashed_cleanup.py EMBED_ROOT VM_ID JOB_JSON

Run while the agent is dead, in a process of its own (libvirt binds a process to one
embed root): on the agent's embedded QEMU, start the active commit the job records,
wait until it is ready to pivot, and record the job in the domain's metadata in state
CLEANUP with pivot due — the state in which the agent had marked the leaf ILLEGAL and
was about to pivot. (The caller marks the leaf ILLEGAL on storage.)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import libvirt

from hostvisor.actors.hypervisor.connection import embed_uri, open_connection
from hostvisor.actors.vm.blockjob_merge import (
    CLEANUP,
    MergeJob,
    live_chain,
    mirror_ready,
    target_of,
    write_metadata,
)


def main() -> None:
    root, vm_id, record = sys.argv[1:4]
    job = MergeJob.from_dict(json.loads(record))
    domain = open_connection(embed_uri(Path(root))).lookupByUUIDString(vm_id)
    layers = {layer.volume: layer for layer in live_chain(domain.XMLDesc(0), job.drive) or []}
    flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | libvirt.VIR_DOMAIN_BLOCK_COMMIT_RELATIVE
    base, top = target_of(layers[job.base], job.drive), target_of(layers[job.top], job.drive)
    domain.blockCommit(job.drive, base, top, 0, flags)
    deadline = time.monotonic() + 60
    while not mirror_ready(domain.XMLDesc(0), job.drive):
        if time.monotonic() > deadline:
            raise SystemExit("the commit never became ready")
        time.sleep(0.05)
    job.state, job.pivot = CLEANUP, True
    write_metadata(domain, {job.id: job}, {})


if __name__ == "__main__":
    main()
