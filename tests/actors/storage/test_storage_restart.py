"""An agent killed with SIGKILL comes back with its storage as it was.

The agent runs as a real `hostvisor serve` process. After kill -9 and a new start on
the same state directory: the connected pool, the domains and every volume are
reported as before, from what is on disk and in the state directory. The SPM role
is not kept (its lock died with the process): spmStart takes it again. A volume
whose creation the kill interrupted is ILLEGAL, never LEGAL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.agent import Agent, gated_qemu_img, kill9
from harness.engine import COW, LOCALFS, RAW, DataCenter, new_id, succeeded
from harness.waiting import wait_for
from hostvisor.api.client import ServerError, connect

NOT_LEGAL_CHAIN = 262


def _report(cli: Any, dc: DataCenter, volumes: dict[str, str]) -> dict[str, Any]:
    """Everything the Engine reads back about this host's storage."""
    info = cli.StoragePool.getInfo(storagepoolID=dc.sp)
    return {
        "pools": cli.Host.getConnectedStoragePools(),
        "domains": cli.Host.getStorageDomains(),
        "domain": cli.StorageDomain.getInfo(storagedomainID=dc.sd),
        "pool": {k: v for k, v in info["info"].items() if k not in ("spm_id", "lver")},
        "images": cli.StorageDomain.getImages(storagedomainID=dc.sd),
        "volumes": {
            vol: {
                k: v
                for k, v in cli.Volume.getInfo(**dc.ids(img, vol)).items()
                if k not in ("truesize", "apparentsize")  # may settle after writes
            }
            for vol, img in volumes.items()
        },
    }


@pytest.mark.slow
@pytest.mark.libvirt
def test_pool_domains_and_volumes_survive_kill_9(agent: Agent, tmp_path: Path):
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    first = agent.start_ready()
    img, base, top = new_id(), new_id(), new_id()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.setup(cli)
        succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW))
        succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, parent=base))
        before = _report(cli, dc, {base: img, top: img})
    kill9(first)

    agent.start_ready()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        assert _report(cli, dc, {base: img, top: img}) == before
        assert cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] == "Free"
        stats = wait_for(
            lambda: (s := cli.Host.getStorageRepoStats()).get(dc.sd, {}).get("valid") and s,
            30,
            "the domain's first health check",
        )
        assert stats[dc.sd]["code"] == 0
        assert stats[dc.sd]["acquired"] is True
        dc.become_spm(cli)  # the Engine elects this host again
        succeeded(cli, dc.create_volume(cli, new_id(), new_id(), fmt=COW))


@pytest.mark.slow
@pytest.mark.libvirt
def test_a_volume_killed_mid_create_is_illegal_after_restart(agent: Agent, tmp_path: Path):
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    first = agent.start_ready(env=gated_qemu_img(tmp_path)[1])
    img, vol = new_id(), new_id()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        dc.setup(cli)
        task = dc.create_volume(cli, img, vol, fmt=RAW)
        meta = directory / dc.sd / "images" / img / f"{vol}.meta"
        wait_for(meta.exists, 30, "the volume's metadata")
        assert cli.Task.getStatus(taskID=task)["taskState"] == "running"
        held = wait_for(
            lambda: [
                p
                for p in psutil.Process(first.pid).children(recursive=True)
                if vol in " ".join(p.cmdline())
            ],
            30,
            "qemu-img held at the gate",
        )
    assert "LEGALITY=ILLEGAL" in meta.read_text()
    kill9(first)
    for process in held:  # the agent's own child, by its pid
        process.kill()

    agent.start_ready()
    with connect("127.0.0.1", agent.port, timeout=60) as cli:
        info = cli.Volume.getInfo(**dc.ids(img, vol))
        assert (info["legality"], info["status"]) == ("ILLEGAL", "ILLEGAL")
        with pytest.raises(ServerError) as raised:
            dc.prepare(cli, img, vol)
        assert raised.value.code == NOT_LEGAL_CHAIN
        # The Engine cleans it up.
        dc.become_spm(cli)
        succeeded(cli, cli.Image.delete(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img))
        assert img not in cli.StorageDomain.getImages(storagedomainID=dc.sd)
