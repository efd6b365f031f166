"""The storage verbs, declared from their handlers' signatures, describe the same wire.

`data/schema_storage.json` is what the storage verbs' schema was when each was
declared by hand (before issue 11's typed handlers): same methods, params (names,
types, order, defaults, docs), results, errors and timeouts. Only params that had
no doc gained one. Issue 13 changed it on purpose, to the Engine's wire: the verbs
StorageDomain.getFileStats, StoragePool.{destroy, reconstructMaster, switchMaster,
upgrade, getBackedUpVmsInfo, updateVMs, removeVM}, Image.deleteVolumes and Task.revert;
StoragePool.create's `name`; Image.teardown's `leafVolID`; SDM.copy_data's `legal`;
the filters of Host.getStorageDomains. Issue 15: Host.getJobs lists the VMs' virt jobs
(snapshots) too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hostvisor.api.rpc.domain_verbs import domain_verbs
from hostvisor.api.rpc.pool_verbs import pool_verbs
from hostvisor.api.rpc.sdm_verbs import sdm_verbs
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.task_verbs import TaskApi, task_verbs
from hostvisor.api.rpc.verbs import VerbTable
from hostvisor.api.rpc.volume_verbs import volume_verbs
from hostvisor.supervision.registry import Registry

pytestmark = pytest.mark.unit

BEFORE = Path(__file__).parent / "data" / "schema_storage.json"


def _undocumented_filled(before: dict[str, Any], now: dict[str, Any]) -> None:
    """Copy into `before` the docs `now` gave to params that had none."""
    for method, verb in before.items():
        for old, new in zip(verb["params"], now[method]["params"], strict=False):
            if old["doc"] == "" and new["name"] == old["name"]:
                old["doc"] = new["doc"]


def test_the_schema_of_the_storage_verbs_is_unchanged():
    registry = Registry()
    api = StorageApi(registry)
    table = VerbTable.of(
        pool_verbs(api),
        domain_verbs(api),
        volume_verbs(api),
        sdm_verbs(api),
        task_verbs(TaskApi(registry)),
    )
    now = json.loads(json.dumps(table.schema(), sort_keys=True, default=str))
    before = json.loads(BEFORE.read_text())
    _undocumented_filled(before, now)

    assert now == before
