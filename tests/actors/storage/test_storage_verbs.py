"""The storage verbs one by one, through the API, with VDSM's field names and types.

A domain joins and leaves the pool (attach, activate, deactivate, detach), is
described, checked and formatted; volumes are sized, described, grown and deleted;
the pool and its domains are reported as the Engine reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.engine import (
    COW,
    RAW,
    DataCenter,
    MiB,
    local_data_center,
    new_id,
    storage_host,
    succeeded,
    wait_task,
)
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, DataCenter, Path]]:
    tmp = tmp_path_factory.mktemp("stverbs")
    dc = local_data_center(tmp / "sd")
    with storage_host(tmp, storage_check_interval=0.3) as cli:
        dc.setup(cli)
        yield cli, dc, tmp


def _second_domain(cli: Client, tmp: Path) -> DataCenter:
    other = local_data_center(tmp / f"sd-{new_id()[:8]}")
    other.connect_server(cli)
    other.create_domain(cli)
    return other


def _pool_domains(cli: Client, dc: DataCenter) -> dict[str, str]:
    listed = cli.StoragePool.getInfo(storagepoolID=dc.sp)["info"]["domains"]
    return dict(item.split(":") for item in listed.split(",") if item)


@pytest.mark.libvirt
def test_a_domain_joins_and_leaves_the_pool(setup: tuple[Client, DataCenter, Path]):
    cli, dc, tmp = setup
    other = _second_domain(cli, tmp)
    sd = {"storagedomainID": other.sd, "storagepoolID": dc.sp}
    assert cli.StorageDomain.getInfo(storagedomainID=other.sd)["pool"] == []

    assert cli.StorageDomain.attach(**sd) is True
    assert _pool_domains(cli, dc)[other.sd] == "Attached"
    assert cli.StorageDomain.getInfo(storagedomainID=other.sd)["pool"] == [dc.sp]
    assert cli.StorageDomain.activate(**sd) is True
    assert _pool_domains(cli, dc)[other.sd] == "Active"
    assert other.sd in cli.Host.getStorageDomains(storagepoolID=dc.sp)
    assert cli.StorageDomain.deactivate(**sd, masterSdUUID=dc.sd, masterVersion=1) is True
    assert _pool_domains(cli, dc)[other.sd] == "Attached"
    assert cli.StorageDomain.detach(**sd, masterSdUUID=dc.sd, masterVersion=1) is True
    assert other.sd not in _pool_domains(cli, dc)
    assert cli.StorageDomain.getInfo(storagedomainID=other.sd)["pool"] == []
    assert other.sd not in cli.Host.getStorageDomains(storagepoolID=dc.sp)
    # The master cannot leave; an unattached domain cannot be activated.
    with pytest.raises(ServerError) as raised:
        cli.StorageDomain.detach(storagedomainID=dc.sd, storagepoolID=dc.sp)
    assert raised.value.code == 91
    with pytest.raises(ServerError) as raised:
        cli.StorageDomain.activate(**sd)
    assert raised.value.code == 353


@pytest.mark.libvirt
def test_a_domain_is_described_checked_renamed_and_formatted(
    setup: tuple[Client, DataCenter, Path],
):
    cli, _dc, tmp = setup
    other = _second_domain(cli, tmp)
    info = cli.StorageDomain.getInfo(storagedomainID=other.sd)
    assert info["uuid"] == other.sd
    assert (info["type"], info["class"], info["role"]) == ("LOCALFS", "Data", "Regular")
    assert info["version"] == "5"
    assert info["remotePath"] == other.connection["connection"]
    stats = cli.StorageDomain.getStats(storagedomainID=other.sd)
    assert int(stats["disktotal"]) >= int(stats["diskfree"]) > 0
    assert isinstance(stats["disktotal"], str)
    assert cli.StorageDomain.validate(storagedomainID=other.sd) is True
    cli.StorageDomain.setDescription(storagedomainID=other.sd, description="renamed")
    assert cli.StorageDomain.getInfo(storagedomainID=other.sd)["name"] == "renamed"
    repo = wait_for(
        lambda: cli.Host.getStorageRepoStats(domains=[other.sd]).get(other.sd),
        10,
        "the domain's first check",
    )
    assert repo["valid"] is True
    assert repo["acquired"] is False  # not in the pool
    assert float(repo["delay"]) >= 0
    assert float(repo["lastCheck"]) >= 0

    assert cli.StorageDomain.format(storagedomainID=other.sd) is True
    assert other.sd not in cli.Host.getStorageDomains()
    assert not (Path(other.connection["connection"]) / other.sd).exists()
    with pytest.raises(ServerError) as raised:
        cli.StorageDomain.getInfo(storagedomainID=other.sd)
    assert raised.value.code == 358


@pytest.mark.libvirt
def test_volumes_are_sized_described_grown_and_deleted(setup: tuple[Client, DataCenter, Path]):
    cli, dc, _tmp = setup
    img, base, top = new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=4 * MiB))
    succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, parent=base, size=4 * MiB))
    size = cli.Volume.getSize(**dc.ids(img, base))
    assert set(size) == {"apparentsize", "truesize"}
    assert size["apparentsize"] == str(4 * MiB)

    cli.Volume.setDescription(**dc.ids(img, top), description="the leaf")
    assert cli.Volume.getInfo(**dc.ids(img, top))["description"] == "the leaf"
    succeeded(cli, cli.Volume.extendSize(**dc.ids(img, top), newSize=str(8 * MiB)))
    assert cli.Volume.getInfo(**dc.ids(img, top))["capacity"] == str(8 * MiB)

    refused = wait_task(cli, cli.Volume.delete(**dc.ids(img, base)))  # it has a child
    assert (refused["taskResult"], refused["code"]) == ("cleanSuccess", 204)
    assert cli.Image.getVolumes(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img) in (
        [base, top],
        [top, base],
    )
    succeeded(cli, cli.Volume.delete(**dc.ids(img, top)))
    assert cli.Volume.getInfo(**dc.ids(img, base))["voltype"] == "LEAF"
    assert cli.Image.getVolumes(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img) == [base]


@pytest.mark.libvirt
def test_the_pool_is_reported_as_the_engine_reads_it(setup: tuple[Client, DataCenter, Path]):
    cli, dc, _tmp = setup
    answer = cli.StoragePool.getInfo(storagepoolID=dc.sp)
    info, dominfo = answer["info"], answer["dominfo"]
    assert info["name"] == "dc1"
    assert info["master_uuid"] == dc.sd
    assert info["master_ver"] == 1
    assert info["spm_id"] == 1
    assert info["pool_status"] == "connected"
    assert info["type"] == "LOCALFS"
    assert dominfo[dc.sd]["status"] == "Active"
    assert isinstance(dominfo[dc.sd]["diskfree"], str)
    spm = cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)
    assert spm == {"spmStatus": "SPM", "spmLver": spm["spmLver"], "spmId": 1}
    assert isinstance(spm["spmLver"], int)
    assert spm["spmLver"] >= 0
