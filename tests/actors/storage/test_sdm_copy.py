"""SDM.copy_data: a volume's data copied into another volume by a job, as the Engine
copies a disk: create the destination volume, start the job, poll Host.getJobs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    COW,
    RAW,
    DataCenter,
    MiB,
    local_data_center,
    new_id,
    storage_host,
    succeeded,
)
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError

SIZE = 8 * MiB


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Client, DataCenter]]:
    dc = local_data_center(tmp_path / "sd")
    with storage_host(tmp_path) as cli:
        dc.setup(cli)
        yield cli, dc


def _endpoint(dc: DataCenter, img: str, vol: str) -> dict[str, str]:
    return {"endpoint_type": "div", "sd_id": dc.sd, "img_id": img, "vol_id": vol}


def _job(cli: Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = cli.Host.getJobs(job_ids=[job_id])[job_id]
    return job


@pytest.mark.libvirt
def test_copy_data_copies_a_volume_into_another_as_a_job(setup: tuple[Client, DataCenter]):
    cli, dc = setup
    src_img, src, dst_img, dst = new_id(), new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, src_img, src, fmt=RAW, size=SIZE))
    source = dc.prepare(cli, src_img, src)
    pattern = os.urandom(MiB)
    with Path(source).open("r+b") as disk:
        disk.seek(3 * MiB)
        disk.write(pattern)
    succeeded(cli, dc.create_volume(cli, dst_img, dst, fmt=COW, size=SIZE))

    job_id = new_id()
    assert (
        cli.SDM.copy_data(
            job_id=job_id,
            source=_endpoint(dc, src_img, src),
            destination=_endpoint(dc, dst_img, dst),
        )
        is True
    )
    job = wait_for(lambda: (j := _job(cli, job_id))["status"] == "done" and j, 30, "the copy")
    assert job["progress"] == 100.0
    assert job["description"].startswith("copy_data")

    target = dc.prepare(cli, dst_img, dst)
    compared = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", source, target],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    info = cli.Volume.getInfo(**dc.ids(dst_img, dst))
    assert (info["legality"], info["format"]) == ("LEGAL", "COW")


@pytest.mark.libvirt
def test_copy_data_from_a_missing_volume_fails_the_job_and_marks_nothing(
    setup: tuple[Client, DataCenter],
):
    cli, dc = setup
    dst_img, dst = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, dst_img, dst, fmt=COW, size=SIZE))
    job_id = new_id()
    cli.SDM.copy_data(
        job_id=job_id,
        source=_endpoint(dc, new_id(), new_id()),
        destination=_endpoint(dc, dst_img, dst),
    )
    job = wait_for(lambda: (j := _job(cli, job_id))["status"] == "failed" and j, 30, "the job")
    assert job["error"]["code"] in (201, 268)
    assert cli.Volume.getInfo(**dc.ids(dst_img, dst))["legality"] == "LEGAL"
    with pytest.raises(ServerError) as raised:
        cli.SDM.copy_data(job_id=new_id(), source={"endpoint_type": "url"}, destination={})
    assert raised.value.code == 91
