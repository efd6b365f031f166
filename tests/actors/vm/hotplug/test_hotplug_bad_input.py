"""Bad input to every hotplug verb answers VDSM's code and changes nothing.

Unknown VMs (1), wrong JSON types (-32602 from the binding, 91 inside params), missing
params (-32602, or VDSM's MissParam 11 for keys inside `params`), a VM that is Down
(6), devices the VM does not have (46, 50, 41, 13, 87 for a lease), what libvirt refuses
(49, 60, 85, 86 for a lease plugged twice), and a lease that cannot be found (100, as
VDSM). The guest is a halting SeaBIOS one: none of these reaches a guest OS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from actors.vm.hotplug.conftest import CDROM, OVIRT_VM, error_of

from harness.engine import RAW, DataCenter, MiB, engine_vm_xml, new_id, succeeded
from harness.engine import write_halting_boot_sector as halting
from harness.guests import StatusEvents
from harness.waiting import wait_for
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.libvirt, pytest.mark.kvm, pytest.mark.slow]

UNKNOWN = "0d4f6b0e-28a4-4c0f-8a43-1f1e0d1b9a77"
NO_VM, MISSING, DOWN, INVALID, PARAMS = 1, 11, 6, 91, -32602
IMAGE_ERR, CHANGE_DISK, UNPLUG_DISK, PLUG_NIC, UNPLUG_NIC = 13, 41, 46, 49, 50
RESIZE, CPUS, UNPLUG_MEM, PREPARE = 58, 60, 85, 1630
PLUG_LEASE, UNPLUG_LEASE, GENERAL = 86, 87, 100


def _start(cli: Client, dc: DataCenter, kind: str, name: str) -> str:
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=RAW, size=MiB))
    halting(dc.prepare(cli, img, vol))
    vm_id = new_id()
    xml = engine_vm_xml(name=name, vm_id=vm_id, dc=dc, img=img, vol=vol, kind=kind)
    events = StatusEvents(cli)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml.replace("</devices>", CDROM + "</devices>")})
    events.until(vm_id, "Up", timeout=60)
    return vm_id


@pytest.fixture(scope="module")
def vm(cli: Client, dc: DataCenter, accelerator: Any) -> Iterator[str]:
    vm_id = _start(cli, dc, accelerator.domain_type, "hotplug-bad")
    yield vm_id
    cli.VM.destroy(vmID=vm_id)


@pytest.fixture(scope="module")
def down(cli: Client, dc: DataCenter, host: EmbeddedHost, accelerator: Any) -> Iterator[str]:
    """A VM whose guest is gone: Down until the Engine destroys it."""
    vm_id = _start(cli, dc, accelerator.domain_type, "hotplug-down")
    host.tree.connection().lookupByUUIDString(vm_id).destroy()
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Down", 30, "Down")
    yield vm_id
    cli.VM.destroy(vmID=vm_id)


def _refused(cli: Client, vm_id: str, cases: dict[str, tuple[Callable[[], Any], int]]) -> None:
    """Each case answers its code; the VM's devices (its hash) and status stay as they were."""
    before = cli.VM.getStats(vmID=vm_id)[0]
    xml = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    for name, (call, code) in cases.items():
        assert error_of(call).code == code, name
    after = cli.VM.getStats(vmID=vm_id)[0]
    assert (after["status"], after.get("hash")) == (before["status"], before.get("hash"))
    assert cli.Host.dumpxmls(vmList=[vm_id])[vm_id] == xml


def _disk_doc(dc: DataCenter, img: str, vol: str) -> str:
    return (
        '<hotplug><devices><disk type="file" device="disk"><target dev="vdb" bus="virtio"/>'
        f'<source file="/guess"/><driver name="qemu" type="raw"/><alias name="ua-{img}"/></disk>'
        f'</devices><metadata xmlns:ovirt-vm="{OVIRT_VM}"><ovirt-vm:vm>'
        f'<ovirt-vm:device devtype="disk" name="vdb"><ovirt-vm:poolID>{dc.sp}</ovirt-vm:poolID>'
        f"<ovirt-vm:domainID>{dc.sd}</ovirt-vm:domainID><ovirt-vm:imageID>{img}"
        f"</ovirt-vm:imageID><ovirt-vm:volumeID>{vol}</ovirt-vm:volumeID></ovirt-vm:device>"
        "</ovirt-vm:vm></metadata></hotplug>"
    )


def _unplug_doc(kind: str, alias: str) -> str:
    return f'<hotunplug><devices><{kind}><alias name="{alias}"/></{kind}></devices></hotunplug>'


def test_hotplug_disk_bad_input(cli: Client, dc: DataCenter, vm: str, down: str):
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=RAW, size=MiB))
    doc = _disk_doc(dc, img, vol)
    plug = cli.VM.hotplugDisk
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: plug(vmID=UNKNOWN, params={"vmId": UNKNOWN, "xml": doc}), NO_VM),
            "params not an object": (lambda: plug(vmID=vm, params="x"), PARAMS),
            "no params": (lambda: plug(vmID=vm), PARAMS),
            "no params.vmId": (lambda: plug(vmID=vm, params={"xml": doc}), MISSING),
            "no params.xml": (lambda: plug(vmID=vm, params={"vmId": vm}), MISSING),
            "xml not a string": (lambda: plug(vmID=vm, params={"vmId": vm, "xml": 5}), INVALID),
            "not XML": (lambda: plug(vmID=vm, params={"vmId": vm, "xml": "<hot"}), INVALID),
            "no disk": (lambda: plug(vmID=vm, params={"vmId": vm, "xml": "<hotplug/>"}), INVALID),
            "unknown volume": (
                lambda: plug(vmID=vm, params={"vmId": vm, "xml": _disk_doc(dc, img, new_id())}),
                201,
            ),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: plug(params={"vmId": down, "xml": doc}), DOWN)})
    # The volume prepared for the Down VM was torn down, and is intact.
    info = cli.Volume.getInfo(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, volumeID=vol)
    assert info["legality"] == "LEGAL"


def test_hotunplug_disk_bad_input(cli: Client, vm: str, down: str):
    unplug = cli.VM.hotunplugDisk
    doc = _unplug_doc("disk", "ua-no-such-disk")
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: unplug(params={"vmId": UNKNOWN, "xml": doc}), NO_VM),
            "params a list": (lambda: unplug(vmID=vm, params=[1]), PARAMS),
            "no params.vmId": (lambda: unplug(vmID=vm, params={"xml": doc}), MISSING),
            "vmId not a string": (lambda: unplug(params={"vmId": 7, "xml": doc}), INVALID),
            "no such disk": (lambda: unplug(vmID=vm, params={"vmId": vm, "xml": doc}), UNPLUG_DISK),
            "a NIC document": (
                lambda: unplug(vmID=vm, params={"vmId": vm, "xml": _unplug_doc("interface", "a")}),
                INVALID,
            ),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: unplug(params={"vmId": down, "xml": doc}), DOWN)})


def test_hotplug_nic_bad_input(cli: Client, vm: str, down: str):
    plug = cli.VM.hotplugNic
    no_bridge = (
        '<hotplug><devices><interface type="bridge"><mac address="52:54:00:48:33:09"/>'
        '<model type="virtio"/><source bridge="hv-no-such-br"/><alias name="ua-nic-bad"/>'
        "</interface></devices></hotplug>"
    )
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: plug(params={"vmId": UNKNOWN, "xml": no_bridge}), NO_VM),
            "vmID not a string": (
                lambda: plug(vmID=5, params={"vmId": vm, "xml": no_bridge}),
                PARAMS,
            ),
            "no params.xml": (lambda: plug(vmID=vm, params={"vmId": vm}), MISSING),
            "no interface": (lambda: plug(params={"vmId": vm, "xml": "<hotplug/>"}), INVALID),
            "libvirt refuses": (lambda: plug(params={"vmId": vm, "xml": no_bridge}), PLUG_NIC),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: plug(params={"vmId": down, "xml": no_bridge}), DOWN)})


def test_hotunplug_nic_bad_input(cli: Client, vm: str, down: str):
    unplug = cli.VM.hotunplugNic
    doc = _unplug_doc("interface", "ua-no-such-nic")
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: unplug(params={"vmId": UNKNOWN, "xml": doc}), NO_VM),
            "no params": (lambda: unplug(vmID=vm), PARAMS),
            "xml not a string": (lambda: unplug(params={"vmId": vm, "xml": ["x"]}), INVALID),
            "no such NIC": (lambda: unplug(params={"vmId": vm, "xml": doc}), UNPLUG_NIC),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: unplug(params={"vmId": down, "xml": doc}), DOWN)})


def test_set_number_of_cpus_bad_input(cli: Client, vm: str, down: str):
    cpus = cli.VM.setNumberOfCpus
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: cpus(vmID=UNKNOWN, numberOfCpus="2"), NO_VM),
            "no count": (lambda: cpus(vmID=vm), PARAMS),
            "a list": (lambda: cpus(vmID=vm, numberOfCpus=[2]), PARAMS),
            "not a number": (lambda: cpus(vmID=vm, numberOfCpus="two"), INVALID),
            "zero": (lambda: cpus(vmID=vm, numberOfCpus="0"), INVALID),
            "cpusets too short": (lambda: cpus(vmID=vm, numberOfCpus=2, cpusets=["0"]), INVALID),
            "over the maximum": (lambda: cpus(vmID=vm, numberOfCpus="64"), CPUS),
            "a cpuset not like 1,3-5": (
                lambda: cpus(vmID=vm, numberOfCpus=1, cpusets=["one"]),
                INVALID,
            ),
            "a CPU the host lacks": (
                lambda: cpus(vmID=vm, numberOfCpus=1, cpusets=["4096"]),
                INVALID,
            ),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: cpus(vmID=down, numberOfCpus="2"), DOWN)})


def test_hotplug_memory_bad_input(cli: Client, vm: str, down: str):
    plug = cli.VM.hotplugMemory
    dimm = {"size": 128, "node": 0, "alias": "ua-dimm-bad"}
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: plug(params={"vmId": UNKNOWN, "memory": dimm}), NO_VM),
            "no params.vmId": (lambda: plug(vmID=vm, params={"memory": dimm}), MISSING),
            "no memory": (lambda: plug(params={"vmId": vm}), MISSING),
            "memory a string": (lambda: plug(params={"vmId": vm, "memory": "128"}), INVALID),
            "guarantee not a number": (
                lambda: plug(params={"vmId": vm, "memory": dimm, "memGuaranteedSize": "x"}),
                INVALID,
            ),
            "size not a number": (
                lambda: plug(params={"vmId": vm, "memory": {"size": "lots", "node": 0}}),
                INVALID,
            ),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: plug(params={"vmId": down, "memory": dimm}), DOWN)})


def test_hotunplug_memory_bad_input(cli: Client, vm: str, down: str):
    unplug = cli.VM.hotunplugMemory
    dimm = {"size": 128, "node": 0, "alias": "ua-no-such-dimm"}
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: unplug(params={"vmId": UNKNOWN, "memory": dimm}), NO_VM),
            "no memory": (lambda: unplug(params={"vmId": vm}), MISSING),
            "no alias": (lambda: unplug(params={"vmId": vm, "memory": {"size": 128}}), INVALID),
            "no such DIMM": (lambda: unplug(params={"vmId": vm, "memory": dimm}), UNPLUG_MEM),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: unplug(params={"vmId": down, "memory": dimm}), DOWN)})


def test_disk_size_extend_bad_input(cli: Client, dc: DataCenter, vm: str, down: str):
    extend = cli.VM.diskSizeExtend
    xml = cli.Host.dumpxmls(vmList=[vm])[vm]
    img = xml.split("<ovirt-vm:imageID>")[1].split("<")[0]
    vol = xml.split("<ovirt-vm:volumeID>")[1].split("<")[0]
    specs = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": vol}
    other = {**specs, "imageID": new_id()}
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: extend(vmID=UNKNOWN, driveSpecs=specs, newSize="2"), NO_VM),
            "no newSize": (lambda: extend(vmID=vm, driveSpecs=specs), PARAMS),
            "driveSpecs a string": (lambda: extend(vmID=vm, driveSpecs="vda", newSize="1"), PARAMS),
            "newSize not a number": (
                lambda: extend(vmID=vm, driveSpecs=specs, newSize="big"),
                RESIZE,
            ),
            "no such disk": (
                lambda: extend(vmID=vm, driveSpecs=other, newSize=str(MiB)),
                IMAGE_ERR,
            ),
            "no ids": (lambda: extend(vmID=vm, driveSpecs={}, newSize=str(MiB)), IMAGE_ERR),
        },
    )
    _refused(
        cli, down, {"VM Down": (lambda: extend(vmID=down, driveSpecs=specs, newSize="2"), DOWN)}
    )


def test_change_cd_bad_input(cli: Client, dc: DataCenter, vm: str, down: str):
    change = cli.VM.changeCD
    unknown = {"poolID": dc.sp, "domainID": dc.sd, "imageID": new_id(), "volumeID": new_id()}
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: change(vmID=UNKNOWN, driveSpec="/iso/x.iso"), NO_VM),
            "no driveSpec": (lambda: change(vmID=vm), PARAMS),
            "driveSpec a number": (lambda: change(vmID=vm, driveSpec=5), INVALID),
            "no iface": (lambda: change(vmID=vm, driveSpec={"index": "2", "path": ""}), MISSING),
            "no path nor drive_spec": (
                lambda: change(vmID=vm, driveSpec={"iface": "ide", "index": "2"}),
                MISSING,
            ),
            "bad index": (
                lambda: change(vmID=vm, driveSpec={"iface": "ide", "index": "x", "path": ""}),
                INVALID,
            ),
            "no such CD-ROM": (
                lambda: change(vmID=vm, driveSpec={"iface": "ide", "index": "3", "path": ""}),
                CHANGE_DISK,
            ),
            "no such ISO": (
                lambda: change(
                    vmID=vm, driveSpec={"iface": "ide", "index": "2", "path": "/no/such.iso"}
                ),
                CHANGE_DISK,
            ),
            "unknown volume": (
                lambda: change(
                    vmID=vm, driveSpec={"iface": "ide", "index": "2", "drive_spec": unknown}
                ),
                PREPARE,
            ),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: change(vmID=down, driveSpec=""), DOWN)})


def _lease(dc: DataCenter, lease_id: str) -> dict[str, str]:
    """The lease HotPlugLeaseVDSCommand sends (JsonRpcVdsServer.createLeaseDict)."""
    return {"type": "lease", "lease_id": lease_id, "sd_id": dc.sd}


def test_hotplug_lease_bad_input(cli: Client, dc: DataCenter, vm: str, down: str):
    plug = cli.VM.hotplugLease
    lease = _lease(dc, vm)
    prepared = {**lease, "path": "/no/such/xleases"}
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: plug(vmID=UNKNOWN, lease=_lease(dc, UNKNOWN)), NO_VM),
            "no lease": (lambda: plug(vmID=vm), PARAMS),
            "no vmID": (lambda: plug(lease=lease), PARAMS),
            "lease a string": (lambda: plug(vmID=vm, lease="lease"), PARAMS),
            "no lease_id": (
                lambda: plug(vmID=vm, lease={"type": "lease", "sd_id": dc.sd}),
                INVALID,
            ),
            "sd_id not a UUID": (lambda: plug(vmID=vm, lease={**lease, "sd_id": 7}), INVALID),
            "offset a string": (lambda: plug(vmID=vm, lease={**prepared, "offset": "0"}), INVALID),
            "no such lease": (lambda: plug(vmID=vm, lease=lease), GENERAL),  # as VDSM
        },
    )
    _refused(cli, down, {"VM Down": (lambda: plug(vmID=down, lease=_lease(dc, down)), DOWN)})


def test_hotunplug_lease_bad_input(cli: Client, dc: DataCenter, vm: str, down: str):
    unplug = cli.VM.hotunplugLease
    lease = _lease(dc, vm)
    _refused(
        cli,
        vm,
        {
            "unknown VM": (lambda: unplug(vmID=UNKNOWN, lease=_lease(dc, UNKNOWN)), NO_VM),
            "no lease": (lambda: unplug(vmID=vm), PARAMS),
            "lease a list": (lambda: unplug(vmID=vm, lease=[lease]), PARAMS),
            "lease_id not a UUID": (
                lambda: unplug(vmID=vm, lease={**lease, "lease_id": "vm"}),
                INVALID,
            ),
            "no such lease": (lambda: unplug(vmID=vm, lease=lease), UNPLUG_LEASE),
        },
    )
    _refused(cli, down, {"VM Down": (lambda: unplug(vmID=down, lease=_lease(dc, down)), DOWN)})


def test_a_lease_is_plugged_once_and_unplugged_once(
    cli: Client, dc: DataCenter, vm: str, short_dir: Path
):
    """The device side, on a host with no lock manager (libvirt's `nop`): the `<lease>`
    comes and goes in the live XML, the hash changes, and a second plug (86) or unplug
    (87) changes nothing. Holding the lease in sanlock: test_hotplug_lease_sanlock."""
    xleases = short_dir / "xleases"
    xleases.write_bytes(b"\0" * MiB)
    lease = {**_lease(dc, vm), "path": str(xleases), "offset": 0}
    before = cli.VM.getStats(vmID=vm)[0]["hash"]

    assert cli.VM.hotplugLease(vmID=vm, lease=lease) == {}

    live = ET.fromstring(cli.Host.dumpxmls(vmList=[vm])[vm])  # noqa: S314 - our own host's
    [device] = live.iterfind("./devices/lease")
    assert (device.findtext("key"), device.findtext("lockspace")) == (vm, dc.sd)
    target = device.find("target")
    assert target is not None
    assert target.get("path") == str(xleases)
    assert target.get("offset", "0") == "0"  # libvirt leaves out a zero offset
    plugged = cli.VM.getStats(vmID=vm)[0]["hash"]
    assert plugged != before
    _refused(cli, vm, {"plugged twice": (lambda: cli.VM.hotplugLease(vmID=vm, lease=lease), 86)})

    assert cli.VM.hotunplugLease(vmID=vm, lease=_lease(dc, vm)) == {}

    assert f"<key>{vm}</key>" not in cli.Host.dumpxmls(vmList=[vm])[vm]
    assert cli.VM.getStats(vmID=vm)[0]["hash"] != plugged
    unplug = cli.VM.hotunplugLease
    _refused(cli, vm, {"unplugged twice": (lambda: unplug(vmID=vm, lease=_lease(dc, vm)), 87)})
