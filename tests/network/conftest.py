"""A host per test, managing a network namespace made for that test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.netns import TestNamespace
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config


@pytest.fixture
def netns() -> Iterator[TestNamespace]:
    namespace = TestNamespace()
    try:
        yield namespace
    finally:
        namespace.delete()


@contextlib.contextmanager
def network_host(state_dir: Path, netns: TestNamespace, **settings: Any) -> Iterator[EmbeddedHost]:
    """A whole host in-process managing `netns` (libvirt's test driver: no guests here)."""
    config = load_config(
        state_dir=state_dir,
        libvirt_uri="test:///default",
        management_port=0,
        net_namespace=netns.name,
        host_sample_interval=60,
        **settings,
    )
    with EmbeddedHost(config) as running:
        yield running


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
