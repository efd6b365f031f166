"""The hotplug verbs take the params the Engine sends (JsonRpcVdsServer), in VDSM's order."""

from __future__ import annotations

import pytest

from hostvisor.api.rpc.declare import verbs_of
from hostvisor.api.rpc.hotplug_verbs import HotplugHandlers

pytestmark = pytest.mark.unit

ENGINE_PARAMS = {
    "VM.hotplugDisk": ["vmID", "params"],
    "VM.hotunplugDisk": ["vmID", "params"],
    "VM.hotplugNic": ["vmID", "params"],
    "VM.hotunplugNic": ["vmID", "params"],
    "VM.hotplugMemory": ["vmID", "params"],
    "VM.hotunplugMemory": ["vmID", "params"],
    "VM.setNumberOfCpus": ["vmID", "numberOfCpus", "cpusets"],
    "VM.diskSizeExtend": ["vmID", "driveSpecs", "newSize"],
    "VM.changeCD": ["vmID", "driveSpec"],
    "VM.hotplugLease": ["vmID", "lease"],
    "VM.hotunplugLease": ["vmID", "lease"],
}


def test_each_verb_takes_the_engines_params_and_names_its_error_codes():
    verbs = {verb.method: verb for verb in verbs_of(HotplugHandlers(None, None))}  # type: ignore[arg-type]

    assert {name: [p.name for p in verb.params] for name, verb in verbs.items()} == ENGINE_PARAMS
    codes = {name: {error.code for error in verb.errors} for name, verb in verbs.items()}
    assert {1, 6, 11, 45, 75, 91} <= codes["VM.hotplugDisk"]
    assert {46} <= codes["VM.hotunplugDisk"]
    assert {49} <= codes["VM.hotplugNic"]
    assert {50} <= codes["VM.hotunplugNic"]
    assert {60, 91} <= codes["VM.setNumberOfCpus"]
    assert {70} <= codes["VM.hotplugMemory"]
    assert {85} <= codes["VM.hotunplugMemory"]
    assert {13, 56, 58} <= codes["VM.diskSizeExtend"]
    assert {41, 1630} <= codes["VM.changeCD"]
    assert {1, 6, 51, 75, 86, 91, 100} <= codes["VM.hotplugLease"]
    assert {1, 6, 51, 75, 87, 91} <= codes["VM.hotunplugLease"]
    # Optional where the Engine may leave them out: vmID (inside params too), cpusets.
    required = {name: [p.name for p in verb.params if p.required] for name, verb in verbs.items()}
    assert required["VM.hotplugDisk"] == ["params"]
    assert required["VM.setNumberOfCpus"] == ["vmID", "numberOfCpus"]
    assert required["VM.hotplugLease"] == required["VM.hotunplugLease"] == ["vmID", "lease"]
