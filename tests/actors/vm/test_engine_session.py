"""An oVirt Engine's session with a new host, end to end through the wire.

Played as ovirt-engine plays it, each call with the params and types its VDSCommand
sends (backend/manager/modules/vdsbroker/.../jsonrpc/JsonRpcVdsServer.java and
JsonRpcIIrsServer.java) and each answer checked as its parser reads it
(VdsBrokerObjectsBuilder.java and the commands' return classes):

 1. activation (InitVdsOnUpCommand) and host monitoring (HostMonitoring);
 2. a data center: storage server, data domain, pool, SPM (the Engine's
    AddStoragePoolWithStorages flow), the domain reported valid by host monitoring;
 3. an ISO domain attached and activated, its files listed;
 4. a disk made by an SPM task, polled as SPMAsyncTask polls;
 5. a VM from the Engine's domain XML (with that disk and graphics), monitored to Up,
    shut down, reaped;
 6. the disk deleted, the ISO domain detached, the pool torn down.

Once on a LOCALFS domain, once on a POSIXFS domain (an ext4 loop device).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    BLANK,
    LOCALFS,
    RAW,
    DataCenter,
    MiB,
    data_center_of,
    new_id,
    write_halting_boot_sector,
)
from harness.guests import StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost

from .conftest import EngineDisk

pytestmark = [pytest.mark.slow, pytest.mark.libvirt]

ISO = 2  # StorageDomainType.ISO, the domainClass of StorageDomain.create
ISO_IMAGES = "11111111-1111-1111-1111-111111111111"
FLOAT = re.compile(r"^\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture(params=["localfs", "posixfs"])
def data_center(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataCenter]:
    with data_center_of(request.param, tmp_path) as made:
        yield made


# -- 1. activation and monitoring -------------------------------------------------------------


def activate(cli: Client) -> None:
    """InitVdsOnUpCommand: what the Engine asks a host that has just come up."""
    # GetCapabilitiesVDSCommand; VdsBrokerObjectsBuilder.updateVDSDynamicData reads these.
    caps = cli.Host.getCapabilities()
    for key in ("cpuCores", "cpuSockets", "cpuSpeed", "memSize", "kvmEnabled"):
        assert isinstance(caps[key], str), key  # numbers as strings, as VDSM sends them
    assert isinstance(caps["clusterLevels"], list)
    assert isinstance(caps["hooks"], dict)
    # GetHardwareInfoVDSCommand.
    hardware = cli.Host.getHardwareInfo()
    assert "systemManufacturer" in hardware
    # SetMOMPolicyParametersVDSCommand, as InitVdsOnUpCommand.initMomPolicy sends it.
    cli.Host.setMOMPolicyParameters(
        key_value_store={"balloonEnabled": False, "ksmEnabled": False, "ksmMergeAcrossNodes": True}
    )
    # HostDevListByCapsVDSCommand (refreshHostDevices).
    assert isinstance(cli.Host.hostdevListByCaps(), dict)


def monitor(cli: Client) -> dict[str, Any]:
    """HostMonitoring.refreshVdsStats (GetStatsVDSCommand): one round, checked as parsed."""
    stats: dict[str, Any] = cli.Host.getStats()
    for key in ("cpuUser", "cpuSys", "cpuIdle", "memUsed"):
        assert FLOAT.match(str(stats[key])), (key, stats[key])
    assert isinstance(stats["storageDomains"], dict)
    return stats


def domain_reported_valid(stats: dict[str, Any], sd: str) -> bool:
    """VdsBrokerObjectsBuilder.buildDomainsStats: code 0, valid, lastCheck and delay strings."""
    seen = stats["storageDomains"].get(sd)
    if seen is None:
        return False
    assert FLOAT.match(seen["lastCheck"]), seen
    assert FLOAT.match(seen["delay"]), seen
    return bool(seen["code"] == 0 and seen["valid"] is True)


# -- 4. SPM tasks, as SPMAsyncTask polls them ----------------------------------------------------


def task_done(cli: Client, task_id: str) -> None:
    """HSMGetAllTasksStatusesVDSCommand until the task finished, then HSMClearTaskVDSCommand."""

    def finished() -> dict[str, Any] | None:
        statuses: dict[str, Any] = cli.Host.getAllTasksStatuses()
        status = statuses.get(task_id)
        return status if status and status["taskState"] == "finished" else None

    status = wait_for(finished, 60, f"task {task_id}")
    assert (status["taskResult"], status["code"]) == ("success", 0), status
    cli.Task.clear(taskID=task_id)
    assert task_id not in cli.Host.getAllTasksStatuses()


# -- the session ----------------------------------------------------------------------------


@pytest.mark.kvm
def test_an_engine_session_from_activation_to_teardown(  # noqa: PLR0915 - one session, in order
    host: EmbeddedHost,
    data_center: DataCenter,
    tmp_path: Path,
    engine_xml: Any,
    accelerator: Any,
) -> None:
    dc = data_center
    with host.client(timeout=60) as cli:
        activate(cli)
        monitor(cli)

        # 2. ConnectStorageServer, CreateStorageDomain, CreateStoragePool,
        # ConnectStoragePool, SpmStart (with its task), as harness.engine.DataCenter.
        dc.setup(cli)
        wait_for(lambda: domain_reported_valid(monitor(cli), dc.sd), 30, "the domain valid")
        info = cli.StoragePool.getInfo(storagepoolID=dc.sp)  # GetStoragePoolInfoVDSCommand
        assert info["info"]["master_uuid"] == dc.sd
        assert info["dominfo"][dc.sd]["status"] == "Active"

        # 3. An ISO domain: created, attached, activated (AttachStorageDomainVDSCommand,
        # ActivateStorageDomainVDSCommand), listed (GetFileStatsVDSCommand, as
        # IsoDomainListSynchronizer asks).
        iso_dir = tmp_path / "iso-sd"
        iso_dir.mkdir()
        iso_conn = {"id": new_id(), "connection": str(iso_dir)}
        iso_sd = new_id()
        answer = cli.StoragePool.connectStorageServer(
            storagepoolID=dc.sp, domainType=LOCALFS, connectionParams=[iso_conn]
        )
        assert answer == [{"id": iso_conn["id"], "status": 0}]
        assert cli.StorageDomain.create(
            storagedomainID=iso_sd,
            domainType=LOCALFS,
            typeArgs=str(iso_dir),
            name="isos",
            domainClass=ISO,
            version="5",
        )
        assert cli.StorageDomain.attach(storagedomainID=iso_sd, storagepoolID=dc.sp)
        assert cli.StorageDomain.activate(storagedomainID=iso_sd, storagepoolID=dc.sp)
        [iso_images] = iso_dir.glob(f"*/images/{ISO_IMAGES}")
        (iso_images / "tools.iso").write_bytes(b"\0" * 4096)
        files = cli.StorageDomain.getFileStats(
            storagedomainID=iso_sd, pattern="*.iso", caseSensitive=False
        )
        assert set(files) == {"tools.iso"}
        assert files["tools.iso"]["size"] == "4096"
        assert files["tools.iso"]["status"] == 0

        # 4. A disk: CreateVolumeVDSCommand (an SPM task), polled with getAllTasksStatuses.
        img, vol = new_id(), new_id()
        task_done(cli, dc.create_volume(cli, img, vol, fmt=RAW, size=MiB))
        volume = cli.Volume.getInfo(**dc.ids(img, vol))  # GetVolumeInfoVDSCommand
        assert (volume["legality"], volume["status"]) == ("LEGAL", "OK")
        write_halting_boot_sector(dc.prepare(cli, img, vol))
        cli.Image.teardown(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img)

        # 5. CreateVDSCommand with the Engine's domain XML; monitored by
        # PollAllVmStatsOnlyRefresher (getAllVmStats) and DumpXmlsVDSCommand.
        vm_id = new_id()
        disk = EngineDisk(
            path=Path(f"/rhev/data-center/{dc.sp}/{dc.sd}/images/{img}/{vol}"),
            pool_id=dc.sp,
            domain_id=dc.sd,
            image_id=img,
            volume_id=vol,
            format="raw",
        )
        xml = engine_xml(
            vm_id=vm_id, name="engine-session", domain_type=accelerator.domain_type, disk=disk
        )
        events = StatusEvents(cli)
        created = cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
        assert created["vmId"] == vm_id
        events.until(vm_id, "Up", timeout=60)
        [listed] = [vm for vm in cli.Host.getAllVmStats() if vm["vmId"] == vm_id]
        assert listed["status"] == "Up"
        assert isinstance(listed["hash"], str)
        graphics = {device["type"] for device in listed["displayInfo"]}
        assert graphics == {"spice", "vnc"}
        dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
        assert f"/images/{img}/{vol}" in dumped

        # DestroyVmVDSCommand with gracefully: VM.shutdown(delay as a string, message).
        # The halting guest ignores ACPI; the Engine's "Power Off" (VM.destroy) ends it.
        assert cli.VM.shutdown(vmID=vm_id, delay="30", message="going down") is not None
        assert events.until(vm_id, "Powering down")[-1]["status"] == "Powering down"
        assert cli.VM.destroy(vmID=vm_id) is True
        wait_for(lambda: vm_id not in {vm["vmId"] for vm in cli.Host.getAllVmStats()}, 30, "reaped")

        # 6. DeleteImageGroupVDSCommand (a task); the ISO domain deactivated and
        # detached; SpmStop, DisconnectStoragePool, DisconnectStorageServer.
        task_done(
            cli,
            cli.Image.delete(
                storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, postZero=False, force=False
            ),
        )
        assert img not in cli.StorageDomain.getImages(storagedomainID=dc.sd)
        assert cli.StorageDomain.deactivate(
            storagedomainID=iso_sd, storagepoolID=dc.sp, masterSdUUID=BLANK, masterVersion=1
        )
        assert cli.StorageDomain.detach(
            storagedomainID=iso_sd, storagepoolID=dc.sp, masterSdUUID=BLANK, masterVersion=1
        )
        cli.StoragePool.spmStop(storagepoolID=dc.sp)
        cli.StoragePool.disconnect(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp)
        assert cli.Host.getConnectedStoragePools() == []
        for conn, kind in ((dc.connection, dc.domain_type), (iso_conn, LOCALFS)):
            answer = cli.StoragePool.disconnectStorageServer(
                storagepoolID=dc.sp, domainType=kind, connectionParams=[conn]
            )
            assert answer == [{"id": conn["id"], "status": 0}]
        monitor(cli)  # host monitoring carries on, with no domain left to report
