"""An in-process host for tests, on the test process's one embedded-QEMU root."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostvisor.actors.hypervisor.connection import embed_uri
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

NO_SUCH_VM = 1

VM_TEST_SETTINGS = {
    "vm_sample_interval": 0.5,
    "host_sample_interval": 5,
    "vm_powering_up_seconds": 0,
}
"""Fast sampling and no "Powering up" phase, for tests that drive guests."""


@contextlib.contextmanager
def embedded_host(
    factory: pytest.TempPathFactory, embed_root: Path, **settings: Any
) -> Iterator[EmbeddedHost]:
    """Run a whole host in-process (API on a free port) for the length of a block."""
    config = load_config(
        state_dir=factory.mktemp("state"),
        libvirt_uri=embed_uri(embed_root),
        management_port=0,
        **settings,
    )
    with EmbeddedHost(config) as running:
        yield running


@contextlib.contextmanager
def client_destroying_vms(host: EmbeddedHost) -> Iterator[Client]:
    """A client of `host` that destroys every VM left when the block ends.

    For tests that share one embedded QEMU root: a VM a test leaves would run on
    into the next test.
    """
    with host.client() as client:
        try:
            yield client
        finally:
            for vm_id in client.Host.getVMList():
                try:
                    client.VM.destroy(vmID=vm_id)
                except ServerError as error:
                    if error.code != NO_SUCH_VM:
                        raise
