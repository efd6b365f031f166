"""VDSM's Image.syncVolumeChain cases, on a real file domain and real qemu-img files.

1. the leaf left the actual chain (before/after an active commit's pivot): ILLEGAL;
2. an internal volume left it (after an internal commit): its child re-parented;
3. everything is in it but the leaf is ILLEGAL (a failed pivot): LEGAL again;
4. everything is in it and LEGAL: nothing changes.
Plus the base's capacity following a larger top, and a cold merge's validation.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.merging import (
    GrowCapacity,
    PrepareMerge,
    Subchain,
    SyncVolumeChain,
    VolumeIsNotInChain,
    WrongParentVolume,
)
from hostvisor.actors.storage.model import (
    DomainClass,
    DomainType,
    Legality,
    Preallocation,
    VolumeFormat,
)

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def chain(tmp_path: Path) -> tuple[FileDomain, str, list[str]]:
    """A domain with an image of three volumes: raw base, qcow2 mid, qcow2 leaf."""
    domain = FileDomain.create(
        tmp_path,
        new_id(),
        name="data",
        domain_type=DomainType.LOCALFS,
        domain_class=DomainClass.DATA,
        remote_path=str(tmp_path),
    )
    img, vols = new_id(), [new_id() for _ in range(3)]
    domain.create_volume(
        img, vols[0], size=MiB, fmt=VolumeFormat.RAW, prealloc=Preallocation.SPARSE
    )
    for parent, vol in ((vols[0], vols[1]), (vols[1], vols[2])):
        domain.create_volume(
            img, vol, size=0, fmt=VolumeFormat.COW, prealloc=Preallocation.SPARSE, parent=parent
        )
    return domain, img, vols


def meta(domain: FileDomain, img: str, vol: str) -> tuple[str, str, str]:
    info = domain.volume_info(img, vol)
    return info["parent"], info["voltype"], info["legality"]


def test_leaf_removed_is_illegal(chain: tuple[FileDomain, str, list[str]]) -> None:
    domain, img, (base, mid, leaf) = chain
    SyncVolumeChain(img=img, vol=leaf, actual=(base, mid)).apply(domain)
    assert meta(domain, img, leaf) == (mid, "LEAF", "ILLEGAL")
    assert meta(domain, img, mid) == (base, "INTERNAL", "LEGAL")
    # again, as after the pivot: nothing more
    SyncVolumeChain(img=img, vol=leaf, actual=(base, mid)).apply(domain)
    assert meta(domain, img, leaf) == (mid, "LEAF", "ILLEGAL")
    # a failed pivot: the whole chain is actual again, the leaf LEGAL
    SyncVolumeChain(img=img, vol=leaf, actual=(base, mid, leaf)).apply(domain)
    assert meta(domain, img, leaf) == (mid, "LEAF", "LEGAL")


def test_internal_removed_reparents_its_child(chain: tuple[FileDomain, str, list[str]]) -> None:
    domain, img, (base, mid, leaf) = chain
    SyncVolumeChain(img=img, vol=leaf, actual=(base, leaf)).apply(domain)
    assert meta(domain, img, leaf) == (base, "LEAF", "LEGAL")
    assert meta(domain, img, mid) == (base, "INTERNAL", "LEGAL")
    assert domain.volume_info(img, mid)["children"] == []
    assert domain.chain(img, leaf) == [base, leaf]


def test_nothing_to_change(chain: tuple[FileDomain, str, list[str]]) -> None:
    domain, img, vols = chain
    before = [domain.volume_info(img, vol) for vol in vols]
    SyncVolumeChain(img=img, vol=vols[-1], actual=tuple(vols)).apply(domain)
    assert [domain.volume_info(img, vol) for vol in vols] == before


def test_base_capacity_follows_a_larger_top(chain: tuple[FileDomain, str, list[str]]) -> None:
    domain, img, (base, mid, leaf) = chain
    domain.extend_volume(img, leaf, 4 * MiB)
    GrowCapacity(img=img, base=mid, top=leaf).apply(domain)
    assert domain.volume_info(img, mid)["capacity"] == str(4 * MiB)
    GrowCapacity(img=img, base=base, top=mid).apply(domain)  # metadata only
    assert domain.volume_info(img, base)["capacity"] == str(4 * MiB)
    GrowCapacity(img=img, base=mid, top=base).apply(domain)  # never shrinks
    assert domain.volume_info(img, mid)["capacity"] == str(4 * MiB)


def test_subchain_validation(chain: tuple[FileDomain, str, list[str]]) -> None:
    domain, img, (base, mid, leaf) = chain
    sub = Subchain(sd=domain.sd_uuid, img=img, top=mid, base=base)
    assert sub.validate(domain) == [base, mid, leaf]
    with pytest.raises(WrongParentVolume):
        Subchain(sd=domain.sd_uuid, img=img, top=leaf, base=base).validate(domain)
    with pytest.raises(VolumeIsNotInChain):
        Subchain(sd=domain.sd_uuid, img=img, top=new_id(), base=base).validate(domain)
    with pytest.raises(VolumeIsNotInChain):
        PrepareMerge(subchain=Subchain(sd=domain.sd_uuid, img=img, top=mid, base=new_id())).check(
            domain
        )
    assert domain.volume_info(img, base)["legality"] == Legality.LEGAL
