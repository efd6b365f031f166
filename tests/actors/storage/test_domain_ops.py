"""The domain's typed operations check and act in one step, on a real domain."""

from __future__ import annotations

import uuid

import pytest

from hostvisor.actors.storage.domain_ops import Attach, Detach, Format, JoinPool, UndoJoin
from hostvisor.actors.storage.errors import StorageDomainAlreadyAttached, StoragePoolAlreadyExists
from hostvisor.actors.storage.filedomain import FileDomain

pytestmark = pytest.mark.unit


def test_a_domain_joins_one_pool_only(domain: FileDomain):
    sp, other = str(uuid.uuid4()), str(uuid.uuid4())
    before = JoinPool(sp=sp, changes=(("ROLE", "Master"),)).apply(domain)
    assert before["POOL_UUID"] == ""
    assert domain.metadata()["ROLE"] == "Master"
    with pytest.raises(StoragePoolAlreadyExists):
        JoinPool(sp=sp).apply(domain)
    with pytest.raises(StorageDomainAlreadyAttached):
        JoinPool(sp=other).apply(domain)
    with pytest.raises(StorageDomainAlreadyAttached):
        Attach(sp=other).apply(domain)


def test_undoing_a_join_restores_the_metadata_exactly(domain: FileDomain):
    sp = str(uuid.uuid4())
    original = domain.metadata()
    before = JoinPool(sp=sp, changes=(("ROLE", "Master"), ("MASTER_VERSION", "1"))).apply(domain)
    UndoJoin(sp=sp, before=tuple(before.items())).apply(domain)
    assert domain.metadata() == original


def test_an_undo_leaves_a_domain_another_pool_took_since(domain: FileDomain):
    sp, other = str(uuid.uuid4()), str(uuid.uuid4())
    before = JoinPool(sp=sp).apply(domain)
    Detach().apply(domain)
    Attach(sp=other).apply(domain)
    UndoJoin(sp=sp, before=tuple(before.items())).apply(domain)
    assert domain.metadata()["POOL_UUID"] == other


def test_a_domain_in_a_pool_is_not_formatted_unless_detached_automatically(domain: FileDomain):
    JoinPool(sp=str(uuid.uuid4())).apply(domain)
    with pytest.raises(StorageDomainAlreadyAttached):
        Format().apply(domain)
    assert domain.path.exists()
    Format(auto_detach=True).apply(domain)
    assert not domain.path.exists()
