"""The Host, VM and network verbs, declared from their handlers, describe the same wire.

`data/schema_host_vm_network.json` is what `hostvisor schema` printed for these verbs
before they were declared from typed handler signatures (issue 11): same methods,
params (names, types, order, defaults, docs), results, errors and timeouts.
Issue 14 moved VM.migrate out, to the migration verbs (api/rpc/migration_verbs.py).
Issue 15 moved VM.snapshot and the hotplug verbs out, to api/rpc/snapshot_verbs.py and
api/rpc/hotplug_verbs.py; VM.shutdown gained VDSM's `force` (and `delay` as the Engine
sends it, a string), and Host.ping confirms connectivity at most once a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hostvisor.api.rpc.host_verbs import HostApi, host_verbs
from hostvisor.api.rpc.network_verbs import NetworkApi, network_verbs
from hostvisor.api.rpc.verbs import VerbTable
from hostvisor.api.rpc.vm_verbs import VmApi, vm_verbs
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry

pytestmark = pytest.mark.unit

BEFORE = Path(__file__).parent / "data" / "schema_host_vm_network.json"


def _no_child(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("nothing is started while describing")


def test_the_schema_of_the_converted_verbs_is_unchanged():
    registry = Registry()
    vms = VmApi(registry, _no_child, operation_timeout=Config().vm_operation_timeout)
    table = VerbTable.of(
        host_verbs(HostApi(registry)), network_verbs(NetworkApi(registry)), vm_verbs(vms)
    )
    now = json.loads(json.dumps(table.schema(), sort_keys=True, default=str))

    assert now == json.loads(BEFORE.read_text())


def test_the_operation_timeout_comes_from_the_api():
    vms = VmApi(Registry(), _no_child, operation_timeout=4.5)
    timeouts = {v.method: v.timeout for v in vm_verbs(vms)}
    assert timeouts["VM.pause"] == timeouts["VM.shutdown"] == 4.5
    assert timeouts["VM.destroy"] == 60.0
