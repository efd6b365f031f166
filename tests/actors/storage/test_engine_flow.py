"""The Engine's storage flow on a fresh host, end to end, to a running guest.

connect server → create domain → create pool → connect → spmStart (a task) → an
image with a base volume and a snapshot layer → prepare → VM.create from that image
→ the guest is Up → destroy → teardown → delete. Once on a LOCALFS domain (a
directory, linked under the data-center root), once on a POSIXFS domain (a real
ext4 file system on a loop device, mounted by the host).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    COW,
    LOCALFS,
    RAW,
    DataCenter,
    MiB,
    data_center_of,
    engine_vm_xml,
    new_id,
    succeeded,
    write_halting_boot_sector,
)
from harness.guests import StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost

VOLUME_DOES_NOT_EXIST = 201


@pytest.fixture
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture(params=["localfs", "posixfs"])
def data_center(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataCenter]:
    with data_center_of(request.param, tmp_path) as made:
        yield made


@pytest.mark.slow
@pytest.mark.kvm
@pytest.mark.libvirt
def test_engine_flow_from_a_bare_server_to_a_running_guest_and_back(
    host: EmbeddedHost, data_center: DataCenter, accelerator: Any
):
    dc = data_center
    with host.client(timeout=60) as cli:
        dc.setup(cli)
        assert cli.Host.getConnectedStoragePools() == [dc.sp]
        info = cli.StorageDomain.getInfo(storagedomainID=dc.sd)
        assert info["role"] == "Master"
        assert info["pool"] == [dc.sp]
        assert info["type"] == ("LOCALFS" if dc.domain_type == LOCALFS else "POSIXFS")

        img, base, top = new_id(), new_id(), new_id()
        succeeded(cli, dc.create_volume(cli, img, base, fmt=RAW, size=MiB))
        write_halting_boot_sector(dc.prepare(cli, img, base))
        succeeded(cli, dc.create_volume(cli, img, top, fmt=COW, parent=base))

        base_info = cli.Volume.getInfo(**dc.ids(img, base))
        top_info = cli.Volume.getInfo(**dc.ids(img, top))
        assert (base_info["voltype"], base_info["format"]) == ("INTERNAL", "RAW")
        assert (top_info["voltype"], top_info["format"]) == ("LEAF", "COW")
        assert top_info["parent"] == base
        assert top_info["capacity"] == str(MiB)
        assert cli.Image.getVolumes(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img) in (
            [base, top],
            [top, base],
        )

        path = dc.prepare(cli, img, top)
        chain = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--backing-chain", "--output=json", path],
                capture_output=True,
                check=True,
                text=True,
            ).stdout
        )
        assert [Path(layer["filename"]).name for layer in chain] == [top, base]

        events = StatusEvents(cli)
        vm_id = new_id()
        xml = engine_vm_xml(
            name="from-storage", vm_id=vm_id, dc=dc, img=img, vol=top, kind=accelerator.domain_type
        )
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        events.until(vm_id, "Up")
        dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
        assert f"<source file='{path}'" in dumped or f'<source file="{path}"' in dumped

        cli.VM.destroy(vmID=vm_id)
        assert cli.Image.teardown(
            storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img, volumeID=top
        )
        succeeded(cli, cli.Image.delete(storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img))
        assert img not in cli.StorageDomain.getImages(storagedomainID=dc.sd)
        with pytest.raises(ServerError) as gone:
            cli.Volume.getInfo(**dc.ids(img, top))
        assert gone.value.code in (VOLUME_DOES_NOT_EXIST, 268)

        cli.StoragePool.spmStop(storagepoolID=dc.sp)
        cli.StoragePool.disconnect(storagepoolID=dc.sp, hostID=1, scsiKey=dc.sp)
        assert cli.Host.getConnectedStoragePools() == []
        answer = cli.StoragePool.disconnectStorageServer(
            storagepoolID=dc.sp, domainType=dc.domain_type, connectionParams=[dc.connection]
        )
        assert answer == [{"id": dc.connection["id"], "status": 0}]
