"""Block-job tests: a data center made through the wire, guests on its volumes.

`dc_host` is an in-process host (real KVM or TCG through qemu:///embed) with one
LOCALFS data center set up the Engine's way; `chain_vm` starts a guest on an image
of three volumes (a raw base that halts the CPU at boot, qcow2 layers on it).
`lib/` holds the helpers (`mergehelp`) and the crash stager (`crashed_cleanup`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LIB = Path(__file__).parent / "lib"
sys.path.insert(0, str(LIB))

from mergehelp import ChainVm, make_chain, start_vm  # noqa: E402

from harness.engine import DataCenter, data_center_host  # noqa: E402
from hostvisor.api.client import Client  # noqa: E402
from hostvisor.api.embedded import EmbeddedHost  # noqa: E402


@pytest.fixture
def dc_host(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path
) -> Iterator[tuple[EmbeddedHost, Client, DataCenter]]:
    with data_center_host(tmp_path_factory, embed_root) as made:
        yield made


@pytest.fixture
def chain_vm(dc_host: tuple[EmbeddedHost, Client, DataCenter], accelerator: Any) -> ChainVm:
    _host, cli, dc = dc_host
    img, vols = make_chain(cli, dc, 3)
    vm_id = start_vm(cli, dc, img, vols[-1], accelerator.domain_type)
    return ChainVm(dc=dc, vm_id=vm_id, img=img, vols=vols)
