"""VM snapshots, freeze/thaw and hibernation verbs.

A seam wired into the verb table (`api/embedded.py`); filled in by its owner.
"""

from __future__ import annotations

from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi


def snapshot_verbs(vms: VmApi, storage: StorageApi) -> list[Verb]:
    """Return these verbs over the VM and storage APIs."""
    del vms, storage
    return []
