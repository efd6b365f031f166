"""Copy and move fixtures: one host, one pool with two file domains, real qemu-img.

`pool` is module-scoped (a host per module); each test makes its own images with
fresh ids. The helpers send the verbs as the Engine does and check data with
`qemu-img compare`, never by trusting the metadata.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.agent import gated_qemu_img
from harness.components import need
from harness.engine import (
    BLANK,
    COW,
    SPARSE,
    DataCenter,
    MiB,
    local_data_center,
    new_id,
    storage_host,
)
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError


@dataclass
class Pool:
    """A connected pool, this host its SPM, with a master domain `a` and a domain `b`."""

    cli: Client
    dc: DataCenter
    b: str

    @property
    def a(self) -> str:
        return self.dc.sd

    def ids(self, sd: str, img: str, vol: str) -> dict[str, str]:
        return {
            "storagepoolID": self.dc.sp,
            "storagedomainID": sd,
            "imageID": img,
            "volumeID": vol,
        }

    def create(  # noqa: PLR0913 - Volume.create's own params
        self,
        sd: str,
        img: str,
        vol: str,
        *,
        size: int | None = None,
        fmt: int = COW,
        prealloc: int = SPARSE,
        parent: str = BLANK,
        parent_img: str | None = None,
    ) -> None:
        """Volume.create as the Engine sends it; waits for the task's success.

        A layer on a parent takes the parent's size unless `size` says otherwise.
        """
        task = self.cli.Volume.create(
            **self.ids(sd, img, vol),
            size=str(size if size is not None else 0 if parent != BLANK else 8 * MiB),
            volFormat=fmt,
            preallocate=prealloc,
            diskType="DATA",
            desc="a disk",
            srcImgUUID=(parent_img or img) if parent != BLANK else BLANK,
            srcVolUUID=parent,
        )
        assert finished(self.cli, task)["taskResult"] == "success"

    def path(self, sd: str, img: str, vol: str) -> str:
        """Image.prepare: the volume's path (its chain must be LEGAL)."""
        answer: str = self.cli.Image.prepare(
            storagepoolID=self.dc.sp, storagedomainID=sd, imageID=img, volumeID=vol
        )["path"]
        return answer

    def info(self, sd: str, img: str, vol: str) -> dict[str, Any]:
        info: dict[str, Any] = self.cli.Volume.getInfo(**self.ids(sd, img, vol))
        return info

    def volumes(self, sd: str, img: str) -> list[str]:
        """Image.getVolumes ([] while the image is not there)."""
        if img not in self.images(sd):
            return []
        ids = {"storagepoolID": self.dc.sp, "storagedomainID": sd, "imageID": img}
        volumes: list[str] = self.cli.Image.getVolumes(**ids)
        return volumes

    def images(self, sd: str) -> list[str]:
        images: list[str] = self.cli.StorageDomain.getImages(storagedomainID=sd)
        return images


def finished(cli: Any, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll Task.getStatus until the task finished (as the Engine does); clear it."""

    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = cli.Task.getStatus(taskID=task_id)
        return status if status["taskState"] == "finished" else None

    status = wait_for(done, timeout, f"task {task_id}")
    cli.Task.clear(taskID=task_id)
    return status


def job_ended(cli: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll Host.getJobs until the job is done, failed or aborted."""

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = cli.Host.getJobs(job_ids=[job_id])[job_id]
        return job if job["status"] in {"done", "failed", "aborted"} else None

    ended_job: dict[str, Any] = wait_for(ended, timeout, f"job {job_id}")
    return ended_job


def write(path: str, fmt: str, offset: int, length: int, pattern: int) -> None:
    """Write `length` bytes of `pattern` at `offset` through qemu-io (any format)."""
    subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", path],
        check=True,
        capture_output=True,
    )


def same_data(first: str, second: str) -> tuple[bool, str]:
    """`qemu-img compare` of two images (formats probed): (identical, its output)."""
    done = subprocess.run(
        ["qemu-img", "compare", "-U", first, second],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0, done.stdout + done.stderr


def qemu_info(path: str) -> dict[str, Any]:
    import json  # noqa: PLC0415 - only here

    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output", "json", path],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def error_code(call: Any, **params: Any) -> int:
    """The code of the error `call(**params)` answers (it must fail)."""
    with pytest.raises(ServerError) as raised:
        call(**params)
    code: int = raised.value.code
    return code


@pytest.fixture(scope="session")
def qemu_tools() -> None:
    need(shutil.which("qemu-img") is not None, "qemu-img (Debian qemu-utils) is not installed")
    need(shutil.which("qemu-io") is not None, "qemu-io (Debian qemu-utils) is not installed")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, qemu_tools: None) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("copying")
    dc = local_data_center(tmp / "a")
    other = local_data_center(tmp / "b")
    with storage_host(tmp) as cli:
        dc.setup(cli)
        other.connect_server(cli)
        other.create_domain(cli)
        assert cli.StorageDomain.attach(storagedomainID=other.sd, storagepoolID=dc.sp) is True
        cli.StorageDomain.activate(storagedomainID=other.sd, storagepoolID=dc.sp)
        yield Pool(cli=cli, dc=dc, b=other.sd)


@pytest.fixture
def gated_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A FIFO; `qemu-img convert` (in this process's host) waits for a line on it first.

    So a copy stops exactly after its destination was laid out, before any data:
    the test looks at it there, then writes a line to let it go on.
    """
    gate, env = gated_qemu_img(tmp_path, "convert")
    monkeypatch.setenv("PATH", env["PATH"])
    return gate


def release(gate: Path) -> None:
    """Let one gated `qemu-img convert` go on (it must be waiting at the gate)."""
    with gate.open("w") as opened:
        opened.write("go\n")


def new_ids(count: int) -> list[str]:
    return [new_id() for _ in range(count)]
