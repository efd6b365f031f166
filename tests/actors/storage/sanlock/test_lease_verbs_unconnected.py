"""Lease verbs on a host connected to no pool: VDSM's StoragePoolNotConnected, nothing done."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from harness.engine import storage_host
from hostvisor.api.client import ServerError

NOT_CONNECTED = 313
JOB = {"type": "JOB", "generation": 0, "job_id": str(uuid.uuid4()), "job_status": "PENDING"}


@pytest.mark.parametrize(
    ("verb", "extra"),
    [
        ("create", {}),
        ("create", {"metadata": JOB}),
        ("delete", {}),
        ("info", {}),
        ("status", {}),
        ("fence", {"metadata": JOB}),
    ],
)
def test_each_lease_verb_needs_a_connected_pool(
    tmp_path: Path, verb: str, extra: dict[str, object]
) -> None:
    lease = {"sd_id": str(uuid.uuid4()), "lease_id": str(uuid.uuid4())}
    with storage_host(tmp_path) as cli:
        with pytest.raises(ServerError) as raised:
            getattr(cli.Lease, verb)(lease=lease, **extra)
        assert raised.value.code == NOT_CONNECTED
        assert cli.Host.getConnectedStoragePools() == []
