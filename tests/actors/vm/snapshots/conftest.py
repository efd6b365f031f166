"""Snapshot tests: a data center made through the wire, guests on its volumes.

`snap_host` is an in-process host (KVM or TCG through qemu:///embed) with one LOCALFS
data center set up the Engine's way; `snap_vm` starts a guest on an image of two
volumes (a raw base whose boot sector halts the CPU, a qcow2 leaf on it). The
Engine's snapshot flow is `Volume.create` of a new COW leaf over the VM's volume,
then `VM.snapshot`, then `Host.getJobs(job_type="virt")` until the job ends
(site/snapshot_helpers.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import DataCenter, data_center_host
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost

SITE = Path(__file__).parent / "site"
sys.path.insert(0, str(SITE))
from snapshot_helpers import SnapVm, make_image, start_vm  # noqa: E402


@pytest.fixture(scope="module")
def snap_host(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path
) -> Iterator[tuple[EmbeddedHost, Client, DataCenter]]:
    with data_center_host(tmp_path_factory, embed_root) as made:
        yield made


@pytest.fixture
def snap_vm(snap_host: tuple[EmbeddedHost, Client, DataCenter], accelerator: Any) -> SnapVm:
    _host, cli, dc = snap_host
    img, vols = make_image(cli, dc)
    vm_id = start_vm(cli, dc, img, vols[-1], accelerator.domain_type)
    return SnapVm(dc=dc, vm_id=vm_id, img=img, vols=vols)
