"""kill -9 of the agent in the middle of VM.hibernate: the guest runs on, Up.

The agent is a real `hostvisor serve` process; its embedded libvirt runs inside
it, so a kill -9 ends libvirt's save with it (on a system libvirt the save would go
on: see the module doc of snapshot_hibernation.py). The memory dump volume crawls
(site/slow_storage.py), so the kill lands while libvirt writes the guest's memory,
the guest paused for it, every time.

VDSM's rule for a hibernation that did not complete (virt/migration.py, a "file
mode" migration that failed: `_recover` resumes the guest) is that the guest runs
on: the restarted agent finds the domain whose save was cancelled, resumes it if it
is still paused for the save, and reports it Up; its disks and the metadata's volume
ids are as before, the storage's chain untouched. The Engine, which saw "Saving
State" and then Up, ends its HibernateVmCommand failed and removes the two memory
volumes it made; they hold what was written (VDSM's configuration, a partial dump).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from slow_storage import make_crawling
from snapshot_helpers import MemoryVolumes

from harness.agent import Agent, kill9
from harness.engine import (
    COW,
    LOCALFS,
    RAW,
    DataCenter,
    MiB,
    engine_vm_xml,
    new_id,
    qemu_chain,
    qemu_check,
    succeeded,
)
from harness.engine import write_halting_boot_sector as make_bootable
from harness.waiting import wait_for
from hostvisor.actors.vm.snapshot_hibernation import (
    OTHER,
    RESUMED,
    SAVING,
    read_conf,
    save_action,
)
from hostvisor.api.client import connect

pytestmark = [pytest.mark.slow, pytest.mark.kvm, pytest.mark.libvirt]


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = Agent(tmp_path_factory.mktemp("hk"))
    try:
        yield running
    finally:
        running.stop_all()


def _status(cli: Any, vm_id: str) -> str:
    status: str = cli.VM.getStats(vmID=vm_id)[0]["status"]
    return status


def _guest(cli: Any, dc: DataCenter, kind: str) -> tuple[str, str, str]:
    """A 512 MiB guest on a two-volume image, Up: (vm id, image, leaf)."""
    img, base, leaf, vm_id = new_id(), new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=16 * MiB))
    make_bootable(dc.prepare(cli, img, base))
    succeeded(cli, dc.create_volume(cli, img, leaf, fmt=COW, size=16 * MiB, parent=base))
    xml = engine_vm_xml(
        name=f"hk-{vm_id[:6]}", vm_id=vm_id, dc=dc, img=img, vol=leaf, kind=kind
    ).replace("<memory unit='MiB'>64</memory>", "<memory unit='MiB'>512</memory>")
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    wait_for(lambda: _status(cli, vm_id) == "Up", 60, "Up")
    return vm_id, img, leaf


def test_kill_9_mid_hibernation_leaves_the_guest_running(
    agent: Agent, tmp_path: Path, accelerator: Any
) -> None:
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    first = agent.start_ready()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.setup(cli)
        vm_id, img, leaf = _guest(cli, dc, accelerator.domain_type)
        base = qemu_chain(Path(dc.prepare(cli, img, leaf)))[0]
        leaf_path = dc.prepare(cli, img, leaf)
        memory = MemoryVolumes(cli, dc)
        reader = make_crawling(Path(dc.prepare(cli, memory.dump_img, memory.dump_vol)))
        cli.VM.hibernate(vmID=vm_id, hibernationVolHandle=memory.handle())
        assert _status(cli, vm_id) == "Saving State"
        wait_for(lambda: reader.read > 0, 30, "libvirt to begin writing the guest's memory")
    kill9(first)
    try:
        agent.start_ready()
        reader.hurry()  # whatever the dead save's iohelper still writes drains
        with connect("127.0.0.1", agent.port, timeout=60) as cli:
            wait_for(lambda: _status(cli, vm_id) == "Up", 60, "the guest Up again")
            dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
            assert f"<ovirt-vm:volumeID>{leaf}</ovirt-vm:volumeID>" in dumped
            assert leaf_path in dumped
            info = cli.Volume.getInfo(**dc.ids(img, leaf))
            assert (info["voltype"], info["legality"]) == ("LEAF", "LEGAL")
            conf = read_conf(dc.prepare(cli, memory.conf_img, memory.conf_vol))
            assert conf["vmId"] == vm_id  # VDSM's configuration was written first
            assert _status(cli, vm_id) == "Up"
        qemu_check(Path(leaf_path))
        assert qemu_chain(Path(leaf_path)) == [base, leaf]
    finally:
        reader.stop()
        agent.call("VM.destroy", vmID=vm_id)


@pytest.mark.parametrize(
    ("state", "reason", "job", "action"),
    [
        (
            libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_PAUSED_SAVE,
            libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
            SAVING,
        ),
        (
            libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_PAUSED_SAVE,
            libvirt.VIR_DOMAIN_JOB_NONE,
            RESUMED,
        ),
        (
            libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_PAUSED_SAVE,
            libvirt.VIR_DOMAIN_JOB_COMPLETED,
            RESUMED,
        ),
        (
            libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_PAUSED_USER,
            libvirt.VIR_DOMAIN_JOB_NONE,
            OTHER,
        ),
        (
            libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_PAUSED_IOERROR,
            libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
            OTHER,
        ),
        (libvirt.VIR_DOMAIN_RUNNING, 0, libvirt.VIR_DOMAIN_JOB_UNBOUNDED, OTHER),
    ],
    ids=["saving", "save-died", "save-done-not-stopped", "user-pause", "io-error", "running"],
)
def test_what_a_recovery_does_with_a_guest_paused_for_a_save(
    state: int, reason: int, job: int, action: str
) -> None:
    """A system libvirt saves on after the agent died: "Saving State"; a dead save: resume."""
    assert save_action(state, reason, job) == action
