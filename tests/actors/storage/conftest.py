"""Storage fixtures: real file domains in tmp_path, real qemu-img."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.components import need
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import DomainClass, DomainType


@pytest.fixture(scope="session")
def qemu_img() -> str:
    path = shutil.which("qemu-img")
    need(path is not None, "qemu-img (Debian qemu-utils) is not installed")
    assert path is not None
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A connection's mount point: an empty directory."""
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@pytest.fixture
def domain(root: Path, qemu_img: str) -> FileDomain:
    return FileDomain.create(
        root,
        str(uuid.uuid4()),
        name="data-1",
        domain_type=DomainType.LOCALFS,
        domain_class=DomainClass.DATA,
        remote_path=str(root),
    )


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """A `hostvisor serve` on its own state directory, stopped by pid after the test."""
    running = Agent(tmp_path_factory.mktemp("agent"))
    try:
        yield running
    finally:
        running.stop_all()
