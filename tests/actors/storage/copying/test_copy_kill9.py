"""A copy killed with the agent (SIGKILL) is never reported LEGAL after a restart.

The agent runs as a real `hostvisor serve` process whose `qemu-img convert` waits
at a FIFO, so the kill lands mid-copy every time: the destination is laid out, its
data not yet written. After a restart the destination reads ILLEGAL (and cannot be
prepared), the task reads finished and aborted once this host is SPM again, an
Image.move's source is all there, and the Engine's retry (force) completes the copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from actors.storage.copying.conftest import new_ids, same_data

from harness.agent import Agent, gated_qemu_img, kill9
from harness.engine import LOCALFS, RAW, DataCenter, MiB, new_id
from harness.waiting import wait_for
from hostvisor.api.client import ServerError, connect

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

NOT_LEGAL_CHAIN, ABORTED = 262, 411
SIZE = 8 * MiB


def _gated_convert(directory: Path) -> dict[str, str]:
    """An environment whose `qemu-img convert` waits for a line on a FIFO nobody writes."""
    _gate, env = gated_qemu_img(directory, "convert")
    return env


def _finished(cli: Any, task: str) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        lambda: (s := cli.Task.getStatus(taskID=task))["taskState"] == "finished" and s,
        60,
        f"task {task}",
    )
    cli.Task.clear(taskID=task)
    return status


def _two_domains(cli: Any, directory: Path) -> tuple[DataCenter, str]:
    (directory / "a").mkdir(parents=True)
    (directory / "b").mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory / "a")}, LOCALFS)
    other = DataCenter({"id": new_id(), "connection": str(directory / "b")}, LOCALFS)
    dc.setup(cli)
    other.connect_server(cli)
    other.create_domain(cli)
    cli.StorageDomain.attach(storagedomainID=other.sd, storagepoolID=dc.sp)
    cli.StorageDomain.activate(storagedomainID=other.sd, storagepoolID=dc.sp)
    return dc, other.sd


def _volume(cli: Any, dc: DataCenter, sd: str, img: str, vol: str) -> str:
    ids = {**dc.ids(img, vol), "storagedomainID": sd}
    task = cli.Volume.create(
        **ids,
        size=str(SIZE),
        volFormat=RAW,
        preallocate=2,
        diskType="DATA",
        desc="",
        srcImgUUID="00000000-0000-0000-0000-000000000000",
        srcVolUUID="00000000-0000-0000-0000-000000000000",
    )
    assert _finished(cli, task)["taskResult"] == "success"
    path: str = cli.Image.prepare(**ids)["path"]
    with Path(path).open("r+b") as disk:
        disk.write(os.urandom(3 * MiB))
    return path


def _killed_mid_copy(
    agent: Agent, tmp_path: Path, start: Callable[[Any, DataCenter, str, str, str], str]
) -> tuple[DataCenter, str, str, str, str]:
    """Start an agent, make a volume, start a copy, kill -9 while it converts.

    Returns (dc, domain b, source image, source volume, task id).
    """
    first = agent.start_ready(env=_gated_convert(tmp_path))
    img, vol = new_ids(2)
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc, b = _two_domains(cli, tmp_path / "sd")
        _volume(cli, dc, dc.sd, img, vol)
        task = start(cli, dc, b, img, vol)
        held = wait_for(
            lambda: [
                p
                for p in psutil.Process(first.pid).children(recursive=True)
                if "convert" in " ".join(p.cmdline())
            ],
            30,
            "qemu-img convert held at the gate",
        )
        assert cli.Task.getStatus(taskID=task)["taskState"] == "running"
    kill9(first)
    for process in held:  # the agent's own children, by their pid
        process.kill()
    return dc, b, img, vol, task


def _after_restart(cli: Any, dc: DataCenter, task: str) -> None:
    """spmStart again; the killed task reads finished, aborted, its rollback not run."""
    spm = cli.StoragePool.spmStart(storagepoolID=dc.sp, prevID=-1, prevLver="-1")
    assert _finished(cli, spm)["taskResult"] == "success"
    killed = cli.Host.getAllTasksStatuses()[task]
    assert (killed["taskState"], killed["taskResult"], killed["code"]) == (
        "finished",
        "cleanFailure",
        ABORTED,
    )
    cli.Task.clear(taskID=task)


def test_volume_copy_killed_mid_copy_leaves_the_destination_illegal(agent: Agent, tmp_path: Path):
    d_img, d_vol = new_ids(2)

    def start(cli: Any, dc: DataCenter, b: str, img: str, vol: str) -> str:
        task: str = cli.Volume.copy(
            **dc.ids(img, vol),
            dstSdUUID=b,
            dstImgUUID=d_img,
            dstVolUUID=d_vol,
            desc="t",
            volType=6,
            volFormat=4,
            preallocate=2,
            postZero="false",
            force="false",
        )
        return task

    dc, b, img, vol, task = _killed_mid_copy(agent, tmp_path, start)
    agent.start_ready()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        target = {**dc.ids(d_img, d_vol), "storagedomainID": b}
        info = cli.Volume.getInfo(**target)
        assert (info["legality"], info["status"]) == ("ILLEGAL", "ILLEGAL")
        with pytest.raises(ServerError) as raised:
            cli.Image.prepare(**target)
        assert raised.value.code == NOT_LEGAL_CHAIN
        _after_restart(cli, dc, task)
        # The Engine tries again: an ILLEGAL destination is replaced, as in VDSM.
        task = start(cli, dc, b, img, vol)
        assert _finished(cli, task)["taskResult"] == "success"
        assert cli.Volume.getInfo(**target)["legality"] == "LEGAL"
        identical, why = same_data(
            cli.Image.prepare(**dc.ids(img, vol))["path"], cli.Image.prepare(**target)["path"]
        )
        assert identical, why


def test_image_move_killed_mid_copy_keeps_the_source_and_no_legal_copy(
    agent: Agent, tmp_path: Path
):
    def start(cli: Any, dc: DataCenter, b: str, img: str, _vol: str) -> str:
        task: str = cli.Image.move(
            imageID=img,
            storagepoolID=dc.sp,
            storagedomainID=dc.sd,
            dstSdUUID=b,
            operation=2,
            postZero="false",
            force="false",
        )
        return task

    dc, b, img, vol, task = _killed_mid_copy(agent, tmp_path, start)
    agent.start_ready()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        source = cli.Volume.getInfo(**dc.ids(img, vol))
        assert source["legality"] == "LEGAL"
        target = {**dc.ids(img, vol), "storagedomainID": b}
        assert cli.Volume.getInfo(**target)["legality"] == "ILLEGAL"
        _after_restart(cli, dc, task)
        # The Engine's retry: an ILLEGAL image in the destination is replaced.
        task = start(cli, dc, b, img, vol)
        assert _finished(cli, task)["taskResult"] == "success"
        assert cli.Volume.getInfo(**target)["legality"] == "LEGAL"
        assert img not in cli.StorageDomain.getImages(storagedomainID=dc.sd)
