"""kill -9 of the agent in the middle of a live merge: the new agent finishes it.

The agent is a real `hostvisor serve` process. A guest's active layer (96 MiB of
data) is being committed at 8 MiB/s when the agent is killed. QEMU's block job runs
on; the new agent reads the job from the domain's `<ovirt-vm:jobs>` metadata, reports
it in `vmJobs` (the Engine keeps polling), pivots once ready and syncs the metadata:
the chain and volumes end as an uninterrupted merge leaves them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.agent import Agent, kill9
from harness.engine import (
    COW,
    LOCALFS,
    RAW,
    DataCenter,
    MiB,
    engine_vm_xml,
    new_id,
    qemu_check,
    succeeded,
)
from harness.engine import write_halting_boot_sector as make_bootable
from harness.waiting import wait_for
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import Legality
from hostvisor.api.client import connect

LIB = Path(__file__).parent / "lib"

pytestmark = [pytest.mark.slow, pytest.mark.kvm, pytest.mark.libvirt]


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = Agent(tmp_path_factory.mktemp("bj"))
    try:
        yield running
    finally:
        running.stop_all()


def agent_env() -> dict[str, str]:
    """lib/ on the path (the crash stager imports its helpers)."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{LIB}:{path}" if path else str(LIB)}


def vm_jobs(cli: Any, vm_id: str) -> dict[str, Any]:
    jobs: dict[str, Any] = cli.VM.getStats(vmID=vm_id)[0].get("vmJobs", {})
    return jobs


def test_merge_survives_kill_9_of_the_agent(agent: Agent, tmp_path: Path, accelerator: Any) -> None:
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    first = agent.start_ready()
    img, base, top, vm_id, job = new_id(), new_id(), new_id(), new_id(), new_id()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.setup(cli)
        succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=128 * MiB))
        make_bootable(dc.prepare(cli, img, base))
        succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, size=128 * MiB, parent=base))
        leaf = Path(dc.prepare(cli, img, top))
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 96M", str(leaf)],
            capture_output=True,
            check=True,
        )
        xml = engine_vm_xml(
            name="bj-kill9", vm_id=vm_id, dc=dc, img=img, vol=top, kind=accelerator.domain_type
        )
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 60, "the guest Up")
        drive = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": top}
        cli.VM.merge(
            vmID=vm_id, drive=drive, baseVolUUID=base, topVolUUID=top, bandwidth="8", jobUUID=job
        )
        wait_for(
            lambda: int(vm_jobs(cli, vm_id).get(job, {}).get("cur", "0")) > 0,
            30,
            "the commit to be under way",
        )
    kill9(first)
    try:
        agent.start_ready()
        with connect("127.0.0.1", agent.port, timeout=60) as cli:
            # the Engine polls: the job is still reported until the merge is complete
            seen = wait_for(lambda: vm_jobs(cli, vm_id) or None, 30, "the resumed job")
            assert job in seen, seen
            assert seen[job]["blockJobType"] == "commit"
            wait_for(lambda: job not in vm_jobs(cli, vm_id), 60, "the merge to end")
            assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"
            dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
            assert f"{base}'" in dumped.split("<source file=", 1)[1].split("/>", 1)[0]
            top_info = cli.Volume.getInfo(**dc.ids(img, top))
            base_info = cli.Volume.getInfo(**dc.ids(img, base))
            assert top_info["legality"] == "ILLEGAL"
            assert base_info["legality"] == "LEGAL"
            cli.VM.destroy(vmID=vm_id)
            base_path = leaf.parent / base
            qemu_check(leaf)
            read = subprocess.run(
                ["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x33 1M 96M", str(base_path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert read.returncode == 0
            assert "Pattern verification failed" not in read.stdout
    finally:
        agent.call("VM.destroy", vmID=vm_id)


def test_merge_killed_between_illegal_leaf_and_pivot(
    agent: Agent, tmp_path: Path, accelerator: Any
) -> None:
    """The agent died in CLEANUP: the leaf already ILLEGAL, libvirt's commit ready, no
    pivot yet. The new agent pivots and syncs; the Engine sees the job until then."""
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    first = agent.start_ready()
    img, base, top, vm_id, job = new_id(), new_id(), new_id(), new_id(), new_id()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.setup(cli)
        succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=64 * MiB))
        make_bootable(dc.prepare(cli, img, base))
        succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, size=64 * MiB, parent=base))
        leaf = Path(dc.prepare(cli, img, top))
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x44 1M 8M", str(leaf)],
            capture_output=True,
            check=True,
        )
        xml = engine_vm_xml(
            name="bj-cleanup", vm_id=vm_id, dc=dc, img=img, vol=top, kind=accelerator.domain_type
        )
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 60, "the guest Up")
    kill9(first)
    try:
        disk = {"poolID": dc.sp, "domainID": dc.sd, "imageID": img, "volumeID": top}
        record = {"id": job, "drive": "vda", "disk": disk, "base": base, "top": top}
        record |= {"bandwidth": 0, "state": "COMMIT", "extend": None, "pivot": None}
        script = str(LIB / "crashed_cleanup.py")
        subprocess.run(
            [sys.executable, script, str(agent.embed_root), vm_id, json.dumps(record)],
            check=True,
            env={**os.environ, **agent_env()},
            timeout=120,
        )
        FileDomain(directory / dc.sd).set_legality(img, top, Legality.ILLEGAL)
        agent.start_ready()
        with connect("127.0.0.1", agent.port, timeout=60) as cli:
            wait_for(lambda: job not in vm_jobs(cli, vm_id), 60, "the merge to end")
            assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"
            dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
            assert f"{base}'" in dumped.split("<source file=", 1)[1].split("/>", 1)[0]
            assert f"<ovirt-vm:volumeID>{base}</ovirt-vm:volumeID>" in dumped
            assert cli.Volume.getInfo(**dc.ids(img, top))["legality"] == "ILLEGAL"
            assert cli.Volume.getInfo(**dc.ids(img, base))["legality"] == "LEGAL"
            cli.VM.destroy(vmID=vm_id)
            qemu_check(leaf)
    finally:
        agent.call("VM.destroy", vmID=vm_id)
