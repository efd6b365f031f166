"""Which lock protects a domain: sanlock for shared types with a daemon, else a local lock.

VDSM protects NFS, POSIXFS and GLUSTERFS domains with sanlock and LOCALFS ones with
a local lock. Hostvisor does the same while a sanlock daemon answers; without one (or
for a shared domain made without one, whose `ids` were never written) the local
lock of before is kept, so a host without sanlock still works on its own.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hostvisor.actors.storage import clusterlock
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import DomainClass, DomainType

pytestmark = pytest.mark.unit


@pytest.fixture
def no_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sanlock run directory where no daemon listens."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("SANLOCK_RUN_DIR", str(run))
    return run


def make(root: Path, domain_type: DomainType) -> FileDomain:
    root.mkdir()
    return FileDomain.create(
        root,
        str(uuid.uuid4()),
        name="d",
        domain_type=domain_type,
        domain_class=DomainClass.DATA,
        remote_path=str(root),
    )


def test_without_a_daemon_a_shared_domain_is_made_and_kept_under_a_local_lock(
    tmp_path: Path, no_daemon: Path
) -> None:
    assert not clusterlock.available()
    domain = make(tmp_path / "mnt", DomainType.POSIXFS)
    assert (domain.path / "dom_md" / "ids").stat().st_size == 0  # no lockspace written
    assert domain.lock_areas() is None


def test_a_localfs_domain_never_uses_sanlock(tmp_path: Path, no_daemon: Path) -> None:
    assert not clusterlock.uses_sanlock("LOCALFS")
    assert make(tmp_path / "mnt", DomainType.LOCALFS).lock_areas() is None
    assert clusterlock.lockspaces() == {}
