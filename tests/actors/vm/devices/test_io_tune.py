"""I/O tune and QoS policy: VM.setIoTune, VM.getIoTune, VM.updateVmPolicy.

Limits set through the wire are what libvirt reads back from QEMU
(`blockIoTune`), and what getIoTune answers. updateVmPolicy, as the Engine's
`UpdateVmPolicyVDSCommand` sends it (vcpuLimit a string, disks by their four
storage ids, maximum = guaranteed), lands in the domain's `ovirt-tune:qos`
metadata (the Engine reads it with dumpxmls) and is applied: the vCPU quota
(`schedulerParameters`) and the disk's limits.
"""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest

from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

NO_VM, VM_DOWN, MISSING, CPU_TUNE, POLICY_FAILED, IOTUNE_FAILED = 1, 6, 11, 62, 63, 64
INVALID = 91
WIRE = -32602  # a missing param or a wrong JSON type: as every verb
DONE = {"code": 0, "message": "Done"}
OVIRT_TUNE = "http://ovirt.org/vm/tune/1.0"
ZERO = {
    "total_bytes_sec": 0,
    "read_bytes_sec": 0,
    "write_bytes_sec": 0,
    "total_iops_sec": 0,
    "read_iops_sec": 0,
    "write_iops_sec": 0,
}


def limits(host: EmbeddedHost, vm_id: str, disk: str = "vda") -> dict[str, int]:
    """The disk's limits as libvirt reads them from QEMU."""
    read = (
        host.tree.connection()
        .lookupByUUIDString(vm_id)
        .blockIoTune(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    )
    return {key: read[key] for key in ZERO}


def test_io_limits_set_are_the_ones_read_back(host: EmbeddedHost, cli: Client, halting_vm: Any):
    vm_id, disk = halting_vm(spice=False)
    assert cli.VM.getIoTune(vmID=vm_id) == [{"name": "vda", "path": str(disk.path), "ioTune": ZERO}]

    answer = cli.VM.setIoTune(
        vmID=vm_id,
        tunables=[{"name": "vda", "ioTune": {"read_bytes_sec": 10_000_000, "total_iops_sec": 500}}],
    )

    assert answer == DONE
    wanted = {**ZERO, "read_bytes_sec": 10_000_000, "total_iops_sec": 500}
    assert limits(host, vm_id) == wanted
    assert cli.VM.getIoTune(vmID=vm_id) == [
        {"name": "vda", "path": str(disk.path), "ioTune": wanted}
    ]

    # A change is merged into the current limits; a disk may be named by its path.
    cli.VM.setIoTune(
        vmID=vm_id, tunables=[{"path": str(disk.path), "ioTune": {"write_bytes_sec": 4096}}]
    )
    assert limits(host, vm_id) == {**wanted, "write_bytes_sec": 4096}
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"


def test_the_engines_policy_is_stored_and_applied(host: EmbeddedHost, cli: Client, halting_vm: Any):
    vm_id, disk = halting_vm(spice=False)
    maximum = {**ZERO, "total_bytes_sec": 20_000_000}

    answer = cli.VM.updateVmPolicy(
        vmID=vm_id,
        params={
            "vmId": vm_id,
            "vcpuLimit": "50",
            "ioTune": [
                {
                    "domainID": disk.domain_id,
                    "poolID": disk.pool_id,
                    "imageID": disk.image_id,
                    "volumeID": disk.volume_id,
                    "maximum": maximum,
                    "guaranteed": maximum,
                }
            ],
        },
    )

    assert answer == DONE
    assert limits(host, vm_id) == maximum
    scheduler = host.tree.connection().lookupByUUIDString(vm_id).schedulerParameters()
    vcpus = 1  # the Engine's XML: <vcpu current="1">
    assert scheduler["vcpu_period"] == 100_000
    assert scheduler["vcpu_quota"] == 100_000 * (os.cpu_count() or 1) * 50 // (100 * vcpus)
    qos = ET.fromstring(cli.Host.dumpxmls(vmList=[vm_id])[vm_id]).find(  # noqa: S314
        f"metadata/{{{OVIRT_TUNE}}}qos"
    )
    assert qos is not None
    assert qos.findtext(f"{{{OVIRT_TUNE}}}vcpuLimit") == "50"
    device = qos.find(f"{{{OVIRT_TUNE}}}ioTune/{{{OVIRT_TUNE}}}device")
    assert device is not None
    assert (device.get("name"), device.get("path")) == ("vda", str(disk.path))
    assert device.findtext(f"{{{OVIRT_TUNE}}}maximum/{{{OVIRT_TUNE}}}total_bytes_sec") == (
        "20000000"
    )
    [policy] = cli.VM.getIoTunePolicy(vmID=vm_id)
    assert policy == {
        "name": "vda",
        "path": str(disk.path),
        "maximum": maximum,
        "guaranteed": maximum,
    }
    stats = cli.VM.getStats(vmID=vm_id)[0]
    assert stats.get("vcpuUserLimit") == 50
    assert (stats["vcpuQuota"], stats["vcpuPeriod"]) == (str(scheduler["vcpu_quota"]), 100_000)


def _code(call: Any) -> int:
    with pytest.raises(ServerError) as caught:
        call()
    return caught.value.code


def test_bad_tune_requests_answer_vdsms_codes_and_change_nothing(
    host: EmbeddedHost, cli: Client, halting_vm: Any
):
    vm_id, disk = halting_vm(spice=False)
    unknown = str(uuid.uuid4())
    set_tune, policy = cli.VM.setIoTune, cli.VM.updateVmPolicy
    vda = {"name": "vda", "ioTune": {"total_bytes_sec": 1000}}
    ids = {
        "domainID": disk.domain_id,
        "poolID": disk.pool_id,
        "imageID": disk.image_id,
        "volumeID": str(uuid.uuid4()),  # no such volume on this VM
    }
    cases = {
        "setIoTune: unknown VM": (NO_VM, lambda: set_tune(vmID=unknown, tunables=[vda])),
        "setIoTune: no tunables": (WIRE, lambda: set_tune(vmID=vm_id)),
        "setIoTune: not a list": (WIRE, lambda: set_tune(vmID=vm_id, tunables=vda)),
        "setIoTune: no disk named": (
            INVALID,
            lambda: set_tune(vmID=vm_id, tunables=[{"ioTune": {}}]),
        ),
        "setIoTune: no ioTune": (MISSING, lambda: set_tune(vmID=vm_id, tunables=[{"name": "vda"}])),
        "setIoTune: unknown disk": (
            IOTUNE_FAILED,
            lambda: set_tune(vmID=vm_id, tunables=[{**vda, "name": "vdz"}]),
        ),
        "setIoTune: negative": (
            IOTUNE_FAILED,
            lambda: set_tune(
                vmID=vm_id, tunables=[{"name": "vda", "ioTune": {"read_iops_sec": -1}}]
            ),
        ),
        "setIoTune: a string": (
            IOTUNE_FAILED,
            lambda: set_tune(
                vmID=vm_id, tunables=[{"name": "vda", "ioTune": {"read_iops_sec": "9"}}]
            ),
        ),
        "setIoTune: unknown limit": (
            IOTUNE_FAILED,
            lambda: set_tune(vmID=vm_id, tunables=[{"name": "vda", "ioTune": {"fast": 1}}]),
        ),
        "setIoTune: total with read": (
            IOTUNE_FAILED,
            lambda: set_tune(
                vmID=vm_id,
                tunables=[{"name": "vda", "ioTune": {"total_bytes_sec": 1, "read_bytes_sec": 1}}],
            ),
        ),
        "getIoTune: unknown VM": (NO_VM, lambda: cli.VM.getIoTune(vmID=unknown)),
        "getIoTune: no vmID": (WIRE, cli.VM.getIoTune),
        "updateVmPolicy: unknown VM": (
            NO_VM,
            lambda: policy(vmID=unknown, params={"vcpuLimit": "5"}),
        ),
        "updateVmPolicy: empty": (MISSING, lambda: policy(vmID=vm_id, params={"vmId": vm_id})),
        "updateVmPolicy: no params": (WIRE, lambda: policy(vmID=vm_id)),
        "updateVmPolicy: vcpuLimit": (
            INVALID,
            lambda: policy(vmID=vm_id, params={"vcpuLimit": "x"}),
        ),
        "updateVmPolicy: ioTune not a list": (
            INVALID,
            lambda: policy(vmID=vm_id, params={"ioTune": {"name": "vda"}}),
        ),
        "updateVmPolicy: no disk named": (
            MISSING,
            lambda: policy(vmID=vm_id, params={"ioTune": [{"maximum": ZERO}]}),
        ),
        "updateVmPolicy: bad limits": (
            IOTUNE_FAILED,
            lambda: policy(vmID=vm_id, params={"ioTune": [{**ids, "maximum": {"x": 1}}]}),
        ),
        "updateVmPolicy: unknown disk": (
            POLICY_FAILED,
            lambda: policy(
                vmID=vm_id, params={"vcpuLimit": "10", "ioTune": [{**ids, "maximum": ZERO}]}
            ),
        ),
    }
    codes = {name: _code(call) for name, (_expected, call) in cases.items()}

    assert codes == {name: expected for name, (expected, _call) in cases.items()}
    assert limits(host, vm_id) == ZERO
    domain = host.tree.connection().lookupByUUIDString(vm_id)
    assert domain.schedulerParameters()["vcpu_quota"] == -1
    assert "vcpuLimit" not in domain.XMLDesc(0)

    domain.destroy()
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Down", 30, "Down")
    assert _code(lambda: set_tune(vmID=vm_id, tunables=[vda])) == VM_DOWN
    assert _code(lambda: cli.VM.getIoTune(vmID=vm_id)) == VM_DOWN
    assert _code(lambda: policy(vmID=vm_id, params={"vcpuLimit": "5"})) == VM_DOWN


def test_moms_cpu_levers(host: EmbeddedHost, cli: Client, halting_vm: Any):
    vm_id, _disk = halting_vm(spice=False)
    domain = host.tree.connection().lookupByUUIDString(vm_id)

    assert cli.VM.setCpuTunePeriod(vmID=vm_id, period=50_000) == DONE
    assert cli.VM.setCpuTuneQuota(vmID=vm_id, quota="20000") == DONE  # VDSM takes strings too

    scheduler = domain.schedulerParameters()
    assert (scheduler["vcpu_period"], scheduler["vcpu_quota"]) == (50_000, 20_000)
    assert cli.VM.getIoTunePolicy(vmID=vm_id) == []  # no policy stored

    cases = {
        "unknown VM": (NO_VM, lambda: cli.VM.setCpuTuneQuota(vmID=str(uuid.uuid4()), quota=1)),
        "no quota": (WIRE, lambda: cli.VM.setCpuTuneQuota(vmID=vm_id)),
        "quota a list": (WIRE, lambda: cli.VM.setCpuTuneQuota(vmID=vm_id, quota=[1])),
        "quota not a number": (CPU_TUNE, lambda: cli.VM.setCpuTuneQuota(vmID=vm_id, quota="x")),
        "period out of range": (CPU_TUNE, lambda: cli.VM.setCpuTunePeriod(vmID=vm_id, period=1)),
        "policy of an unknown VM": (NO_VM, lambda: cli.VM.getIoTunePolicy(vmID=str(uuid.uuid4()))),
    }
    codes = {name: _code(call) for name, (_expected, call) in cases.items()}
    assert codes == {name: expected for name, (expected, _call) in cases.items()}
    scheduler = domain.schedulerParameters()
    assert (scheduler["vcpu_period"], scheduler["vcpu_quota"]) == (50_000, 20_000)
    stats = cli.VM.getStats(vmID=vm_id)[0]
    assert (stats["vcpuQuota"], stats["vcpuPeriod"]) == ("20000", 50_000)

    domain.destroy()
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Down", 30, "Down")
    assert _code(lambda: cli.VM.setCpuTuneQuota(vmID=vm_id, quota=1000)) == VM_DOWN
