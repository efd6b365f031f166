"""The host's id: a kept id wins over DMI's, as VDSM's vdsm.id does."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hostvisor.actors.host.facts import host_uuid


@pytest.mark.unit
def test_a_kept_id_wins_so_two_agents_on_one_machine_are_two_hosts(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    for state, kept in zip((first, second), ids, strict=True):
        state.mkdir()
        (state / "host.id").write_text(kept + "\n")
    assert [host_uuid(first), host_uuid(second)] == ids


@pytest.mark.unit
def test_without_a_kept_id_the_id_is_stable(tmp_path: Path) -> None:
    made = host_uuid(tmp_path)
    uuid.UUID(made)  # DMI's or a new one: a UUID either way
    assert host_uuid(tmp_path) == made
