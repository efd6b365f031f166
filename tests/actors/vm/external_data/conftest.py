"""External data tests: one in-process host (qemu:///embed) for this directory.

- `host` / `cli`: the host, and a client that destroys every VM it leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hosts import VM_TEST_SETTINGS, client_destroying_vms, embedded_host
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    """One host per module (two hosts on one embed root in one process collide)."""
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with client_destroying_vms(host) as client:
        yield client
