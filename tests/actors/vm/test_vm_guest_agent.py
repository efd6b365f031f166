"""The qemu guest agent's facts in a VM's stats, as VDSM reports them (issue 13, Deliver 4).

A tiny Linux guest (conftest `tiny_guest`: a Debian kernel and an initramfs whose init
runs qemu-ga) boots under TCG from the Engine's domain XML; the VmActor polls its
agent off its thread and reports guestName, guestFQDN, guestOs, guestOsInfo,
guestTimezone, netIfaces, guestIPs, appsList and guestCPUCount, and writes the disk
mapping into the domain's metadata (what the Engine reads from dumpxmls), which
changes the devices hash.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import libvirt
import pytest

from harness.guests import ethernet_nic, make_halting_base
from harness.waiting import wait_for
from hostvisor.actors.vm import guestagent, reported
from hostvisor.actors.vm.actor import AgentPolling

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

# What libvirt 9.0 answered for the tiny guest (guestInfo and interfaceAddresses).
GUEST_INFO: dict[str, Any] = {
    "user.count": 1,
    "user.0.name": "root",
    "user.0.login-time": 1_700_000_000_000,
    "os.id": "tiny",
    "os.name": "Tiny Guest",
    "os.pretty-name": "Tiny Guest 12 (hostvisor tests)",
    "os.version": "12 (bookworm)",
    "os.version-id": "12",
    "os.machine": "x86_64",
    "os.kernel-release": "6.1.0-57-amd64",
    "os.kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3",
    "timezone.name": "CET",
    "timezone.offset": 3600,
    "hostname": "tiny-guest.example.test",
    "fs.count": 1,
    "fs.0.name": "vda1",
    "fs.0.mountpoint": "/",
    "fs.0.fstype": "ext4",
    "fs.0.total-bytes": 1_000_000,
    "fs.0.used-bytes": 250_000,
    "disk.count": 1,
    "disk.0.name": "/dev/vda",
    "disk.0.partition": False,
    "disk.0.serial": "3bae9925-f243-44bc-9",
    "disk.0.alias": "vda",
}
INTERFACES = {
    "lo": {
        "addrs": [
            {"addr": "127.0.0.1", "prefix": 8, "type": libvirt.VIR_IP_ADDR_TYPE_IPV4},
            {"addr": "::1", "prefix": 128, "type": libvirt.VIR_IP_ADDR_TYPE_IPV6},
        ],
        "hwaddr": "00:00:00:00:00:00",
    },
    "eth0": {
        "addrs": [
            {"addr": "192.0.2.10", "prefix": 24, "type": libvirt.VIR_IP_ADDR_TYPE_IPV4},
            {"addr": "fe80::1", "prefix": 64, "type": libvirt.VIR_IP_ADDR_TYPE_IPV6},
        ],
        "hwaddr": "52:54:00:12:34:56",
    },
}


@pytest.mark.unit
def test_the_agents_answers_become_vdsms_fields():
    facts = guestagent.translate(GUEST_INFO, INTERFACES, agent_version="7.2.0", online_cpus="0-1,3")

    assert facts.fields == {
        "guestName": "tiny-guest.example.test",
        "guestFQDN": "tiny-guest.example.test",
        "guestOs": "6.1.0-57-amd64",
        "guestOsInfo": {
            "type": "linux",
            "arch": "x86_64",
            "kernel": "6.1.0-57-amd64",
            "distribution": "Tiny Guest",
            "version": "12",
            "codename": "",
        },
        "appsList": ["kernel-6.1.0-57-amd64", "qemu-guest-agent-7.2.0"],
        "guestTimezone": {"offset": 60, "zone": "CET"},
        "username": "root",
        "disksUsage": [{"path": "/", "total": "1000000", "used": "250000", "fs": "ext4"}],
        "guestCPUCount": 3,
        "netIfaces": [
            {"name": "lo", "hw": "00:00:00:00:00:00", "inet": ["127.0.0.1"], "inet6": ["::1"]},
            {
                "name": "eth0",
                "hw": "52:54:00:12:34:56",
                "inet": ["192.0.2.10"],
                "inet6": ["fe80::1"],
            },
        ],
        "guestIPs": "192.0.2.10",
    }
    assert facts.disk_mapping == {"3bae9925-f243-44bc-9": "/dev/vda"}


@pytest.mark.unit
def test_the_disk_mapping_goes_into_the_disks_metadata(engine_xml, tmp_path: Path):
    image = "3bae9925-f243-44bc-9d1e-0123456789ab"
    xml = engine_xml(vm_id=str(uuid.uuid4()), name="meta", domain_type="kvm")
    xml = xml.replace(
        "<ovirt-vm:launchPaused>",
        '<ovirt-vm:device devtype="disk" name="vda">'
        f"<ovirt-vm:imageID>{image}</ovirt-vm:imageID></ovirt-vm:device><ovirt-vm:launchPaused>",
    )

    metadata = guestagent.mapped_metadata(xml, {image[:20]: "/dev/vda"})

    assert metadata is not None
    assert "<guestName>/dev/vda</guestName>" in metadata
    assert metadata.startswith("<vm>")  # setMetadata adds the namespace itself
    assert f"<imageID>{image}</imageID>" in metadata
    assert guestagent.mapped_metadata(xml, {"unrelated-serial": "/dev/vdb"}) is None


def test_a_guest_with_qemu_ga_reports_its_facts_as_vdsm_does(
    watched, qemu_embed, tiny_guest, engine_xml, engine_disk, short_dir: Path
):
    vm_id = str(uuid.uuid4())
    disk = engine_disk(short_dir, make_halting_base(short_dir))
    tap = f"hvga{vm_id[:6]}"
    xml = engine_xml(
        vm_id=vm_id,
        name="tiny-ga",
        domain_type="qemu",  # TCG: this host's nested KVM hangs Linux guests (ENVIRONMENT.md)
        disk=disk,
        kernel=tiny_guest.boot(),
        memory_mib=256,
    ).replace("</devices>", ethernet_nic(tap, "52:54:00:a0:00:01") + "</devices>")
    polling = AgentPolling(boot_interval=0.5, interval=2.0, timeout=3)
    # "Powering up" would last 10 minutes: the agent's first answer ends it (VDSM).
    vm = watched(qemu_embed, xml, agent=polling, powering_up=600.0)
    before = vm.wait_status("Powering up")
    assert before["username"] == "Unknown"
    assert before["guestCPUCount"] == -1

    stats = wait_for(
        lambda: "guestOsInfo" in (s := vm.stats()) and s.get("guestCPUCount", -1) > 0 and s,
        120,
        "the guest agent's facts in the VM's stats",
        step=0.2,
    )

    assert vm.wait_status("Up", timeout=10)["guestName"] == tiny_guest.hostname
    assert [e["status"] for e in vm.statuses()] == ["Powering up", "Up"]
    assert stats["guestName"] == stats["guestFQDN"] == tiny_guest.hostname
    assert stats["guestOs"].endswith("-amd64")
    assert stats["guestOsInfo"] == {
        "type": "linux",
        "arch": "x86_64",
        "kernel": stats["guestOs"],
        "distribution": "Tiny Guest",
        "version": "12",
        "codename": "",
    }
    assert stats["guestTimezone"] == {"offset": 0, "zone": "UTC"}
    assert stats["guestCPUCount"] == 1
    assert stats["username"] == ""  # nobody is logged in
    assert stats["session"] == "Unknown"
    assert stats["appsList"][0] == f"kernel-{stats['guestOs']}"
    assert stats["appsList"][1].startswith("qemu-guest-agent-")
    eth0 = next(nic for nic in stats["netIfaces"] if nic["name"] == "eth0")
    assert eth0["hw"] == "52:54:00:a0:00:01"
    assert tiny_guest.address in eth0["inet"]
    assert all(isinstance(nic["inet6"], list) for nic in stats["netIfaces"])
    assert stats["guestIPs"].split()[0] == tiny_guest.address

    # The disk mapping went into the disk's metadata, and into the hash.
    live = vm.xml()
    assert "<ovirt-vm:guestName>/dev/vda</ovirt-vm:guestName>" in live
    assert reported.read(live).disk_mapping == ((disk.image_id, "/dev/vda"),)
    assert stats["hash"] == reported.read(live).fields()["hash"]
    assert stats["hash"] != before["hash"]

    # The guest sets its hardware clock an hour ahead (qemu-ga's guest-exec runs
    # busybox): libvirt's RTC change moves the live XML's clock adjustment, which the
    # next poll reads into timeOffset.
    assert stats["timeOffset"] == "0"
    _guest_exec(vm, "date -s @$(( $(date +%s) + 3600 )) >/dev/null && hwclock -w -u")
    ahead = wait_for(
        lambda: abs(int((s := vm.stats())["timeOffset"]) - 3600) <= 5 and s,
        30,
        "timeOffset to follow the guest's RTC",
        step=0.2,
    )

    down = vm.shutdown()
    assert down["status"] == "Down"
    assert down["timeOffset"] == ahead["timeOffset"]


def _guest_exec(vm: Any, command: str) -> None:
    """Run `command` with sh in the guest through qemu-ga's guest-exec; wait for it."""
    import json  # noqa: PLC0415

    import libvirt_qemu  # type: ignore[import-untyped]  # noqa: PLC0415

    domain = vm.conn.lookupByUUIDString(vm.vm_id)
    request = {
        "execute": "guest-exec",
        "arguments": {"path": "/bin/sh", "arg": ["-c", command], "capture-output": True},
    }
    pid = json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps(request), 10, 0))
    status = {"execute": "guest-exec-status", "arguments": {"pid": pid["return"]["pid"]}}

    def exited() -> dict[str, Any] | None:
        answer = json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps(status), 10, 0))
        return answer if answer["return"]["exited"] else None

    answer = wait_for(exited, 20, f"guest-exec {command!r} to finish", step=0.1)
    assert answer["return"].get("exitcode") == 0, answer
