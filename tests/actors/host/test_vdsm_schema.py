"""getCapabilities, getStats and VM stats have the field types VDSM's schema gives them.

The facts below are read from VDSM's `lib/vdsm/api/vdsm-api.yml` (types
`VdsmCapabilities`, `HostStats`, `RunningVmStats`, `ExitedVmStats`) and checked the way
its validator (`lib/vdsm/api/vdsmapi.py`) checks them: `uint` is an int >= 0, a map's
keys have their own type, an object's required fields must be there. Where VDSM's own
code sends something else than its schema, the fact follows the code and says so
(`CODE:`), because that is what the Engine has always received.

Capabilities and host stats are checked as the agent builds them (before JSON, as
VDSM's validator sees them: a `uint` map key is an int there); VM stats as a client
receives them, from a host running a real guest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.guests import Guests
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.host.caps import capabilities
from hostvisor.actors.host.stats import HostStatsSampler

# -- the types, and a checker that applies them ------------------------------------------


@dataclass(frozen=True)
class Str:
    """A string; `of` names what VDSM says it holds ("uint", "boolean", "float"...)."""

    of: str = ""


@dataclass(frozen=True)
class Map:
    key: Any
    value: Any


@dataclass(frozen=True)
class Obj:
    required: dict[str, Any]
    optional: dict[str, Any]


@dataclass(frozen=True)
class OneOf:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class AnyOf:
    specs: tuple[Any, ...]


def _ok(kind: str, value: Any) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "uint": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "boolean": lambda v: isinstance(v, bool),
        "float": lambda v: isinstance(v, float),
        "long": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    return checks[kind](value)


def _str_holds(of: str, value: str) -> bool:
    """Whether a string field holds what its `datatype` says (VDSM's validator does not
    check this; the Engine's parsers do)."""
    try:
        if of == "uint":
            return int(value) >= 0
        if of == "int":
            int(value)
        elif of == "float":
            float(value)
        elif of == "boolean":
            return value.lower() in ("true", "false")
    except ValueError:
        return False
    return True


def check(spec: Any, value: Any, path: str = "") -> list[str]:
    """Every place where `value` breaks `spec`, as "path: what"."""
    if isinstance(spec, str):
        return [] if _ok(spec, value) else [f"{path}: {value!r} is not {spec}"]
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        return [p for i, item in enumerate(value) for p in check(spec[0], item, f"{path}[{i}]")]
    return _CHECKS[type(spec)](spec, value, path)


def _check_str(spec: Str, value: Any, path: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{path}: {value!r} is not a string"]
    if spec.of and not _str_holds(spec.of, value):
        return [f"{path}: {value!r} does not hold a {spec.of}"]
    return []


def _check_map(spec: Map, value: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: {value!r} is not a map"]
    problems = []
    for key, item in value.items():
        problems += check(spec.key, key, f"{path}<key {key!r}>")
        problems += check(spec.value, item, f"{path}.{key}")
    return problems


def _check_any_of(spec: AnyOf, value: Any, path: str) -> list[str]:
    if all(check(one, value, path) for one in spec.specs):
        return [f"{path}: {value!r} matches none of {spec.specs}"]
    return []


def _check_one_of(spec: OneOf, value: Any, path: str) -> list[str]:
    return [] if value in spec.values else [f"{path}: {value!r} is not one of {spec.values}"]


def _check_obj(spec: Obj, value: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: {value!r} is not an object"]
    problems = []
    for name, field in spec.required.items():
        if name not in value:
            problems.append(f"{path}.{name}: missing")
        else:
            problems += check(field, value[name], f"{path}.{name}")
    for name, field in spec.optional.items():
        if value.get(name) is not None:
            problems += check(field, value[name], f"{path}.{name}")
    return problems


_CHECKS: dict[type, Any] = {
    Str: _check_str,
    Map: _check_map,
    AnyOf: _check_any_of,
    OneOf: _check_one_of,
    Obj: _check_obj,
}


# -- facts: VdsmCapabilities ------------------------------------------------------------

NUMA_NODE = Obj(
    required={
        "cpus": ["uint"],
        "totalMemory": Str("uint"),
        # NumaNode.hugepages: a map keyed by the page size in KiB, `uint` keys (VDSM's
        # numa.pages_by_cell uses ints; JSON turns them into strings on the wire).
        "hugepages": Map("uint", Obj(required={"totalPages": Str("uint")}, optional={})),
    },
    optional={},
)
CAPABILITIES = Obj(
    required={
        "cpuCores": Str("uint"),
        "cpuThreads": Str("uint"),
        "cpuSockets": Str("uint"),
        "onlineCpus": Str(),
        "cpuSpeed": Str("float"),
        "cpuModel": Str(),
        "cpuFlags": Str(),
        "kvmEnabled": Str("boolean"),
        "memSize": Str("uint"),
        "reservedMem": Str("uint"),
        "guestOverhead": Str("uint"),
        "numaNodes": Map("string", NUMA_NODE),
        "numaNodeDistance": Map("string", ["uint"]),
        "autoNumaBalancing": OneOf((0, 1, 2)),
        "emulatedMachines": ["string"],
        "vmTypes": ["string"],
        "clusterLevels": ["string"],
        "supportedENGINEs": ["string"],
        "software_version": Str(),
        "software_revision": Str(),
        "version_name": Str(),
        "packages2": Map("string", Obj(required={"version": Str(), "release": Str()}, optional={})),
        "operatingSystem": Obj(
            required={"name": Str(), "version": Str(), "release": Str(), "pretty_name": Str()},
            optional={},
        ),
        "uuid": Str(),
        "kdumpStatus": "int",
        "HBAInventory": Obj(required={"iSCSI": [Obj({"InitiatorName": Str()}, {})]}, optional={}),
        "ISCSIInitiatorName": Str(),
        "additionalFeatures": ["string"],
        "hooks": Map("string", Map("string", Obj({}, {}))),
        "netConfigDirty": Str("boolean"),
        "liveSnapshot": Str("boolean"),
        "liveMerge": Str("boolean"),
        "rngSources": ["string"],
        "supportsIPv6": "boolean",
        "nameservers": ["string"],
        # CODE: the schema says a string holding a boolean; VDSM's caps._isVncEncrypted
        # sends a JSON boolean.
        "vncEncrypted": "boolean",
    },
    optional={
        "hugepages": ["int"],
        "kernelArgs": Str(),
        "nestedVirtualization": "boolean",
        "hostedEngineDeployed": "boolean",
        "backupEnabled": "boolean",
        "fipsEnabled": "boolean",
        "domain_versions": ["int"],
        "supported_block_size": Map("string", ["int"]),
        "tscFrequency": Str(),
        "tscScaling": "boolean",
        "boot_uuid": Str(),
        "ovnConfigured": "boolean",
        "zerocopy_migrations": "boolean",
        "realtimeKernel": "boolean",
    },
)

# -- facts: HostStats ----------------------------------------------------------------------

HOST_STATS = Obj(
    required={
        "cpuUser": Str("float"),
        "cpuSys": Str("float"),
        "cpuIdle": Str("float"),
        "cpuSysVdsmd": Str("float"),
        "cpuUserVdsmd": Str("float"),
        "cpuLoad": Str("float"),
        "memUsed": Str("uint"),
        "memFree": "int",
        "memShared": "int",
        "swapTotal": "int",
        "swapFree": "int",
        "anonHugePages": Str("uint"),
        "rxDropped": Str("uint"),
        "txDropped": Str("uint"),
        # CODE: "uint" in the schema; VDSM's code sends the float uptime through
        # convertToStr ("%.2f").
        "elapsedTime": Str("float"),
        "dateTime": Str(),
        "thpState": OneOf(("always", "madvise", "never")),
        "ksmState": "boolean",
        "ksmPages": "int",
        "ksmCpu": "uint",
        "ksmMergeAcrossNodes": "boolean",
        "netConfigDirty": Str("boolean"),
        "momStatus": OneOf(("active", "inactive")),
        "vmCount": "int",
        "vmActive": "int",
        "vmMigrating": "int",
        "incomingVmMigrations": "uint",
        "outgoingVmMigrations": "uint",
        "diskStats": Map("string", Obj({"free": Str("uint")}, {})),
        "storageDomains": Map("string", Obj({}, {})),
        "cpuStatistics": Map(
            "string",
            Obj(
                {
                    "nodeIndex": "int",
                    "cpuUser": Str("float"),
                    "cpuSys": Str("float"),
                    "cpuIdle": Str("float"),
                },
                {},
            ),
        ),
        "numaNodeMemFree": Map(
            "string",
            Obj(
                required={"memFree": Str("uint"), "memPercent": "uint"},
                # Required by the schema and sent by VDSM's code (sampling.py:
                # free_pages_by_cell); Hostvisor leaves it out for now (stats.py, H4).
                optional={
                    "hugepages": Map(AnyOf(("uint", Str("uint"))), Obj({"freePages": Str()}, {}))
                },
            ),
        ),
        "haStats": Obj(
            required={
                "configured": "boolean",
                "active": "boolean",
                "score": "int",
                "globalMaintenance": "boolean",
                "localMaintenance": "boolean",
            },
            optional={},
        ),
    },
    optional={
        "haScore": "int",
        "bootTime": Str("uint"),
        # CODE: not in HostStats, but VDSM's host/stats.py sends it (hugepages.state():
        # int keys, the page size in KiB; the same on the wire as "2048").
        "hugepages": Map(AnyOf(("uint", Str("uint"))), Map("string", "int")),
    },
)

# -- facts: RunningVmStats and ExitedVmStats, as a client receives them --------------------

DISPLAY = Obj(
    required={"type": Str(), "port": Str(), "tlsPort": Str(), "ipAddress": Str()}, optional={}
)
RUNNING_VM = Obj(
    required={
        "vmId": Str(),
        "status": OneOf(("Up", "Powering up", "Paused", "Powering down")),
        "statusTime": Str("uint"),
        "vmName": Str(),
        "kvmEnable": Str("boolean"),
        "acpiEnable": Str("boolean"),
        "elapsedTime": Str("uint"),
        "monitorResponse": Str("int"),
        "cpuUser": Str("float"),
        "cpuSys": Str("float"),
        "memUsage": Str("uint"),
        # CODE: the schema says a string holding a uint; VDSM's code sends the RTC
        # offset, which is negative west of UTC, so any int.
        "timeOffset": Str("int"),
        "clientIp": Str(),
        "pauseCode": Str(),
        "displayInfo": [DISPLAY],
        "guestIPs": Str(),
        "guestFQDN": Str(),
        "username": Str(),
        "session": OneOf(("Unknown", "UserLoggedOn", "Locked", "Active", "LoggedOff")),
        "guestCPUCount": "int",
        # CODE: a boolean in the schema; vmstats.translate stringifies it.
        "cpuActual": Str("boolean"),
        # CODE: `pid` and `displayPort` are required by the schema but VDSM's getStats
        # never sends them; nor does Hostvisor.
    },
    optional={
        "vmType": Str(),
        "cpuUsage": Str("uint"),
        "vcpuCount": Str("int"),
        "hash": Str("int"),
        "vmJobs": Map("string", Obj({}, {})),
        "appsList": ["string"],
        "netIfaces": [
            Obj({"name": Str(), "hw": Str(), "inet": ["string"], "inet6": ["string"]}, {})
        ],
        "disksUsage": [Obj({"path": Str(), "total": Str(), "used": Str(), "fs": Str()}, {})],
        "guestOsInfo": Obj(
            {
                "type": Str(),
                "arch": Str(),
                "kernel": Str(),
                "distribution": Str(),
                "version": Str(),
                "codename": Str(),
            },
            {},
        ),
        "guestTimezone": Obj({"offset": "int", "zone": Str()}, {}),
        "balloonInfo": Obj(
            {
                "balloon_max": Str("uint"),
                "balloon_min": Str("uint"),
                "balloon_cur": Str("uint"),
                "balloon_target": Str("uint"),
            },
            {"ballooning_enabled": "boolean"},
        ),
        "memoryStats": Obj({}, {"mem_total": Str("uint"), "mem_free": Str("uint")}),
        "disks": Map(
            "string",
            Obj(
                {
                    "readRate": Str("float"),
                    "writeRate": Str("float"),
                    "readLatency": Str("float"),
                    "writeLatency": Str("float"),
                    "flushLatency": Str("float"),
                    "apparentsize": Str("uint"),
                    "truesize": Str("uint"),
                },
                {"imageID": Str(), "readOps": Str("uint"), "writeOps": Str("uint")},
            ),
        ),
    },
)
EXITED_VM = Obj(
    required={
        "vmId": Str(),
        "status": OneOf(("Down",)),
        "exitCode": OneOf((0, 1)),
        "exitReason": "int",
        "exitMessage": Str(),
    },
    # CODE: an int in the schema; VDSM's code sends its timeOffset string.
    optional={"timeOffset": Str("int")},
)


# -- the checks ---------------------------------------------------------------------------

HOST_UUID = "7c9d6e1a-3f21-4a7e-9b0c-2d4e5f607182"


@pytest.mark.unit
def test_the_checker_applies_vdsms_rules():
    spec = Obj({"n": Map("uint", Str("uint"))}, {"b": "boolean"})
    assert check(spec, {"n": {4: "1"}}) == []
    assert check(spec, {"n": {"4": "x"}, "b": "false"}) == [
        ".n<key '4'>: '4' is not uint",
        ".n.4: 'x' does not hold a uint",
        ".b: 'false' is not boolean",
    ]
    assert check(spec, {}) == [".n: missing"]


@pytest.mark.libvirt
def test_capabilities_have_vdsms_types(qemu_embed):
    caps = capabilities(qemu_embed, host_uuid=HOST_UUID, software_version="0.1.0", containers=False)
    assert check(CAPABILITIES, caps) == []
    assert caps["numaNodes"], "the host has NUMA node 0 at least"


def test_host_stats_have_vdsms_types(tmp_path: Path):
    sampler = HostStatsSampler(state_dir=tmp_path)
    sampler.sample()
    sampler.sample()
    stats = sampler.stats()
    assert check(HOST_STATS, stats) == []


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[Any]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.mark.kvm
@pytest.mark.libvirt
def test_vm_stats_and_events_have_vdsms_types(host, tmp_path_factory, accelerator):
    guests = Guests(tmp_path_factory.mktemp("schema"), accelerator.domain_type)
    vm_id, xml = guests.xml("schema")
    with host.client() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        try:
            running = wait_for(
                lambda: (
                    (s := cli.VM.getStats(vmID=vm_id)[0])["status"] == "Up"
                    and s.get("cpuActual") == "True"
                    and s
                ),
                30,
                "two samples of the VM",
            )
            assert check(RUNNING_VM, running) == []
            [listed] = [s for s in cli.Host.getAllVmStats() if s["vmId"] == vm_id]
            assert check(RUNNING_VM, listed) == []
        finally:
            cli.VM.destroy(vmID=vm_id)
        # destroy removes the VM: its exit is checked on a fresh one shut down.
        vm_id, xml = guests.xml("schema-down")
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        try:
            wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "Up")
            cli.VM.shutdown(vmID=vm_id, timeout=0.5, force=True)
            down = wait_for(
                lambda: (s := cli.VM.getStats(vmID=vm_id)[0])["status"] == "Down" and s, 30, "Down"
            )
            assert check(EXITED_VM, down) == []
        finally:
            cli.VM.destroy(vmID=vm_id)
