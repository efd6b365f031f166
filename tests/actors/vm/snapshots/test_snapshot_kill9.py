"""kill -9 of the agent in the middle of a live snapshot: the chain stays consistent.

The agent is a real `hostvisor serve` process; its guest outlives it. While a
snapshot runs, the job's record sits in the domain's metadata; the next agent reads
it, finishes the job from what qemu runs on, and reports it under the Engine's
jobUUID (Host.getJobs, job_type virt): done when qemu had switched to the new leaf
(the metadata then names it), failed (48) when it had not (the VM stays on its leaf).
The storage's chain and metadata are the Engine's in both cases (new LEAF, parent
INTERNAL, both LEGAL) and `qemu-img check` finds nothing.

Where exactly the kill lands in a real snapshot is a matter of milliseconds, so the
two places that matter are also made exactly: with the agent dead, a helper process
takes the agent's steps on its libvirt root up to the point of the kill — the job's
record written, and libvirt's switch done or not — then the agent starts again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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
    qemu_chain,
    qemu_check,
    succeeded,
)
from harness.engine import write_halting_boot_sector as make_bootable
from harness.waiting import wait_for
from hostvisor.api.client import connect

pytestmark = [pytest.mark.slow, pytest.mark.kvm, pytest.mark.libvirt]

SNAPSHOT_FAILED = 48


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = Agent(tmp_path_factory.mktemp("sn"))
    try:
        yield running
    finally:
        running.stop_all()


class Guest:
    """A guest of the agent on a two-volume image, and the new leaf the Engine made."""

    def __init__(self, cli: Any, dc: DataCenter, kind: str) -> None:
        self.dc = dc
        self.img, self.base, self.leaf, self.new = new_id(), new_id(), new_id(), new_id()
        self.vm_id = new_id()
        size = 16 * MiB
        succeeded(cli, dc.create_volume(cli, self.img, self.base, fmt=RAW, size=size))
        make_bootable(dc.prepare(cli, self.img, self.base))
        succeeded(
            cli, dc.create_volume(cli, self.img, self.leaf, fmt=COW, size=size, parent=self.base)
        )
        xml = engine_vm_xml(
            name=f"sn-k9-{self.vm_id[:6]}",
            vm_id=self.vm_id,
            dc=dc,
            img=self.img,
            vol=self.leaf,
            kind=kind,
        )
        cli.VM.create(vmID=self.vm_id, vmParams={"xml": xml})
        wait_for(lambda: cli.VM.getStats(vmID=self.vm_id)[0]["status"] == "Up", 60, "Up")
        succeeded(
            cli, dc.create_volume(cli, self.img, self.new, fmt=COW, size=size, parent=self.leaf)
        )
        self.new_path = dc.prepare(cli, self.img, self.new)
        self.leaf_path = dc.prepare(cli, self.img, self.leaf)

    def drive(self) -> dict[str, str]:
        return {
            "domainID": self.dc.sd,
            "imageID": self.img,
            "volumeID": self.new,
            "baseVolumeID": self.leaf,
        }

    def check(self, cli: Any, *, taken: bool) -> None:
        """The VM, its metadata, qemu's chain and the storage agree."""
        dumped = cli.Host.dumpxmls(vmList=[self.vm_id])[self.vm_id]
        source = dumped.split("<source file=", 1)[1][1:].split("'", 1)[0].split('"', 1)[0]
        running, volume = (self.new_path, self.new) if taken else (self.leaf_path, self.leaf)
        assert source == running
        assert f"<ovirt-vm:volumeID>{volume}</ovirt-vm:volumeID>" in dumped
        if "snapshot_job" in dumped:  # kept, ended, while the job is listed
            assert "ended" in dumped.split("snapshot_job", 2)[1]
        assert cli.VM.getStats(vmID=self.vm_id)[0]["status"] == "Up"
        new = cli.Volume.getInfo(**self.dc.ids(self.img, self.new))
        leaf = cli.Volume.getInfo(**self.dc.ids(self.img, self.leaf))
        assert (new["voltype"], new["legality"], new["parent"]) == ("LEAF", "LEGAL", self.leaf)
        assert (leaf["voltype"], leaf["legality"]) == ("INTERNAL", "LEGAL")
        assert qemu_chain(Path(self.new_path)) == [self.base, self.leaf, self.new]
        qemu_check(Path(self.new_path))


def _job(cli: Any, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] | None = cli.Host.getJobs(job_type="virt", job_ids=[job_id]).get(job_id)
    return job if job is not None and job["status"] not in ("pending", "running") else None


def test_a_snapshot_survives_kill_9_of_the_agent(
    agent: Agent, tmp_path: Path, accelerator: Any
) -> None:
    """A real snapshot, the agent killed as soon as the verb has answered."""
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    first = agent.start_ready()
    job_id = new_id()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.setup(cli)
        guest = Guest(cli, dc, accelerator.domain_type)
        cli.VM.snapshot(vmID=guest.vm_id, snapDrives=[guest.drive()], frozen=True, jobUUID=job_id)
    kill9(first)
    try:
        agent.start_ready()
        with connect("127.0.0.1", agent.port, timeout=60) as cli:
            job = wait_for(lambda: _job(cli, job_id), 30, "the job's outcome")
            assert job["status"] in ("done", "failed"), job
            if job["status"] == "failed":
                assert job["error"]["code"] == SNAPSHOT_FAILED
            guest.check(cli, taken=job["status"] == "done")
    finally:
        agent.call("VM.destroy", vmID=guest.vm_id)


HELPER = textwrap.dedent(
    """
    import json, sys
    from hostvisor.actors.hypervisor.connection import embed_uri, open_connection
    from hostvisor.actors.vm import snapshot_plan, snapshot_work
    root, vm_id, switch, record = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    record = json.loads(record)
    domain = open_connection(embed_uri(__import__("pathlib").Path(root)))
    domain = domain.lookupByUUIDString(vm_id)
    live = domain.XMLDesc(0)
    snapshot_work._write_metadata(domain, snapshot_plan.metadata_with(live, job=record))
    if switch:
        drives = [snapshot_plan.SnapDrive.of_record(d) for d in record["newDrives"]]
        domain.snapshotCreateXML(
            snapshot_plan.snapshot_xml(drives, []), snapshot_work.SNAPSHOT_FLAGS
        )
    print("ok")
    """
)


@pytest.mark.parametrize("switched", [True, False], ids=["after-the-switch", "before-it"])
def test_the_next_agent_finishes_a_snapshot_the_last_one_died_in(
    agent: Agent, tmp_path: Path, accelerator: Any, switched: bool
) -> None:
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    first = agent.start_ready()
    job_id = new_id()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.setup(cli)
        guest = Guest(cli, dc, accelerator.domain_type)
    kill9(first)
    record = {
        "jobUUID": job_id,
        "frozen": True,
        "abort": False,
        "completed": False,
        "newDrives": [
            {
                "name": "vda",
                "poolID": dc.sp,
                "domainID": dc.sd,
                "imageID": guest.img,
                "baseVolumeID": guest.leaf,
                "volumeID": guest.new,
                "diskType": "file",
                "path": guest.new_path,
            }
        ],
    }
    helper = subprocess.run(
        [
            sys.executable,
            "-c",
            HELPER,
            str(agent.embed_root),
            guest.vm_id,
            "1" if switched else "0",
            json.dumps(record),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helper.returncode == 0, helper.stderr
    try:
        agent.start_ready()
        with connect("127.0.0.1", agent.port, timeout=60) as cli:
            job = wait_for(lambda: _job(cli, job_id), 30, "the recovered job's outcome")
            assert job["description"] == "snapshot_vm"
            if switched:
                assert job["status"] == "done", job
            else:
                assert job["status"] == "failed", job
                assert job["error"]["code"] == SNAPSHOT_FAILED
            guest.check(cli, taken=switched)
    finally:
        agent.call("VM.destroy", vmID=guest.vm_id)
