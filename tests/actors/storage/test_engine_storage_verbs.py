"""The storage verbs as the Engine sends them, and the answers as its parsers read them.

Each call below names the Engine method it follows (ovirt-engine's vdsbroker
`JsonRpcVdsServer` / `JsonRpcIIrsServer`): the same param names and JSON types (a
pool created with `name`, a version as a string, `hostId` for reconstructMaster,
`leafVolID` for Image.teardown, `legal` for SDM.copy_data...). Real LOCALFS domains,
real qemu-img.
"""

from __future__ import annotations

import os
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
    MiB,
    local_data_center,
    new_id,
    storage_host,
    succeeded,
    wait_task,
)
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError

ISO, BACKUP = 2, 3
INVALID_ARGUMENT = 91


def create_domain(cli: Client, directory: Path, domain_class: int) -> DataCenter:
    """StorageDomain.create as JsonRpcVdsServer.createStorageDomain sends it."""
    dc = local_data_center(directory)
    dc.connect_server(cli)
    assert (
        cli.StorageDomain.create(
            storagedomainID=dc.sd,
            domainType=LOCALFS,
            typeArgs=dc.connection["connection"],
            name=f"class-{domain_class}",
            domainClass=domain_class,
            version="5",
            blockSize=512,
            maxHosts=250,
        )
        is True
    )
    return dc


def join(cli: Client, dc: DataCenter, sd: str) -> None:
    """attach + activate (JsonRpcIIrsServer.attachStorageDomain, activateStorageDomain)."""
    assert cli.StorageDomain.attach(storagedomainID=sd, storagepoolID=dc.sp) is True
    cli.StorageDomain.activate(storagedomainID=sd, storagepoolID=dc.sp)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, DataCenter, Path]]:
    tmp = tmp_path_factory.mktemp("enginesv")
    dc = local_data_center(tmp / "sd")
    with storage_host(tmp, storage_check_interval=0.5) as cli:
        dc.connect_server(cli)
        dc.create_domain(cli)
        # JsonRpcVdsServer.createStoragePool: `name`, every lease parameter an int.
        assert (
            cli.StoragePool.create(
                storagepoolID=dc.sp,
                name="Default",
                masterSdUUID=dc.sd,
                masterVersion=1,
                domainList=[dc.sd],
                lockRenewalIntervalSec=5,
                leaseTimeSec=60,
                ioOpTimeoutSec=10,
                leaseRetries=3,
            )
            is True
        )
        dc.connect_pool(cli)
        # JsonRpcVdsServer.spmStart: enableScsiFencing is a string, domVersion too.
        task = cli.StoragePool.spmStart(
            storagepoolID=dc.sp,
            prevID=-1,
            prevLver="-1",
            enableScsiFencing="false",
            maxHostID=250,
            domVersion="5",
        )
        succeeded(cli, task)
        yield cli, dc, tmp


def test_the_pool_is_named_as_the_engine_named_it(setup):
    cli, dc, _tmp = setup
    info = cli.StoragePool.getInfo(storagepoolID=dc.sp)["info"]
    assert info["name"] == "Default"
    assert info["master_uuid"] == dc.sd


def test_get_storage_domains_with_the_blank_pool_lists_every_domain(setup):
    cli, dc, tmp = setup
    iso = create_domain(cli, tmp / "iso-list", ISO)
    # JsonRpcVdsServer.getStorageDomainsList, as GetExistingStorageDomainListQuery calls it.
    every = cli.Host.getStorageDomains(
        storagepoolID=BLANK, domainClass=0, storageType="", remotePath=""
    )
    assert {dc.sd, iso.sd} <= set(every)
    isos = cli.Host.getStorageDomains(
        storagepoolID=BLANK, domainClass=ISO, storageType="", remotePath=""
    )
    assert iso.sd in isos
    assert dc.sd not in isos
    at_path = cli.Host.getStorageDomains(
        storagepoolID=BLANK,
        domainClass=ISO,
        storageType=str(LOCALFS),
        remotePath=iso.connection["connection"] + "/",
    )
    assert at_path == [iso.sd]
    assert cli.Host.getStorageDomains(storagepoolID=dc.sp) == [dc.sd]


def test_an_iso_domain_lists_its_files_as_vdsm(setup):
    cli, dc, tmp = setup
    iso = create_domain(cli, tmp / "iso-files", ISO)
    files = (
        Path(iso.connection["connection"])
        / iso.sd
        / "images"
        / ("1" * 8 + "-1111" * 3 + "-" + "1" * 12)
    )
    assert files.is_dir()  # made at creation, as VDSM's localFsSD.create does
    (files / "fedora.iso").write_bytes(b"\0" * 4096)
    (files / "drivers").mkdir()
    (files / "drivers" / "virtio.VFD").write_bytes(b"\0" * 512)
    hidden = files / "secret.iso"
    hidden.write_bytes(b"x")
    hidden.chmod(0)

    # JsonRpcIIrsServer.getFileStats; FileStatsReturn casts status to Integer.
    stats = cli.StorageDomain.getFileStats(storagedomainID=iso.sd, pattern="*", caseSensitive=False)
    assert set(stats) == {"fedora.iso", "drivers/virtio.VFD", "secret.iso"}
    assert stats["fedora.iso"]["size"] == "4096"
    assert float(stats["fedora.iso"]["ctime"]) > 0
    assert stats["fedora.iso"]["status"] == 0
    expected_hidden = 0 if os.geteuid() == 0 else 469  # root reads anything
    assert stats["secret.iso"]["status"] == expected_hidden
    only = cli.StorageDomain.getFileStats(
        storagedomainID=iso.sd, pattern="*.ISO", caseSensitive=False
    )
    assert set(only) == {"fedora.iso", "secret.iso"}
    strict = cli.StorageDomain.getFileStats(
        storagedomainID=iso.sd, pattern="*.ISO", caseSensitive=True
    )
    assert strict == {}
    with pytest.raises(ServerError) as raised:
        cli.StorageDomain.getFileStats(storagedomainID=dc.sd, pattern="*", caseSensitive=False)
    assert raised.value.code == 330

    # An active ISO domain's directory is the pool's isoprefix (IsoPrefixVDSCommand).
    join(cli, dc, iso.sd)
    pool = cli.StoragePool.getInfo(storagepoolID=dc.sp)
    assert Path(pool["info"]["isoprefix"]).resolve() == files.resolve()  # via the mount root
    assert pool["dominfo"][iso.sd]["isoprefix"] == pool["info"]["isoprefix"]
    assert pool["dominfo"][dc.sd]["isoprefix"] == ""


def test_image_teardown_honours_the_engines_leaf(setup):
    cli, dc, _tmp = setup
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=COW))
    ids = {"storagepoolID": dc.sp, "storagedomainID": dc.sd, "imageID": img}
    dc.prepare(cli, img, vol)
    # JsonRpcVdsServer.teardownImage sends the leaf as `leafVolID`.
    assert cli.Image.teardown(**ids, leafVolID=vol) is True
    with pytest.raises(ServerError) as raised:
        cli.Image.teardown(**ids, leafVolID=new_id())
    assert raised.value.code == 201
    assert cli.Image.teardown(**ids) is True


def test_delete_volumes_deletes_children_first(setup):
    cli, dc, _tmp = setup
    img, base, top = new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW))
    succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, parent=base))
    ids = {"storagepoolID": dc.sp, "storagedomainID": dc.sd, "imageID": img}
    # JsonRpcIIrsServer.deleteVolume: Image.deleteVolumes with a list, parent first here.
    succeeded(cli, cli.Image.deleteVolumes(**ids, volumeList=[base, top], postZero=False))
    assert (
        cli.StorageDomain.getVolumes(storagedomainID=dc.sd, storagepoolID=dc.sp, imageID=img) == []
    )
    with pytest.raises(ServerError) as raised:
        cli.Image.deleteVolumes(**ids, volumeList=[new_id()])
    assert raised.value.code in (201, 268)


def _job(cli: Client, job_id: str) -> dict[str, Any]:
    jobs: dict[str, Any] = cli.Host.getJobs(job_type="storage", job_ids=[job_id])
    return jobs.get(job_id, {})


@pytest.mark.parametrize("legal", [True, False])
def test_copy_data_marks_the_destination_legal_only_when_asked(setup, legal):
    cli, dc, _tmp = setup
    src_img, src, dst_img, dst = new_id(), new_id(), new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, src_img, src, fmt=RAW, size=MiB))
    succeeded(cli, dc.create_volume(cli, dst_img, dst, fmt=COW, size=MiB))
    job_id = new_id()

    def endpoint(img: str, vol: str) -> dict[str, Any]:
        return {"endpoint_type": "div", "sd_id": dc.sd, "img_id": img, "vol_id": vol}

    # JsonRpcVdsServer.copyData: copy_bitmaps and legal always sent.
    assert cli.SDM.copy_data(
        source=endpoint(src_img, src),
        destination=endpoint(dst_img, dst),
        job_id=job_id,
        copy_bitmaps=False,
        legal=legal,
    )
    wait_for(lambda: _job(cli, job_id).get("status") == "done", 30, "the copy")
    legality = cli.Volume.getInfo(**dc.ids(dst_img, dst))["legality"]
    assert legality == ("LEGAL" if legal else "ILLEGAL")


def test_vm_ovfs_on_the_master_and_on_an_export_domain(setup):
    cli, dc, tmp = setup
    vm, ovf = new_id(), "<ovf:Envelope>a VM</ovf:Envelope>"
    # JsonRpcIIrsServer.updateVM: [{vm, ovf, imglist}] on the master (no domain).
    assert cli.StoragePool.updateVMs(
        storagepoolID=dc.sp, vmList=[{"vm": vm, "ovf": ovf, "imglist": ""}]
    )
    # JsonRpcIIrsServer.getVmsInfo: GetVmsInfoReturn reads `vmlist` as a map.
    found = cli.StoragePool.getBackedUpVmsInfo(
        storagepoolID=dc.sp, storagedomainID=BLANK, vmList=[vm]
    )
    assert found == {vm: ovf}
    assert cli.StoragePool.removeVM(storagepoolID=dc.sp, vmUUID=vm) is True
    assert (
        cli.StoragePool.getBackedUpVmsInfo(storagepoolID=dc.sp, storagedomainID=BLANK, vmList=[vm])
        == {}
    )

    export = create_domain(cli, tmp / "export", BACKUP)
    join(cli, dc, export.sd)
    other, other_ovf = new_id(), "<ovf:Envelope>exported</ovf:Envelope>"
    # JsonRpcIIrsServer.updateVMInImportExport / removeVM with the export domain.
    cli.StoragePool.updateVMs(
        storagepoolID=dc.sp,
        vmList=[{"vm": other, "ovf": other_ovf, "imglist": new_id()}],
        storagedomainID=export.sd,
    )
    every = cli.StoragePool.getBackedUpVmsInfo(
        storagepoolID=dc.sp, storagedomainID=export.sd, vmList=[]
    )
    assert every == {other: other_ovf}
    ovf_file = Path(export.connection["connection"]) / export.sd / "master" / "vms" / other
    assert (ovf_file / f"{other}.ovf").read_text() == other_ovf
    cli.StoragePool.removeVM(storagepoolID=dc.sp, vmUUID=other, storagedomainID=export.sd)
    assert not ovf_file.exists()
    with pytest.raises(ServerError) as raised:
        cli.StoragePool.updateVMs(storagepoolID=dc.sp, vmList=[{"vm": other}])
    assert raised.value.code == INVALID_ARGUMENT


def test_task_revert_is_refused_while_running_and_rolls_a_finished_task_back(setup):
    cli, dc, _tmp = setup
    task = dc.create_volume(cli, new_id(), new_id(), fmt=COW)
    status = wait_for(
        lambda: (s := cli.Task.getStatus(taskID=task))["taskState"] == "finished" and s,
        30,
        "the task",
    )
    assert status["taskResult"] == "success"
    # JsonRpcVdsServer.revertTask
    assert cli.Task.revert(taskID=task) is True
    reverted = wait_for(
        lambda: (s := cli.Task.getStatus(taskID=task))["taskState"] == "finished" and s,
        30,
        "the revert",
    )
    assert reverted["taskResult"] == "cleanSuccess"
    cli.Task.clear(taskID=task)
    with pytest.raises(ServerError) as raised:
        cli.Task.revert(taskID=task)
    assert raised.value.code == 401


def test_upgrade_answers_started_and_refuses_an_unknown_version(setup):
    cli, dc, _tmp = setup
    # JsonRpcIIrsServer.upgradeStoragePool: targetDomVersion is a string.
    assert cli.StoragePool.upgrade(storagepoolID=dc.sp, targetDomVersion="5") == "started"
    with pytest.raises(ServerError) as raised:
        cli.StoragePool.upgrade(storagepoolID=dc.sp, targetDomVersion="6")
    assert raised.value.code == 394


def _role(cli: Client, sd: str) -> str:
    role: str = cli.StorageDomain.getInfo(storagedomainID=sd)["role"]
    return role


def test_switch_master_then_reconstruct_then_destroy(setup, tmp_path):
    cli, dc, tmp = setup
    second = create_domain(cli, tmp / "second", 1)
    join(cli, dc, second.sd)
    # JsonRpcIIrsServer.switchMaster: a task id (OneUuidReturn).
    task = cli.StoragePool.switchMaster(
        storagepoolID=dc.sp, oldMasterUUID=dc.sd, newMasterUUID=second.sd, masterVersion=2
    )
    assert wait_task(cli, task)["taskResult"] == "success"
    info = cli.StoragePool.getInfo(storagepoolID=dc.sp)["info"]
    assert (info["master_uuid"], info["master_ver"]) == (second.sd, 2)
    assert (_role(cli, second.sd), _role(cli, dc.sd)) == ("Master", "Regular")
    assert info["name"] == "Default"

    # JsonRpcVdsServer.reconstructMaster: refused on the SPM, as VDSM.
    params = {
        "storagepoolID": dc.sp,
        "hostId": 1,
        "name": "Default",
        "masterSdUUID": dc.sd,
        "masterVersion": 3,
        "domainDict": {dc.sd: "active", second.sd: "active"},
        "lockRenewalIntervalSec": 5,
        "leaseTimeSec": 60,
        "ioOpTimeoutSec": 10,
        "leaseRetries": 3,
    }
    with pytest.raises(ServerError) as raised:
        cli.StoragePool.reconstructMaster(**params)
    assert raised.value.code == 656
    cli.StoragePool.spmStop(storagepoolID=dc.sp)
    assert cli.StoragePool.reconstructMaster(**params) is True
    assert (_role(cli, dc.sd), _role(cli, second.sd)) == ("Master", "Regular")
    assert cli.StoragePool.getInfo(storagepoolID=dc.sp)["info"]["master_ver"] == 3

    # JsonRpcIIrsServer.destroyStoragePool, on the SPM elected on the new master.
    succeeded(cli, cli.StoragePool.spmStart(storagepoolID=dc.sp, prevID=-1, prevLver="-1"))
    assert cli.StoragePool.destroy(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp) is True
    assert cli.Host.getConnectedStoragePools() == []
    for sd in (dc.sd, second.sd):
        info = cli.StorageDomain.getInfo(storagedomainID=sd)
        assert info["pool"] == []
        assert info["role"] == "Regular"
