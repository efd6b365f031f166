"""Hotplug on a running Linux guest, through the wire, as the Engine calls it (issue 15.3).

The tiny guest (TCG, qemu-ga) sees each device come, and releases each one the host
unplugs: the unplug answers because the guest's kernel let the device go and libvirt
said so (DEVICE_REMOVED), not because a timer ran out. The volumes are made by the
host's own storage verbs, prepared for the plug and torn down after the unplug. The
guest onlines hotplugged memory movable (conftest's MOVABLE_MEMORY), so it can also
give a DIMM back.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from actors.vm.conftest import TinyGuest
from actors.vm.hotplug.conftest import (
    OVIRT_VM,
    UNMOVABLE_MEMORY,
    Guest,
    create_volume,
    start_guest,
)

from harness.engine import RAW, MiB
from harness.waiting import wait_for
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.libvirt, pytest.mark.kvm, pytest.mark.slow]


def _hotplug_disk(guest: Guest, img: str, vol: str) -> str:
    """The document HotPlugDiskVDSCommand sends (LibvirtVmXmlBuilder.buildHotplugDisk)."""
    dc = guest.dc
    guess = f"/rhev/data-center/mnt/_local/{dc.sd}/images/{img}/{vol}"
    return f"""<?xml version='1.0' encoding='utf-8'?>
<hotplug><devices><disk snapshot="no" type="file" device="disk">
<target dev="vda" bus="virtio"/><source file="{guess}">
<seclabel model="dac" type="none" relabel="no"/></source>
<driver name="qemu" io="threads" type="qcow2" error_policy="stop" cache="none"/>
<alias name="ua-{img}"/><serial>{img}</serial></disk></devices>
<metadata xmlns:ovirt-vm="{OVIRT_VM}"><ovirt-vm:vm>
<ovirt-vm:device devtype="disk" name="vda"><ovirt-vm:poolID>{dc.sp}</ovirt-vm:poolID>
<ovirt-vm:volumeID>{vol}</ovirt-vm:volumeID><ovirt-vm:imageID>{img}</ovirt-vm:imageID>
<ovirt-vm:domainID>{dc.sd}</ovirt-vm:domainID></ovirt-vm:device></ovirt-vm:vm></metadata>
</hotplug>"""


def _hotunplug(kind: str, alias: str) -> str:
    """The document HotUnPlugDiskVDSCommand / HotUnplugNicVDSCommand send (Hotunplug)."""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<hotunplug><devices><{kind}><alias name="{alias}"/></{kind}></devices></hotunplug>'
    )


def _hotplug_nic(alias: str, mac: str, tap: str) -> str:
    """HotPlugNicVDSCommand's document; an ethernet NIC (a tap), so no bridge is needed."""
    return f"""<?xml version='1.0' encoding='utf-8'?>
<hotplug><devices><interface type="ethernet"><model type="virtio"/>
<link state="up"/><target dev="{tap}"/><mac address="{mac}"/><alias name="{alias}"/>
</interface></devices>
<metadata xmlns:ovirt-vm="{OVIRT_VM}"><ovirt-vm:vm>
<ovirt-vm:device alias="{alias}" mac_address="{mac}"><ovirt-vm:custom/></ovirt-vm:device>
</ovirt-vm:vm></metadata></hotplug>"""


def _volume_path(guest: Guest, img: str, vol: str) -> str:
    path: str = guest.cli.Image.prepare(
        storagepoolID=guest.dc.sp, storagedomainID=guest.dc.sd, imageID=img, volumeID=vol
    )["path"]
    return path


def test_a_disk_is_plugged_seen_by_the_guest_and_released_on_unplug(guest: Guest):
    cli, dc = guest.cli, guest.dc
    img, vol = create_volume(cli, dc, size=8 * MiB)
    before = guest.stats()["hash"]
    params = {"vmId": guest.vm_id, "xml": _hotplug_disk(guest, img, vol)}

    assert cli.VM.hotplugDisk(vmID=guest.vm_id, params=params) == {}

    live = guest.xml()
    path = _volume_path(guest, img, vol)
    assert f"<source file='{path}'" in live  # the prepared volume, not the Engine's guess
    assert "<target dev='vdb' bus='virtio'/>" in live  # vda is the system disk
    assert f"<ovirt-vm:imageID>{img}</ovirt-vm:imageID>" in live
    assert '<ovirt-vm:device devtype="disk" name="vdb">' in live
    assert guest.stats()["hash"] != before  # the Engine re-reads the devices
    guest.sees("/sys/block/vdb")
    plugged = guest.stats()["hash"]

    assert (
        cli.VM.hotunplugDisk(
            vmID=guest.vm_id, params={"vmId": guest.vm_id, "xml": _hotunplug("disk", f"ua-{img}")}
        )
        == {}
    )

    # Answered once the guest let it go: gone from libvirt's live XML already.
    assert f"ua-{img}" not in guest.libvirt_xml()
    live = guest.xml()
    assert img not in live
    assert guest.stats()["hash"] != plugged
    assert guest.lost("/sys/block/vdb")
    # The volume was torn down and is untouched: the image can go.
    info = cli.Volume.getInfo(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, volumeID=vol)
    assert info["legality"] == "LEGAL"


def test_a_nic_is_plugged_with_vdsms_answer_and_released_on_unplug(guest: Guest):
    cli = guest.cli
    alias = f"ua-{uuid.uuid4()}"
    mac = "52:54:00:48:33:01"
    tap = f"hvh3{guest.vm_id[:6]}"
    before = guest.stats()["hash"]
    params = {"vmId": guest.vm_id, "xml": _hotplug_nic(alias, mac, tap)}

    answer = cli.VM.hotplugNic(vmID=guest.vm_id, params=params)

    assert answer["devices"] == [{"macAddr": mac, "alias": alias}]
    assert alias in answer["xml"]
    assert f'<ovirt-vm:device alias="{alias}" mac_address="{mac}">' in guest.xml()
    assert guest.stats()["hash"] != before
    wait_for(
        lambda: mac in guest.run("cat /sys/class/net/*/address")[1], 60, "the NIC in the guest"
    )

    unplug = {"vmId": guest.vm_id, "xml": _hotunplug("interface", alias)}
    assert cli.VM.hotunplugNic(vmID=guest.vm_id, params=unplug) == {}

    assert alias not in guest.libvirt_xml()
    assert alias not in guest.xml()  # its metadata too
    assert mac not in guest.run("cat /sys/class/net/*/address")[1]
    assert guest.stats()["status"] == "Up"


def test_the_cpu_count_changes_live(guest: Guest):
    assert guest.cli.VM.setNumberOfCpus(vmID=guest.vm_id, numberOfCpus="2") == {}

    assert "current='2'" in guest.xml()
    guest.sees("/sys/devices/system/cpu/cpu1")
    # With cpusets (a pinning policy), each vCPU is pinned too, as VDSM does.
    cpus = guest.cli.VM.setNumberOfCpus(vmID=guest.vm_id, numberOfCpus="2", cpusets=["1", "0-1"])
    assert cpus == {}
    assert "<vcpupin vcpu='0' cpuset='1'/>" in guest.xml()


def test_a_cd_is_loaded_by_path_and_by_storage_ids_then_ejected(guest: Guest, short_dir: Path):
    cli, dc = guest.cli, guest.dc
    iso = short_dir / "tools.iso"
    iso.write_bytes(b"\0" * (1 * MiB))
    spec = {"iface": "ide", "index": "2"}

    assert cli.VM.changeCD(vmID=guest.vm_id, driveSpec={**spec, "path": str(iso)}) == {}
    assert f"<source file='{iso}'" in guest.xml()
    # The old form, a bare path: the VM's first CD-ROM; an empty one ejects.
    assert cli.VM.changeCD(vmID=guest.vm_id, driveSpec="") == {}
    assert f"<source file='{iso}'" not in guest.xml()
    assert cli.VM.changeCD(vmID=guest.vm_id, driveSpec=str(iso)) == {}
    assert f"<source file='{iso}'" in guest.xml()

    img, vol = create_volume(cli, dc, size=1 * MiB, fmt=RAW)
    pdiv = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": vol}
    assert cli.VM.changeCD(vmID=guest.vm_id, driveSpec={**spec, "drive_spec": pdiv}) == {}
    live = guest.xml()
    assert f"<source file='{_volume_path(guest, img, vol)}'" in live
    assert '<ovirt-vm:device devtype="disk" name="hdc">' in live
    assert f"<ovirt-vm:imageID>{img}</ovirt-vm:imageID>" in live

    assert cli.VM.changeCD(vmID=guest.vm_id, driveSpec={**spec, "drive_spec": {}}) == {}
    live = guest.xml()
    cdrom = live[live.index("device='cdrom'") : live.index("</disk>", live.index("device='cdrom'"))]
    assert "<source file=" not in cdrom  # libvirt keeps an empty <source index=…/>
    assert img not in live  # the metadata forgot it


def test_a_disk_grows_live_and_its_volume_follows(guest: Guest):
    cli, dc = guest.cli, guest.dc
    specs = {"poolID": dc.sp, "domainID": dc.sd, "imageID": guest.image, "volumeID": guest.volume}

    size = cli.VM.diskSizeExtend(vmID=guest.vm_id, driveSpecs=specs, newSize=str(32 * MiB))

    assert size == str(32 * MiB)
    path = _volume_path(guest, guest.image, guest.volume)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", path],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert info["virtual-size"] == 32 * MiB
    volume: dict[str, Any] = cli.Volume.getInfo(
        storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=guest.image, volumeID=guest.volume
    )
    assert volume["capacity"] == str(32 * MiB)
    wait_for(
        lambda: guest.run("cat /sys/block/vda/size")[1].strip() == str(32 * MiB // 512),
        30,
        "the guest to see the new size",
    )
    # A qcow2 disk never shrinks: VDSM's resizeErr (58), and nothing changes.
    with pytest.raises(ServerError) as smaller:
        cli.VM.diskSizeExtend(vmID=guest.vm_id, driveSpecs=specs, newSize=str(16 * MiB))
    assert smaller.value.code == 58
    assert cli.Volume.getInfo(
        storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=guest.image, volumeID=guest.volume
    )["capacity"] == str(32 * MiB)


def test_memory_is_plugged_as_a_dimm(guest: Guest):
    alias = f"ua-{uuid.uuid4()}"
    params = {
        "vmId": guest.vm_id,
        "memory": {"size": 128, "node": 0, "alias": alias, "device": "memory", "type": "memory"},
        "memGuaranteedSize": 200,
    }

    assert guest.cli.VM.hotplugMemory(vmID=guest.vm_id, params=params) == {}

    live = guest.xml()
    assert "<memory model='dimm'>" in live
    assert alias in live
    assert '<ovirt-vm:minGuaranteedMemoryMb type="int">200<' in live  # VDSM keeps it too
    # The unplug only asks (VDSM answers at once too); the VM carries on either way.
    assert guest.cli.VM.hotunplugMemory(vmID=guest.vm_id, params=params) is True
    assert guest.stats()["status"] == "Up"


def test_an_unplug_ends_when_the_guest_lets_go_even_after_libvirt_stopped_waiting(guest: Guest):
    """A paused guest cannot release the NIC: libvirt's own 5 s wait for it runs out and
    the detach returns; the verb waits on, the VM answers stats meanwhile, and once the
    guest runs again and releases the NIC, DEVICE_REMOVED ends the unplug."""
    cli = guest.cli
    alias, mac = f"ua-{uuid.uuid4()}", "52:54:00:48:33:02"
    plug = {"vmId": guest.vm_id, "xml": _hotplug_nic(alias, mac, f"hvh3p{guest.vm_id[:6]}")}
    cli.VM.hotplugNic(vmID=guest.vm_id, params=plug)
    wait_for(lambda: mac in guest.run("cat /sys/class/net/*/address")[1], 60, "the NIC")
    cli.VM.pause(vmID=guest.vm_id)
    answers: list[Any] = []

    def unplug() -> None:
        with guest.host.client(timeout=120) as other:
            params = {"vmId": guest.vm_id, "xml": _hotunplug("interface", alias)}
            answers.append(other.VM.hotunplugNic(vmID=guest.vm_id, params=params))

    waiting = threading.Thread(target=unplug)
    waiting.start()
    waiting.join(8)  # past libvirt's 5 s wait for the device

    assert waiting.is_alive()
    assert alias in guest.libvirt_xml()  # requested, not released
    assert guest.stats()["status"] == "Paused"  # the VM answers while its unplug waits
    cli.VM.cont(vmID=guest.vm_id)
    waiting.join(30)
    assert not waiting.is_alive()
    assert answers == [{}]
    assert alias not in guest.libvirt_xml()
    assert alias not in guest.xml()


def _guest_memory_kib(guest: Guest) -> int:
    """MemTotal as the guest's kernel counts it."""
    code, out = guest.run("grep MemTotal /proc/meminfo")
    assert code == 0, out
    return int(out.split()[1])


def _balloon_max(guest: Guest) -> int:
    return int(guest.stats().get("balloonInfo", {}).get("balloon_max", "0"))


def test_memory_is_given_back_when_the_guest_releases_the_dimm(guest: Guest):
    """hotunplugMemory answers at once; the guest (its memory onlined movable) offlines
    the DIMM, libvirt reports DEVICE_REMOVED, and the VM's memory is what it was."""
    import libvirt  # noqa: PLC0415

    cli, vm_id = guest.cli, guest.vm_id
    alias = f"ua-{uuid.uuid4()}"
    removed: list[str] = []
    conn = guest.host.tree.connection()
    callback = conn.domainEventRegisterAny(
        guest.domain(),
        libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
        lambda _conn, _dom, dev, _opaque: removed.append(dev),
        None,
    )
    try:
        wait_for(lambda: _balloon_max(guest) > 0, 30, "balloon stats")
        before_stats, before_guest = _balloon_max(guest), _guest_memory_kib(guest)
        memory = {"size": 128, "node": 0, "alias": alias, "device": "memory", "type": "memory"}
        params = {"vmId": vm_id, "memory": memory, "memGuaranteedSize": 300}
        assert cli.VM.hotplugMemory(vmID=vm_id, params=params) == {}
        wait_for(
            lambda: _guest_memory_kib(guest) >= before_guest + 120 * 1024,
            60,
            "the guest to online the DIMM",
        )
        wait_for(
            lambda: _balloon_max(guest) == before_stats + 128 * 1024, 60, "stats: memory grown"
        )
        plugged = guest.stats()["hash"]

        unplug = {"vmId": vm_id, "memory": memory, "memGuaranteedSize": 256}
        assert cli.VM.hotunplugMemory(vmID=vm_id, params=unplug) is True

        wait_for(lambda: alias in removed, 120, "DEVICE_REMOVED for the DIMM")
        wait_for(lambda: alias not in guest.xml(), 30, "the DIMM gone from the VM's XML")
        assert alias not in guest.libvirt_xml()
        assert guest.stats()["hash"] != plugged  # the Engine re-reads the devices
        wait_for(lambda: _balloon_max(guest) == before_stats, 60, "stats: memory back")
        assert _guest_memory_kib(guest) <= before_guest
        assert '<ovirt-vm:minGuaranteedMemoryMb type="int">256<' in guest.xml()  # as VDSM
        assert guest.stats()["status"] == "Up"
    finally:
        conn.domainEventDeregisterAny(callback)


def test_a_dimm_the_guest_cannot_give_back_answers_85_and_stays(
    guest: Guest, tiny_guest: TinyGuest
):
    """A guest that onlined the DIMM unmovable rejects its removal: VDSM's hotunplugMem
    (85), and the DIMM, the VM's memory and its metadata stay as they were."""
    cli = guest.cli
    held = start_guest(cli, guest.host, guest.dc, tiny_guest, "hotplug-unmovable", UNMOVABLE_MEMORY)
    try:
        alias = f"ua-{uuid.uuid4()}"
        memory = {"size": 128, "node": 0, "alias": alias, "device": "memory", "type": "memory"}
        plug = {"vmId": held.vm_id, "memory": memory, "memGuaranteedSize": 300}
        before_guest = _guest_memory_kib(held)
        assert cli.VM.hotplugMemory(vmID=held.vm_id, params=plug) == {}
        wait_for(
            lambda: _guest_memory_kib(held) >= before_guest + 120 * 1024, 60, "the DIMM online"
        )
        plugged = held.stats()["hash"]

        unplug = {**plug, "memGuaranteedSize": 256}
        with pytest.raises(ServerError) as refused:
            cli.VM.hotunplugMemory(vmID=held.vm_id, params=unplug)

        assert refused.value.code == 85
        assert "rejected by the guest" in refused.value.message
        assert alias in held.libvirt_xml()
        assert alias in held.xml()
        assert held.stats()["hash"] == plugged
        assert '<ovirt-vm:minGuaranteedMemoryMb type="int">300<' in held.xml()
        assert _guest_memory_kib(held) >= before_guest + 120 * 1024
        assert held.stats()["status"] == "Up"
    finally:
        cli.VM.destroy(vmID=held.vm_id)
