"""The Host and VM verbs take what ovirt-engine sends and answer what its parsers read.

`data/engine_vds_calls.json` records, for each Host.*/VM.* call the Engine makes through
`JsonRpcVdsServer` (storage-family Host verbs excepted: `test_engine_irs_wire.py`), the
params it sends with their JSON types, where it files the answer, and every field its
parsers read with the way they read it. The Engine's readers are lenient in some ways and
brittle in others, so a field's spec names the reader, not a JSON type:

    int       assignIntValue: a JSON int (int32), or a string whose integer part parses
    long      assignLongValue / assignBigIntegerValue: a JSON int, or a numeric string
    double    assignDoubleValue: a JSON float, or a numeric string (a JSON int reads as null)
    str       a (String) cast or assignStringValue: a JSON string
    bool      assignBoolValue: a JSON boolean, or "true"/"false" (any case)
    Bool      a (Boolean) cast: a JSON boolean
    Integer   an (Integer) cast: a JSON int (int32)
    inttext   Integer.parseInt(value.toString()): a JSON int, or a string of digits
    longtext  Long.parseLong(value.toString()): the same, for a long
    doubletext Double.parseDouble(value.toString()): a JSON number, or a numeric string
    doublestr Double.parseDouble((String) value): a numeric JSON string
    longstr   Long.valueOf((String) value): a string of digits
    booltext  Boolean.parseBoolean(value.toString()): a JSON boolean, or a string
    text      value.toString(): anything but null
    strs      assignStringArrayValue: a JSON array (each element's toString)
    datetime  assignDatetimeValue: "yyyy-MM-ddTHH:mm:ss zone"
    vmstatus  convertToVmStatus((String) value): one of VDSM's status strings
    map, list, any
    {"fields": {...}, "required": [...]}   a map with those fields (absent ones are skipped)
    {"values": spec}                       a map whose every value is `spec`
    {"items": spec}                        a list whose every element is `spec`
    "@name"                                the shape `name` of the file's "shapes"

The unit tests check our verb table against those params (every param the Engine sends
is declared and takes the Engine's JSON type; nothing is required that the Engine may
leave out; a wrong type is refused), and the pure builders of VM stats (sampled figures,
the live XML's NICs and disks, guest-agent facts) against the result specs. The libvirt
tests play the Engine on an embedded host with a LOCALFS data center made the Engine's
way and one guest from an Engine-style domain XML (a disk by storage ids, VNC): each
read verb, a few verbs with the data file's example params, and the `VM_status`
events, every answer checked against the result specs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    RAW,
    DataCenter,
    MiB,
    data_center_host,
    engine_vm_xml,
    new_id,
    succeeded,
    write_halting_boot_sector,
)
from harness.guests import StatusEvents
from harness.waiting import wait_for
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import guestagent, reported
from hostvisor.actors.vm.migration import MigrationRequest
from hostvisor.actors.vm.stats import DriveInfo, NicInfo, VmSample, vm_stats
from hostvisor.api.embedded import offline_verb_table
from hostvisor.api.rpc.verbs import Verb

DATA = json.loads((Path(__file__).parent / "data" / "engine_vds_calls.json").read_text())
SERVED: dict[str, Any] = DATA["served"]
SHAPES: dict[str, Any] = DATA["shapes"]

INT32 = range(-(2**31), 2**31)
VM_STATUSES = {
    "Migration Source", "Migration Destination", "WaitForLaunch", "Powering up", "Up",
    "Powering down", "Paused", "Down", "Saving State", "Restoring state", "Suspended",
    "RebootInProgress", "Unknown",
}  # fmt: skip
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
_DIGITS = re.compile(r"[+-]?\d+")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d \S+")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_part(value: str) -> bool:
    """What assignIntValue/assignLongValue parse: the part before the first dot."""
    return bool(_DIGITS.fullmatch(value.split(".", 1)[0]))


READERS: dict[str, Any] = {
    "int": lambda v: (_is_int(v) and v in INT32) or (isinstance(v, str) and _int_part(v)),
    "long": lambda v: _is_int(v) or (isinstance(v, str) and _int_part(v)),
    "double": lambda v: isinstance(v, float) or (isinstance(v, str) and _NUMBER.fullmatch(v)),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: (
        isinstance(v, bool) or (isinstance(v, str) and v.lower() in {"true", "false"})
    ),
    "Bool": lambda v: isinstance(v, bool),
    "Integer": lambda v: _is_int(v) and v in INT32,
    "inttext": lambda v: (
        (_is_int(v) and v in INT32) or (isinstance(v, str) and _DIGITS.fullmatch(v))
    ),
    "longtext": lambda v: _is_int(v) or (isinstance(v, str) and _DIGITS.fullmatch(v)),
    "doubletext": lambda v: (
        (_is_int(v) or isinstance(v, float)) or (isinstance(v, str) and _NUMBER.fullmatch(v))
    ),
    "doublestr": lambda v: isinstance(v, str) and _NUMBER.fullmatch(v),
    "longstr": lambda v: isinstance(v, str) and _DIGITS.fullmatch(v),
    "booltext": lambda v: isinstance(v, bool | str),
    "text": lambda v: v is not None,
    "strs": lambda v: isinstance(v, list) and None not in v,
    "datetime": lambda v: isinstance(v, str) and _DATETIME.fullmatch(v),
    "vmstatus": lambda v: v in VM_STATUSES,
    "map": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "any": lambda _v: True,
}


def resolved(spec: Any) -> Any:
    """`spec` with a "@shape" reference (and its "extends") replaced by the shape."""
    if isinstance(spec, str) and spec.startswith("@"):
        shape = SHAPES[spec[1:]]
        if "extends" in shape:
            base = resolved("@" + shape["extends"])
            return {
                "required": shape.get("required", base.get("required", [])),
                "fields": {**base["fields"], **shape["fields"]},
            }
        return shape
    return spec


def engine_reads(spec: Any, value: Any, path: str = "") -> list[str]:
    """Return where `value` is not what the Engine's reader `spec` can read (empty: all is)."""
    spec = resolved(spec)
    if isinstance(spec, str):
        return [] if READERS[spec](value) else [f"{path or '.'}: {value!r} is not {spec}"]
    if "items" in spec:
        if not isinstance(value, list):
            return [f"{path or '.'}: {value!r} is not a list"]
        return [
            e
            for i, item in enumerate(value)
            for e in engine_reads(spec["items"], item, f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path or '.'}: {value!r} is not a map"]
    if "values" in spec:
        return [
            e
            for k, item in value.items()
            for e in engine_reads(spec["values"], item, f"{path}.{k}")
        ]
    errors = [f"{path}.{name}: missing" for name in spec.get("required", ()) if name not in value]
    for name, field in spec.get("fields", {}).items():
        if name in value:
            errors.extend(engine_reads(field, value[name], f"{path}.{name}"))
    return errors


# -- the checker itself -------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("reader", "good", "bad"),
    [
        ("int", [3, "3", "3.7", "-1"], [3.0, 2**40, True, "x", None]),
        ("long", [2**40, "12", "12.0"], [1.5, "", False]),
        ("double", [1.5, "1.50", "7"], [7, True, None]),
        ("Integer", [0, -1], ["0", 1.0, 2**31]),
        ("inttext", [5, "5", "+5"], ["5.0", 5.0]),
        ("doublestr", ["0.5", "3"], [0.5, 3]),
        ("longstr", ["1073741824"], [1073741824, "1.5"]),
        ("Bool", [False], ["false", 0]),
        ("bool", [True, "False"], ["yes", 1]),
        ("strs", [["4.7"], [1]], ["4.7", [None]]),
        ("datetime", ["2026-12-07T04:28:46 GMT"], ["2026-12-07", 17]),
        ("vmstatus", ["Up", "Powering up"], ["up", "Running"]),
    ],
)
def test_each_reader_takes_what_the_engine_parses(reader, good, bad):
    assert all(READERS[reader](value) for value in good)
    assert not any(READERS[reader](value) for value in bad)


@pytest.mark.unit
def test_the_checker_names_each_mismatch_by_path():
    spec = {"required": ["a"], "fields": {"n": {"values": {"fields": {"x": "double"}}}}}
    assert engine_reads(spec, {"a": 1, "n": {"eth0": {"x": "1.0"}}}) == []
    assert engine_reads(spec, {"n": {"eth0": {"x": 1}}, "z": 0}) == [
        ".a: missing",
        ".n.eth0.x: 1 is not double",
    ]
    assert engine_reads({"items": "str"}, {"k": "v"}) == [".: {'k': 'v'} is not a list"]


# -- figures no unit-level guest shows: NICs, disk latencies, guest-agent facts ---------------


def _fields_only(shape: str) -> dict[str, Any]:
    """The shape's field specs with nothing required (for a part of a VM's stats)."""
    return {"fields": resolved(shape)["fields"]}


def _record(scale: int) -> dict[str, Any]:
    """A libvirt bulk-stats record of a VM with one NIC, one disk and a balloon."""
    return {
        "cpu.time": 3_000_000_000 * scale, "cpu.user": 1_000_000_000 * scale,
        "cpu.system": 500_000_000 * scale, "vcpu.current": 2,
        "balloon.current": 1_048_576, "balloon.maximum": 1_048_576,
        "balloon.available": 1_000_000, "balloon.unused": 400_000 + scale,
        "balloon.swap_in": scale, "balloon.swap_out": 0,
        "balloon.major_fault": scale, "balloon.minor_fault": 10 * scale,
        "net.count": 1, "net.0.name": "vnet0", "net.0.rx.bytes": 9_000 * scale,
        "net.0.rx.pkts": 90, "net.0.rx.errs": 0, "net.0.rx.drop": 1,
        "net.0.tx.bytes": 7_000 * scale, "net.0.tx.pkts": 70, "net.0.tx.errs": 0,
        "net.0.tx.drop": 0, "block.count": 1, "block.0.name": "vda",
        "block.0.rd.reqs": 10 * scale, "block.0.rd.bytes": 40_960 * scale,
        "block.0.rd.times": 5_000_000 * scale, "block.0.wr.reqs": 4 * scale,
        "block.0.wr.bytes": 16_384 * scale, "block.0.wr.times": 9_000_000 * scale,
        "block.0.fl.reqs": scale, "block.0.fl.times": 1_000_000 * scale,
        "block.0.physical": 2**31 + 5, "block.0.capacity": 2**34,
    }  # fmt: skip


@pytest.mark.unit
def test_sampled_figures_are_what_the_engine_reads():
    image = str(uuid.uuid4())
    figures = vm_stats(
        VmSample(taken_at=12.0, record=_record(2)),
        VmSample(taken_at=10.0, record=_record(1)),
        nics={"vnet0": NicInfo(mac="56:6f:1a:2b:3c:4d", model="virtio")},
        drives={"vda": DriveInfo(image_id=image, apparent_size=2**34, true_size=2**31 + 5)},
    )
    assert {"network", "disks", "balloonInfo", "memoryStats"} <= set(figures)
    assert engine_reads(_fields_only("@vm_stats"), figures) == []
    assert figures["disks"]["vda"]["imageID"] == image


ENGINE_DEVICES_XML = """<domain type='kvm'>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
      <ovirt-vm:device devtype="disk" name="vda"><ovirt-vm:imageID>{img}</ovirt-vm:imageID>
        <ovirt-vm:volumeID>{vol}</ovirt-vm:volumeID></ovirt-vm:device>
      <ovirt-vm:device devtype="disk" name="sda"><ovirt-vm:GUID>{lun}</ovirt-vm:GUID>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
  <devices>
    <disk type='file' device='disk'><source file='/rhev/x'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='lun'><source dev='/dev/mapper/{lun}'/><target dev='sda'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
    <interface type='bridge'><mac address='56:6f:1a:2b:3c:4d'/><model type='virtio'/>
      <source bridge='ovirtmgmt'/><target dev='vnet0'/></interface>
    <interface type='bridge'><mac address='56:6f:1a:2b:3c:4e'/><model type='rtl8139'/>
      <source bridge='ovirtmgmt'/><target dev='vnet1'/></interface>
  </devices>
</domain>"""


@pytest.mark.unit
def test_the_live_xml_names_each_sampled_nic_and_disk_as_the_engine_keys_them():
    img, vol, lun = new_id(), new_id(), "36001405abcdef"
    seen = reported.read(ENGINE_DEVICES_XML.format(img=img, vol=vol, lun=lun))
    record = {
        **_record(1),
        "net.count": 2, "net.1.name": "vnet1", "net.1.rx.bytes": 1, "net.1.tx.bytes": 2,
        "block.count": 3, "block.0.name": "vda", "block.1.name": "sda", "block.2.name": "hdc",
    }  # fmt: skip
    figures = vm_stats(
        VmSample(taken_at=1.0, record=record), None, nics=seen.nics, drives=seen.drives
    )
    assert figures["disks"]["vda"]["imageID"] == img
    assert figures["disks"]["sda"]["lunGUID"] == lun
    assert figures["disks"]["hdc"]["imageID"] == ""  # no image: the Engine skips it
    assert figures["network"]["vnet0"]["macAddr"] == "56:6f:1a:2b:3c:4d"
    assert (figures["network"]["vnet1"]["macAddr"], figures["network"]["vnet1"]["speed"]) == (
        "56:6f:1a:2b:3c:4e",
        "100",
    )
    assert engine_reads(_fields_only("@vm_stats"), figures) == []


@pytest.mark.unit
def test_an_unreadable_xml_names_no_device():
    assert reported.read("<domain").nics == {}
    assert reported.read("<domain><devices><disk/><interface/></devices></domain>").drives == {}


@pytest.mark.unit
def test_guest_agent_facts_are_what_the_engine_reads():
    info = {
        "hostname": "guest.example.com", "os.id": "fedora", "os.name": "Fedora Linux",
        "os.pretty-name": "Fedora Linux 39", "os.version-id": "39", "os.variant": "Server",
        "os.kernel-release": "6.5.6-300.fc39.x86_64", "os.machine": "x86_64",
        "timezone.name": "CET", "timezone.offset": 3600, "user.count": 1,
        "user.0.name": "alice", "user.0.login-time": 1700000000.5, "fs.count": 1,
        "fs.0.mountpoint": "/", "fs.0.fstype": "xfs", "fs.0.total-bytes": 10_737_418_240,
        "fs.0.used-bytes": 1_073_741_824, "fs.0.disk.count": 1, "disk.count": 1,
        "disk.0.name": "/dev/vda", "disk.0.serial": "0a1b2c3d",
    }  # fmt: skip
    interfaces = {
        "eth0": {
            "hwaddr": "56:6f:1a:2b:3c:4d",
            "addrs": [
                {"type": 0, "addr": "192.0.2.10", "prefix": 24},
                {"type": 1, "addr": "2001:db8::10", "prefix": 64},
            ],
        }
    }
    facts = guestagent.translate(info, interfaces, agent_version="8.1.3", online_cpus="0-1")
    fields = dict(facts.fields)
    assert {"guestOsInfo", "guestTimezone", "netIfaces", "guestFQDN", "appsList"} <= set(fields)
    assert engine_reads(_fields_only("@vm_stats"), fields) == []
    assert fields["guestCPUCount"] == 2


# -- the verb table against the Engine's params --------------------------------------------

TABLE = offline_verb_table()
SAMPLES: dict[str, Any] = {"string": "x", "integer": 1, "boolean": True, "object": {}, "array": []}


def _example(value: Any, vm_id: str | None = None) -> Any:
    """The data file's example with its placeholders (a UUID, a VM id, XML) filled in."""
    if isinstance(value, dict):
        return {key: _example(item, vm_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_example(item, vm_id) for item in value]
    if isinstance(value, str) and "@vm_id" in value:
        return value.replace("@vm_id", vm_id or str(uuid.uuid4()))
    if value == "@uuid":
        return str(uuid.uuid4())
    if value == "@xml":
        return "<domain/>"
    return value


def _verb(method: str) -> Verb:
    verb = TABLE.get(method)
    assert verb is not None, f"{method} is in the Engine's calls we serve but not in our table"
    return verb


@pytest.mark.unit
@pytest.mark.parametrize("method", sorted(SERVED))
def test_the_verb_takes_every_param_the_engine_sends(method):
    verb = _verb(method)
    ours = {param.name: param for param in verb.params}
    engine = SERVED[method]["params"]
    assert set(engine) <= set(ours), f"undeclared: {sorted(set(engine) - set(ours))}"
    for name, sent in engine.items():
        param = ours[name]
        for json_type in sent["json"]:
            sample = sent["example"] if param.choices else SAMPLES[json_type]
            param.check(_example(sample), method)  # raises InvalidArgument when refused
        param.check(_example(sent["example"]), method)
    verb.bind({name: _example(sent["example"]) for name, sent in engine.items()})
    always = {name for name, sent in engine.items() if not sent.get("optional")}
    needed = {param.name for param in verb.params if param.required}
    assert needed <= always, (
        f"required here, optional or never sent by the Engine: {needed - always}"
    )


@pytest.mark.unit
@pytest.mark.parametrize("method", sorted(m for m in SERVED if SERVED[m]["params"]))
def test_a_param_of_the_wrong_type_is_refused(method):
    verb = _verb(method)
    name, sent = next(iter(SERVED[method]["params"].items()))
    param = next(p for p in verb.params if p.name == name)
    wrong = [value for kind, value in SAMPLES.items() if kind not in sent["json"]]
    refused = []
    for value in wrong:
        try:
            param.check(value, method)
        except InvalidArgument:
            refused.append(value)
    if param.kind.value != "any":
        assert refused, f"{method}.{name} takes anything"


@pytest.mark.unit
def test_every_host_and_vm_verb_we_serve_is_audited():
    ours = {m for m in TABLE.verbs if m.split(".", 1)[0] in {"Host", "VM"}}
    audited = {*SERVED, *DATA["storage_family"], *DATA["not_called_by_engine"]}
    assert sorted(ours - audited) == [], "a new verb: record what the Engine sends and reads"
    assert sorted(audited - ours) == [], "recorded as served, but not in our table"


@pytest.mark.unit
def test_the_engines_migration_params_are_understood():
    params = _example(SERVED["VM.migrate"]["params"]["params"]["example"])
    request = MigrationRequest.from_params(params["vmId"], params)
    assert (request.dst_host, request.dst_port) == ("192.0.2.2", 54321)
    assert (request.tunneled, request.abort_on_error, request.encrypted) == (False, True, False)
    assert (request.auto_converge, request.zerocopy, request.enable_guest_events) == (
        True,
        True,
        True,
    )
    assert (request.max_bandwidth, request.parallel) == (52, 4)
    assert (request.incoming_limit, request.outgoing_limit) == (2, 2)
    assert [step.limit for step in request.schedule.stalling] == [1, -1]


@pytest.mark.unit
def test_the_engine_calls_we_do_not_serve_are_indeed_not_served():
    served = [method for method in DATA["not_served"] if TABLE.get(method) is not None]
    assert served == [], "served now: move them to 'served' with their params and results"


# -- the answers, on an embedded host with a guest -----------------------------------------

VNC = (
    "<graphics type='vnc' port='-1' autoport='yes' passwd='*****'"
    " passwdValidTo='1970-01-01T00:00:01'><listen type='address' address='127.0.0.1'/></graphics>"
)
"""VNC as LibvirtVmXmlBuilder.writeGraphics writes it: a password that has expired already."""


@pytest.fixture(scope="module")
def engine_dc(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path
) -> Iterator[tuple[Any, DataCenter]]:
    """A host with a LOCALFS data center made the Engine's way, and its client."""
    with data_center_host(tmp_path_factory, embed_root) as (_host, cli, dc):
        yield cli, dc


@pytest.fixture(scope="module")
def answers(engine_dc, accelerator) -> dict[str, Any]:
    """What the Engine's calls get from a host that runs one Engine-style guest with VNC.

    The guest's disk is a volume of the data center, named by storage ids in the
    metadata (`engine_vm_xml`); its stats then carry the disk's imageID, and the host's
    stats the domain's health.
    """
    cli, dc = engine_dc
    img, vol, vm_id = new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=RAW, size=MiB))
    write_halting_boot_sector(dc.prepare(cli, img, vol))
    xml = engine_vm_xml(
        name="engine-wire", vm_id=vm_id, dc=dc, img=img, vol=vol, kind=accelerator.domain_type
    )
    xml = xml.replace("<memballoon", VNC + "\n    <memballoon")
    got: dict[str, Any] = {"image": img, "domain": dc.sd}
    events = StatusEvents(cli)
    got["VM.create"] = cli.VM.create(vmID=vm_id, vmParams={"vmId": vm_id, "xml": xml})
    try:
        wait_for(
            lambda: (
                (s := cli.VM.getStats(vmID=vm_id)[0])["status"] == "Up"
                and s.get("cpuActual") == "True"
            ),
            60,
            "the guest Up, sampled twice",
        )
        got["VM.getStats"] = cli.VM.getStats(vmID=vm_id)
        got["Host.getAllVmStats"] = cli.Host.getAllVmStats()
        got["Host.getVMList"] = cli.Host.getVMList(vmList=[], onlyUUID=False)
        got["Host.getVMFullList"] = cli.Host.getVMFullList(vmList=[vm_id])
        got["Host.dumpxmls"] = cli.Host.dumpxmls(vmList=[vm_id])
        got["VM.getMigrationStatus"] = cli.VM.getMigrationStatus(vmID=vm_id)
        got["VM.screenshot"] = cli.VM.screenshot(vmID=vm_id)
        for method in AS_THE_ENGINE_SENDS:  # the data file's example params
            params = _example(SERVED[method]["params"], vm_id)
            got[method] = cli.call(method, {k: v["example"] for k, v in params.items()})
        cli.VM.pause(vmID=vm_id)
        got["VM.cont"] = cli.VM.cont(vmID=vm_id)
        got["Host.getCapabilities"] = cli.Host.getCapabilities()
        got["Host.getStats"] = cli.Host.getStats()
        got["Host.getHardwareInfo"] = cli.Host.getHardwareInfo()
        got["Host.hostdevListByCaps"] = cli.Host.hostdevListByCaps()
        got["Host.getLldp"] = cli.Host.getLldp(filter={"devices": []})
        got["Host.ping2"] = cli.Host.ping2()
        got["Host.confirmConnectivity"] = cli.Host.confirmConnectivity()
        got["VM.shutdown"] = cli.VM.shutdown(vmID=vm_id, delay="0", message="", reboot=False)
        cli.VM.shutdown(vmID=vm_id, timeout=0.5, force=True)  # the guest ignores ACPI
        got["VM_status"] = events.until(vm_id, "Down", timeout=60)
        got["VM.getStats Down"] = cli.VM.getStats(vmID=vm_id)
    finally:
        got["VM.destroy"] = cli.VM.destroy(vmID=vm_id)
    return got


AS_THE_ENGINE_SENDS = [
    "VM.updateDevice",  # SetVmTicketVDSCommand's params, on VNC
    "VM.setDestroyOnReboot",
    "Host.setMOMPolicyParameters",  # SetMOMPolicyParametersVDSCommand's three booleans
]
"""Verbs played with the data file's example params, on the running guest, in this order.

Not VM.reset: the reboot event of a reset would destroy the VM once setDestroyOnReboot
has been called (as in VDSM), whichever comes first on the wire."""
ANSWERED = [*AS_THE_ENGINE_SENDS,
    "VM.create", "VM.getStats", "Host.getAllVmStats", "Host.getVMList", "Host.getVMFullList",
    "Host.dumpxmls", "VM.getMigrationStatus", "VM.screenshot", "VM.cont", "Host.getCapabilities",
    "Host.getStats", "Host.getHardwareInfo", "Host.hostdevListByCaps", "Host.getLldp",
    "Host.ping2", "Host.confirmConnectivity", "VM.shutdown", "VM.destroy",
]  # fmt: skip


@pytest.mark.kvm
@pytest.mark.libvirt
@pytest.mark.parametrize("method", ANSWERED)
def test_the_answer_carries_what_the_engine_reads(answers, method):
    call = SERVED[method]
    answer = answers[method]
    if call.get("response_key") == "*" or call["result"] == "map":
        assert isinstance(answer, dict), "the Engine takes this answer as a map"
    if call.get("response_type") == "array":
        assert isinstance(answer, list), "the Engine decodes this answer as an array"
    assert engine_reads(call["result"], answer) == []


@pytest.mark.kvm
@pytest.mark.libvirt
def test_status_events_and_a_down_vm_carry_what_the_engine_reads(answers):
    # EventVmStatsRefresher: updateVMDynamicData and getVmDevicesHash on each VM's entry.
    assert [e for entry in answers["VM_status"] for e in engine_reads("@vm_dynamic", entry)] == []
    assert all(isinstance(entry.get("hash", ""), str) for entry in answers["VM_status"])
    [down] = answers["VM.getStats Down"]
    assert down["status"] == "Down"
    assert engine_reads(SERVED["VM.getStats"]["result"], [down]) == []
    assert {"exitCode", "exitReason", "exitMessage"} <= set(down)


@pytest.mark.kvm
@pytest.mark.libvirt
def test_the_vm_reports_what_the_engine_monitors(answers):
    [stats] = answers["VM.getStats"]
    assert stats["hash"], "without a devices hash the Engine never asks dumpxmls again"
    [vnc] = stats["displayInfo"]
    assert vnc["type"] == "vnc"
    assert int(vnc["port"]) > 0
    assert any(entry["vmId"] == stats["vmId"] for entry in answers["Host.getAllVmStats"])
    assert list(answers["Host.dumpxmls"]) == [stats["vmId"]]
    assert answers["VM.screenshot"]["data"]
    assert stats["disks"]["vda"]["imageID"] == answers["image"]  # DiskImageDynamic's id
    domain = answers["Host.getStats"]["storageDomains"][answers["domain"]]
    assert domain["valid"] is True
    assert domain["code"] == 0
