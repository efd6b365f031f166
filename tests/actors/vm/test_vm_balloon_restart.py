"""The balloon target survives an agent restart: it lives in the domain's metadata.

VDSM keeps the target VM.setBalloonTarget (or MOM) set in the running domain's
`ovirt-vm` metadata (`balloonTarget`) and reads it back when it recovers the VM. The
agent here is a real `hostvisor serve` process, killed with SIGKILL and started again
on the same state directory; the guest (a halting one, KVM) outlives it.

A halting guest has no balloon driver: its balloon never moves, so `balloon_cur`
stays at the whole memory while the target is lower. Reporting the current size as
the target (what an agent that forgot the target does) would be visibly wrong.
`balloon_min` is the guaranteed memory (`minGuaranteedMemoryMb`, in KiB), as VDSM's.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.agent import Agent
from harness.guests import domain_xml, make_halting_base, make_overlay
from harness.vms import kill_qemu, qemu_pid
from harness.waiting import wait_for
from hostvisor.api.client import connect

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt, pytest.mark.slow]

MIB = 1024  # KiB
MEMORY_MIB, GUARANTEED_MIB, TARGET_MIB = 256, 128, 192
GUARANTEED = (
    f'<ovirt-vm:minGuaranteedMemoryMb type="int">{GUARANTEED_MIB}</ovirt-vm:minGuaranteedMemoryMb>'
    "</ovirt-vm:vm>"
)


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = Agent(tmp_path_factory.mktemp("bal"))  # short: QEMU's socket paths live under it
    try:
        yield running
    finally:
        running.stop_all()


def _balloon_info(agent: Agent, vm_id: str) -> dict[str, Any]:
    kind, stats = agent.call("VM.getStats", vmID=vm_id)
    if kind != "ok":
        return {}
    info: dict[str, Any] = stats[0].get("balloonInfo", {})
    return info


def test_the_balloon_target_and_minimum_are_reported_after_an_agent_restart(
    agent: Agent, accelerator: Any
):
    first = agent.start_ready()
    vm_id, name = str(uuid.uuid4()), "balloon-kept"
    disk = make_overlay(make_halting_base(agent.directory), agent.directory / "disk.qcow2")
    xml = domain_xml(
        name=name,
        uuid=vm_id,
        disk=disk,
        domain_type=accelerator.domain_type,
        memory_mib=MEMORY_MIB,
        ovirt_metadata=True,
    ).replace("</ovirt-vm:vm>", GUARANTEED)
    pid = 0
    try:
        with connect("127.0.0.1", agent.port, timeout=30) as cli:
            cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
            wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "Up")
            wait_for(lambda: _balloon_info(agent, vm_id), 30, "the first balloonInfo")
            before = _balloon_info(agent, vm_id)
            assert before["balloon_target"] == before["balloon_cur"] == str(MEMORY_MIB * MIB)
            assert before["balloon_min"] == str(GUARANTEED_MIB * MIB)  # not 0

            cli.VM.setBalloonTarget(vmID=vm_id, target=TARGET_MIB * MIB)
            wait_for(
                lambda: _balloon_info(agent, vm_id)["balloon_target"] == str(TARGET_MIB * MIB),
                30,
                "the target in balloonInfo",
            )
        assert _balloon_info(agent, vm_id)["balloon_cur"] == str(MEMORY_MIB * MIB)  # no driver
        pid = qemu_pid(agent.embed_root, name, vm_id)

        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        agent.start_ready()

        after = wait_for(lambda: _balloon_info(agent, vm_id), 60, "balloonInfo after restart")
        assert qemu_pid(agent.embed_root, name, vm_id) == pid  # the same guest, adopted
        assert after["balloon_target"] == str(TARGET_MIB * MIB)
        assert after["balloon_cur"] == str(MEMORY_MIB * MIB)
        assert after["balloon_min"] == str(GUARANTEED_MIB * MIB)
        assert agent.call("VM.destroy", vmID=vm_id)[0] == "ok"
    finally:
        if pid:
            kill_qemu(pid, vm_id)
        agent.stop_all()
