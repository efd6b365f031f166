"""SPM tasks outlive a killed agent, on the master domain, as VDSM keeps them.

The agent runs as a real `hostvisor serve` process. One Volume.create task finishes
and is not cleared; a second is held mid-way (its `qemu-img create` waits at a FIFO)
when the agent gets SIGKILL. After a restart and the Engine's spmStart
(SpmStartVDSCommand), Host.getAllTasksStatuses (HSMGetAllTasksStatusesVDSCommand)
reports both with their true state: the first finished with success, the second
finished and aborted (code 411) by the agent's death, its rollback not run
(cleanFailure: its volume is left ILLEGAL). Task.clear removes each for good.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.agent import Agent, gated_qemu_img, kill9
from harness.engine import LOCALFS, RAW, DataCenter, new_id
from harness.waiting import wait_for
from hostvisor.api.client import ServerError, connect

ABORTED = 411
UNKNOWN_TASK = 401


def _stored(tasks: Path, task_id: str) -> dict[str, Any] | None:
    try:
        stored: dict[str, Any] = json.loads((tasks / f"{task_id}.task").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return stored


@pytest.mark.slow
@pytest.mark.libvirt
def test_an_spm_task_killed_mid_way_is_reported_with_its_true_state(agent: Agent, tmp_path: Path):
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    gate, env = gated_qemu_img(tmp_path)
    first = agent.start_ready(env=env)
    tasks = directory / dc.sd / "master" / "tasks"
    img = new_id()
    done_vol, held_vol = new_id(), new_id()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.connect_server(cli)
        dc.create_domain(cli)
        dc.create_pool(cli)
        dc.connect_pool(cli)
        spm = cli.StoragePool.spmStart(storagepoolID=dc.sp, prevID=-1, prevLver="-1")
        wait_for(lambda: cli.Task.getStatus(taskID=spm)["taskState"] == "finished", 30, "spmStart")
        cli.Task.clear(taskID=spm)

        done_task = dc.create_volume(cli, img, done_vol, fmt=RAW)
        with gate.open("w") as opened:  # let this one create through
            opened.write("go\n")
        wait_for(
            lambda: (s := _stored(tasks, done_task)) and s["phase"] == "finished",
            30,
            "the finished task on disk",
        )
        assert cli.Task.getStatus(taskID=done_task)["taskResult"] == "success"

        held_task = dc.create_volume(cli, img, held_vol, fmt=RAW)
        wait_for(
            lambda: (s := _stored(tasks, held_task)) and s["phase"] == "running",
            30,
            "the held task on disk, running",
        )
        held = wait_for(
            lambda: [
                p
                for p in psutil.Process(first.pid).children(recursive=True)
                if held_vol in " ".join(p.cmdline())
            ],
            30,
            "qemu-img held at the gate",
        )
        assert cli.Task.getStatus(taskID=held_task)["taskState"] == "running"

    kill9(first)
    for process in held:
        process.kill()

    agent.start_ready()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        # Not SPM after the kill: as VDSM, the tasks come back with the SPM role.
        assert cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] == "Free"
        spm = cli.StoragePool.spmStart(storagepoolID=dc.sp, prevID=-1, prevLver="-1")
        wait_for(lambda: cli.Task.getStatus(taskID=spm)["taskState"] == "finished", 30, "spmStart")
        cli.Task.clear(taskID=spm)

        statuses = cli.Host.getAllTasksStatuses()
        assert statuses[done_task] == {
            "taskID": done_task,
            "taskState": "finished",
            "taskResult": "success",
            "code": 0,
            "message": "1 jobs completed successfully",
        }
        killed = statuses[held_task]
        assert (killed["taskState"], killed["taskResult"], killed["code"]) == (
            "finished",
            "cleanFailure",
            ABORTED,
        )
        assert cli.Task.getStatus(taskID=held_task) == killed
        assert cli.Task.getInfo(taskID=held_task) == {"id": held_task, "verb": "createVolume"}
        info = cli.Volume.getInfo(**dc.ids(img, held_vol))
        assert info["legality"] == "ILLEGAL"

        for task in (done_task, held_task):
            cli.Task.clear(taskID=task)
        wait_for(lambda: not list(tasks.glob("*.task")), 30, "the cleared tasks' files gone")
        with pytest.raises(ServerError) as raised:
            cli.Task.getStatus(taskID=held_task)
        assert raised.value.code == UNKNOWN_TASK
