"""Every storage error a caller can provoke gets VDSM's code, and changes nothing.

One LOCALFS data center per test module; each test provokes errors against it and
checks afterwards that what was there is still there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    BLANK,
    COW,
    LOCALFS,
    RAW,
    DataCenter,
    local_data_center,
    new_id,
    storage_host,
    succeeded,
    wait_task,
)
from hostvisor.api.client import Client, ServerError

VOLUME_DOES_NOT_EXIST = 201
ILLEGAL_SNAPSHOT = 226
VOLUME_EXISTS = 212
IMAGE_NOT_IN_DOMAIN = 268
POOL_UNKNOWN = 309
CANNOT_CONNECT_MULTIPLE_POOLS = 323
WRONG_MASTER = 324
DOMAIN_DOES_NOT_EXIST = 358
FS_NOT_MOUNTED = 360
DOMAIN_TYPE_ERROR = 372
ALREADY_ATTACHED = 380
NOT_SPM = 654
INVALID = 91


def _code(action: Any) -> int:
    with pytest.raises(ServerError) as raised:
        action()
    assert raised.value.message, "an error without a message"
    return raised.value.code


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, DataCenter, Path]]:
    tmp = tmp_path_factory.mktemp("sterr")
    dc = local_data_center(tmp / "sd")
    with storage_host(tmp, storage_check_interval=0.5) as cli:
        dc.setup(cli)
        yield cli, dc, tmp


@pytest.mark.libvirt
def test_unknown_domain_pool_image_and_volume(setup: tuple[Client, DataCenter, Path]):
    cli, dc, _tmp = setup
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=RAW))

    assert (
        _code(lambda: cli.StorageDomain.getInfo(storagedomainID=new_id())) == DOMAIN_DOES_NOT_EXIST
    )
    assert _code(lambda: cli.StoragePool.getInfo(storagepoolID=new_id())) == POOL_UNKNOWN
    assert _code(lambda: cli.Volume.getInfo(**{**dc.ids(img, vol), "storagepoolID": new_id()})) == (
        POOL_UNKNOWN
    )
    assert _code(lambda: cli.Volume.getInfo(**dc.ids(img, new_id()))) == VOLUME_DOES_NOT_EXIST
    assert (
        _code(
            lambda: cli.Image.getVolumes(
                storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=new_id()
            )
        )
        == IMAGE_NOT_IN_DOMAIN
    )
    assert _code(lambda: cli.StorageDomain.getInfo(storagedomainID="not-a-uuid")) == INVALID
    assert cli.Volume.getInfo(**dc.ids(img, vol))["legality"] == "LEGAL"


@pytest.mark.libvirt
def test_volume_exists_and_bad_volume_params(setup: tuple[Client, DataCenter, Path]):
    cli, dc, _tmp = setup
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=COW))
    before = cli.Volume.getInfo(**dc.ids(img, vol))

    assert _code(lambda: dc.create_volume(cli, img, vol, fmt=COW)) == VOLUME_EXISTS
    assert _code(lambda: dc.create_volume(cli, img, new_id(), fmt=3)) == INVALID
    assert _code(lambda: dc.create_volume(cli, img, new_id(), size=0)) == INVALID
    assert cli.Volume.getInfo(**dc.ids(img, vol)) == before
    assert cli.Image.getVolumes(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img) == [vol]


@pytest.mark.libvirt
def test_a_snapshot_of_an_illegal_volume_fails_its_task(setup: tuple[Client, DataCenter, Path]):
    cli, dc, _tmp = setup
    img, base = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW))
    cli.Volume.setLegality(**dc.ids(img, base), legality="ILLEGAL")
    top = new_id()
    status = wait_task(cli, dc.create_volume(cli, img, top, fmt=COW, parent=base))
    assert status["taskResult"] != "success"
    assert status["code"] == ILLEGAL_SNAPSHOT
    assert cli.Image.getVolumes(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img) == [base]
    assert cli.Volume.getInfo(**dc.ids(img, base))["voltype"] == "LEAF"


@pytest.mark.libvirt
def test_pool_and_domain_errors(setup: tuple[Client, DataCenter, Path]):
    cli, dc, tmp = setup
    other = tmp / "other-sd"
    other.mkdir()
    second = DataCenter({"id": new_id(), "connection": str(other)}, LOCALFS)
    second.connect_server(cli)
    second.create_domain(cli)

    # A domain already in a pool cannot be put in another one.
    with pytest.raises(ServerError) as raised:
        cli.StoragePool.create(
            storagepoolID=new_id(),
            name="dc2",
            masterSdUUID=second.sd,
            masterVersion=1,
            domainList=[second.sd, dc.sd],
        )
    assert raised.value.code == ALREADY_ATTACHED
    assert cli.StorageDomain.getInfo(storagedomainID=second.sd)["pool"] == []

    # One pool per host; the master and its version must match.
    second.create_pool(cli)
    assert _code(lambda: second.connect_pool(cli)) == CANNOT_CONNECT_MULTIPLE_POOLS
    assert (
        _code(
            lambda: cli.StoragePool.connect(
                storagepoolID=second.sp,
                hostID=1,
                scsiKey="",
                masterSdUUID=dc.sd,
                masterVersion=1,
            )
        )
        == CANNOT_CONNECT_MULTIPLE_POOLS
    )
    assert cli.Host.getConnectedStoragePools() == [dc.sp]

    # Domains only of the types this host implements, only on a connected server.
    def create(domain_type: int, type_args: str) -> Any:
        return cli.StorageDomain.create(
            storagedomainID=new_id(),
            domainType=domain_type,
            typeArgs=type_args,
            name="x",
            domainClass=1,
            version="5",
        )

    assert _code(lambda: create(3, "some-vg")) == DOMAIN_TYPE_ERROR
    assert _code(lambda: create(LOCALFS, str(tmp / "never-connected"))) == FS_NOT_MOUNTED


@pytest.mark.libvirt
def test_only_the_spm_changes_metadata(setup: tuple[Client, DataCenter, Path]):
    cli, dc, _tmp = setup
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=COW))
    cli.StoragePool.spmStop(storagepoolID=dc.sp)
    try:
        assert cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] == "Free"
        assert _code(lambda: dc.create_volume(cli, new_id(), new_id())) == NOT_SPM
        assert _code(lambda: cli.Volume.delete(**dc.ids(img, vol))) == NOT_SPM
        assert (
            _code(lambda: cli.Image.delete(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img))
            == NOT_SPM
        )
        # Reads go on.
        assert cli.Volume.getInfo(**dc.ids(img, vol))["legality"] == "LEGAL"
    finally:
        dc.become_spm(cli)


@pytest.mark.libvirt
def test_a_wrong_master_version_is_refused(tmp_path: Path):
    dc = local_data_center(tmp_path / "sd")
    with storage_host(tmp_path) as cli:
        dc.connect_server(cli)
        dc.create_domain(cli)
        dc.create_pool(cli)
        for master, version in ((dc.sd, 7), (new_id(), 1)):
            with pytest.raises(ServerError) as raised:
                cli.StoragePool.connect(
                    storagepoolID=dc.sp,
                    hostID=1,
                    scsiKey="",
                    masterSdUUID=master,
                    masterVersion=version,
                )
            assert raised.value.code in (WRONG_MASTER, 304)
        assert cli.Host.getConnectedStoragePools() == []
        assert BLANK not in cli.Host.getStorageDomains()
