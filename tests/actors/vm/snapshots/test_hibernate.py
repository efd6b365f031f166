"""VM.hibernate and VM.create's restore, the Engine's way, through the wire.

The Engine makes two volumes (the memory dump and its configuration), sends
`VM.hibernate` with `hibernationVolHandle`; the VM says "Saving State", goes Down with
exit reason 5 and is destroyed by the Engine. `VM.create` with the VM's XML and
`memoryDumpVolume`/`memoryConfVolume` brings it back: "Restoring state", then Up,
its memory as it was. The proof: the guest's BIOS loaded its boot sector, which
carries a token, into memory at 0x7c00; the token on disk is changed while the VM is
down; after the restore, memory still holds the old one (qemu's monitor reads it).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu  # type: ignore[import-untyped]
import pytest
from snapshot_helpers import (
    MemoryVolumes,
    SnapVm,
    disk_source,
    make_image,
    metadata_volume,
    snapshot,
    start_vm,
)

from harness.engine import engine_vm_xml, new_id
from harness.guests import HALT_SECTOR, StatusEvents
from harness.waiting import wait_for
from hostvisor.actors.hypervisor.connection import embed_uri, open_connection
from hostvisor.actors.vm.snapshot_hibernation import read_conf
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.kvm]

NO_SUCH_VM, VM_IS_DOWN, INVALID, BAD_PARAMS = 1, 6, 91, -32602
VOLUME_DOES_NOT_EXIST = 201
SAVE_STATE_SUCCEEDED = 5
TOKEN_AT = 0x7C00 + 4
"""Where the token sits in guest memory: after the boot sector's four halting bytes."""


def _refused(call: Any) -> int:
    with pytest.raises(ServerError) as refused:
        call()
    return refused.value.code


def write_token(path: str, token: bytes) -> None:
    with Path(path).open("r+b") as disk:
        disk.seek(4)
        disk.write(token)


def memory_at(embed_root: Path, vm_id: str, address: int, length: int) -> bytes:
    """Guest memory as qemu's monitor reads it (`xp`)."""
    domain = open_connection(embed_uri(embed_root)).lookupByUUIDString(vm_id)
    out = libvirt_qemu.qemuMonitorCommand(
        domain, f"xp /{length}xb {address:#x}", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
    )
    return bytes(int(byte, 16) for byte in re.findall(r"0x([0-9a-f]{2})\b", out.split(":", 1)[1]))


def test_a_hibernated_vm_comes_back_with_its_memory(
    snap_host: Any, embed_root: Path, accelerator: Any
) -> None:
    _host, cli, dc = snap_host
    img, vols = make_image(cli, dc)
    token = secrets.token_bytes(16)
    write_token(dc.prepare(cli, img, vols[0]), token)
    vm_id = start_vm(cli, dc, img, vols[-1], accelerator.domain_type)
    wait_for(
        lambda: memory_at(embed_root, vm_id, 0x7C00, 4) == HALT_SECTOR[:4],
        30,
        "the BIOS to load the boot sector",
        step=0.2,
    )
    assert memory_at(embed_root, vm_id, TOKEN_AT, 16) == token
    xml = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    memory = MemoryVolumes(cli, dc)
    events = StatusEvents(cli)

    cli.VM.hibernate(vmID=vm_id, hibernationVolHandle=memory.handle())

    seen = events.until(vm_id, "Down", timeout=60)
    statuses = [entry["status"] for entry in seen]
    # The Engine marks the VM Suspended only if "Saving State" is the last status it saw
    # before Down (VmAnalyzer.proceedDownVm): libvirt's pause for the save must not show.
    assert statuses[-2] == "Saving State", statuses
    assert "Paused" not in statuses[statuses.index("Saving State") :], statuses
    down = seen[-1]
    assert (down["exitCode"], down["exitReason"]) == (0, SAVE_STATE_SUCCEEDED)
    assert down["exitMessage"] == "SaveState succeeded"
    conf = read_conf(dc.prepare(cli, memory.conf_img, memory.conf_vol))
    assert conf["vmId"] == vm_id
    assert "<domain" in conf["_srcDomXML"]
    cli.VM.destroy(vmID=vm_id)  # the Engine reaps the saved VM
    write_token(dc.prepare(cli, img, vols[0]), secrets.token_bytes(16))  # the disk moves on

    answer = cli.VM.create(vmID=vm_id, vmParams={"xml": xml, **memory.restore_params()})

    assert answer["vmId"] == vm_id
    assert answer["status"] in ("Restoring state", "Up")
    events.until(vm_id, "Up", timeout=60)
    assert memory_at(embed_root, vm_id, TOKEN_AT, 16) == token  # memory, not the disk
    assert metadata_volume(cli, vm_id) == vols[-1]
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"
    cli.VM.destroy(vmID=vm_id)


def test_a_memory_snapshot_previewed_brings_the_guest_back_on_new_volumes(
    snap_host: Any, embed_root: Path, accelerator: Any
) -> None:
    """The Engine's preview of a snapshot with memory: a new leaf over the snapshot's
    volume, and VM.create with the snapshot's memory volumes."""
    _host, cli, dc = snap_host
    img, vols = make_image(cli, dc)
    token = secrets.token_bytes(16)
    write_token(dc.prepare(cli, img, vols[0]), token)
    vm_id = start_vm(cli, dc, img, vols[-1], accelerator.domain_type)
    wait_for(
        lambda: memory_at(embed_root, vm_id, 0x7C00, 4) == HALT_SECTOR[:4],
        30,
        "the BIOS to load the boot sector",
        step=0.2,
    )
    vm = SnapVm(dc=dc, vm_id=vm_id, img=img, vols=vols)
    memory = MemoryVolumes(cli, dc)
    assert snapshot(cli, vm, vm.new_leaf(cli), snapMemory=memory.handle())["status"] == "done"
    cli.VM.destroy(vmID=vm_id)
    write_token(dc.prepare(cli, img, vols[0]), secrets.token_bytes(16))
    preview = vm.new_leaf(cli)  # over the snapshot's volume (vols[-1])
    xml = engine_vm_xml(
        name=f"sn-{vm_id[:8]}",
        vm_id=vm_id,
        dc=dc,
        img=img,
        vol=preview,
        kind=accelerator.domain_type,
    )
    events = StatusEvents(cli)

    cli.VM.create(vmID=vm_id, vmParams={"xml": xml, **memory.restore_params()})

    events.until(vm_id, "Up", timeout=60)
    assert memory_at(embed_root, vm_id, TOKEN_AT, 16) == token
    assert metadata_volume(cli, vm_id) == preview
    assert disk_source(cli, vm_id) == vm.prepared(cli, preview)
    cli.VM.destroy(vmID=vm_id)


def test_bad_hibernate_and_restore_requests_are_refused_and_change_nothing(
    snap_host: Any, snap_vm: SnapVm
) -> None:
    _host, cli, dc = snap_host
    vm = snap_vm
    memory = MemoryVolumes(cli, dc)
    handle = memory.handle()
    assert _refused(lambda: cli.VM.hibernate(vmID=new_id(), hibernationVolHandle=handle)) == 1
    assert _refused(lambda: cli.VM.hibernate(vmID=vm.vm_id)) == BAD_PARAMS
    assert _refused(lambda: cli.VM.hibernate(vmID=vm.vm_id, hibernationVolHandle=7)) == BAD_PARAMS
    bad = "a,b,c"
    assert _refused(lambda: cli.VM.hibernate(vmID=vm.vm_id, hibernationVolHandle=bad)) == INVALID
    assert cli.VM.getStats(vmID=vm.vm_id)[0]["status"] == "Up"

    xml = cli.Host.dumpxmls(vmList=[vm.vm_id])[vm.vm_id]
    cli.VM.destroy(vmID=vm.vm_id)
    params = memory.restore_params()
    broken = {**params, "memoryDumpVolume": {"poolID": dc.sp}}
    code = _refused(lambda: cli.VM.create(vmID=vm.vm_id, vmParams={"xml": xml, **broken}))
    assert code == INVALID
    missing = {
        **params,
        "memoryDumpVolume": {**params["memoryDumpVolume"], "volumeID": new_id()},
    }
    code = _refused(lambda: cli.VM.create(vmID=vm.vm_id, vmParams={"xml": xml, **missing}))
    assert code == VOLUME_DOES_NOT_EXIST
    assert vm.vm_id not in cli.Host.getVMList()
    # A dump that holds no saved guest: the VM is made, and goes Down (reason 3).
    events = StatusEvents(cli)
    cli.VM.create(vmID=vm.vm_id, vmParams={"xml": xml, **params})
    down = events.until(vm.vm_id, "Down", timeout=30)[-1]
    assert down["exitReason"] == 3
    cli.VM.destroy(vmID=vm.vm_id)
    with pytest.raises(libvirt.libvirtError):
        open_connection(cli_uri(_host)).lookupByUUIDString(vm.vm_id)


def cli_uri(host: Any) -> str:
    """The host's libvirt URI."""
    return str(host.config.libvirt_uri)
