"""A host per test, managing a network namespace made for that test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.netns import TestNamespace, network_host
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost


@pytest.fixture
def netns() -> Iterator[TestNamespace]:
    namespace = TestNamespace()
    try:
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def host(state_dir: Path, netns: TestNamespace) -> Iterator[EmbeddedHost]:
    with network_host(state_dir, netns) as running:
        yield running


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with host.client() as client:
        yield client
