"""What the Engine does to a new host's storage, step by step, through the API.

Shared by the storage flow tests: each helper is one or two verbs as the Engine sends
them (ints for the wire enums, sizes as strings), and waits on tasks the way the
Engine does, by polling Task.getStatus until the task has finished.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.guests import HALT_SECTOR, OVIRT_VM_NS
from harness.vms import write_test_node
from harness.waiting import wait_for
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

BLANK = "00000000-0000-0000-0000-000000000000"
LOCALFS, POSIXFS = 4, 6
DATA = 1
COW, RAW = 4, 5
PREALLOCATED, SPARSE = 1, 2
MiB = 1024 * 1024


def new_id() -> str:
    return str(uuid.uuid4())


def wait_task(cli: Any, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll Task.getStatus until the task finished; clear it; return its last status."""

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cli.Task.getStatus(taskID=task_id)
        return status if status["taskState"] == "finished" else None

    status = wait_for(finished, timeout, f"task {task_id} to finish")
    cli.Task.clear(taskID=task_id)
    return status


def succeeded(cli: Any, task_id: str) -> None:
    status = wait_task(cli, task_id)
    assert status["taskResult"] == "success", status
    assert status["code"] == 0


@dataclass
class DataCenter:
    """One pool with one data domain, made the Engine's way."""

    connection: dict[str, Any]
    domain_type: int
    sd: str = field(default_factory=new_id)
    sp: str = field(default_factory=new_id)

    def connect_server(self, cli: Any) -> None:
        answer = cli.StoragePool.connectStorageServer(
            storagepoolID=BLANK, domainType=self.domain_type, connectionParams=[self.connection]
        )
        assert answer == [{"id": self.connection["id"], "status": 0}]

    def create_domain(self, cli: Any) -> None:
        assert (
            cli.StorageDomain.create(
                storagedomainID=self.sd,
                domainType=self.domain_type,
                typeArgs=self.connection["connection"],
                name="data",
                domainClass=DATA,
                version="5",
            )
            is True
        )

    def create_pool(self, cli: Any) -> None:
        cli.StoragePool.create(
            storagepoolID=self.sp,
            name="dc1",
            masterSdUUID=self.sd,
            masterVersion=1,
            domainList=[self.sd],
            lockRenewalIntervalSec=5,
            leaseTimeSec=60,
            ioOpTimeoutSec=10,
            leaseRetries=3,
        )

    def connect_pool(self, cli: Any) -> None:
        cli.StoragePool.connect(
            storagepoolID=self.sp,
            hostID=1,
            scsiKey=self.sp,
            masterSdUUID=self.sd,
            masterVersion=1,
            domainDict={self.sd: "active"},
        )

    def become_spm(self, cli: Any) -> None:
        succeeded(cli, cli.StoragePool.spmStart(storagepoolID=self.sp, prevID=-1, prevLver="-1"))
        assert cli.StoragePool.getSpmStatus(storagepoolID=self.sp)["spmStatus"] == "SPM"

    def setup(self, cli: Any) -> None:
        self.connect_server(cli)
        self.create_domain(cli)
        self.create_pool(cli)
        self.connect_pool(cli)
        self.become_spm(cli)

    def ids(self, img: str, vol: str) -> dict[str, str]:
        return {
            "storagepoolID": self.sp,
            "storagedomainID": self.sd,
            "imageID": img,
            "volumeID": vol,
        }

    def create_volume(  # noqa: PLR0913 - the verb's own params
        self,
        cli: Any,
        img: str,
        vol: str,
        *,
        size: int = MiB,
        fmt: int = COW,
        prealloc: int = SPARSE,
        parent: str = BLANK,
    ) -> str:
        """Volume.create; returns the task id."""
        task_id: str = cli.Volume.create(
            **self.ids(img, vol),
            size=str(size),
            volFormat=fmt,
            preallocate=prealloc,
            diskType="DATA",
            desc="a disk",
            srcImgUUID=img if parent != BLANK else BLANK,
            srcVolUUID=parent,
        )
        return task_id

    def prepare(self, cli: Any, img: str, vol: str) -> str:
        path: str = cli.Image.prepare(
            storagepoolID=self.sp, storagedomainID=self.sd, imageID=img, volumeID=vol
        )["path"]
        return path


def write_halting_boot_sector(path: str) -> None:
    """Make a raw volume bootable: its first sector halts the CPU (harness.guests)."""
    sector = bytearray(512)
    sector[: len(HALT_SECTOR)] = HALT_SECTOR
    sector[510:512] = b"\x55\xaa"
    with Path(path).open("r+b") as disk:
        disk.write(sector)


def engine_vm_xml(*, name: str, vm_id: str, dc: DataCenter, img: str, vol: str, kind: str) -> str:
    """A domain XML as the Engine sends it: the disk named by storage ids in the metadata.

    The `<source>` is the Engine's guess at a path; the host replaces it with the
    prepared volume's path.
    """
    guess = f"/rhev/data-center/{dc.sp}/{dc.sd}/images/{img}/{vol}"
    return f"""<domain type='{kind}'>
  <name>{name}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>64</memory>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="{OVIRT_VM_NS}">
      <ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>
      <ovirt-vm:device devtype="disk" name="vda">
        <ovirt-vm:poolID>{dc.sp}</ovirt-vm:poolID>
        <ovirt-vm:domainID>{dc.sd}</ovirt-vm:domainID>
        <ovirt-vm:imageID>{img}</ovirt-vm:imageID>
        <ovirt-vm:volumeID>{vol}</ovirt-vm:volumeID>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk' snapshot='no'>
      <driver name='qemu' type='qcow2' cache='none' error_policy='stop' io='threads'/>
      <source file='{guess}'/>
      <target dev='vda' bus='virtio'/>
      <serial>{img}</serial>
    </disk>
    <memballoon model='virtio'/>
  </devices>
</domain>"""


def local_data_center(directory: Path) -> DataCenter:
    """A data center whose one domain will live in a fresh LOCALFS directory."""
    directory.mkdir()
    return DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)


@contextlib.contextmanager
def data_center_of(kind: str, directory: Path) -> Iterator[DataCenter]:
    """A data center on `kind` storage: "localfs" (a directory) or "posixfs" (an ext4
    file system on a loop device, mounted by the host), under `directory`."""
    if kind == "localfs":
        yield local_data_center(directory / "local-sd")
        return
    from harness.loopdev import loop_device  # noqa: PLC0415 - only where loop devices work

    with loop_device(directory / "posix.img", size=64 * MiB) as device:
        yield DataCenter({"id": new_id(), "connection": device, "vfs_type": "ext4"}, POSIXFS)


@contextlib.contextmanager
def storage_host(directory: Path, **settings: Any) -> Iterator[Client]:
    """An in-process host with no guests (an empty test-driver node), and a client."""
    config = load_config(
        state_dir=directory / "state",
        libvirt_uri=write_test_node(directory / "node.xml", []),
        management_port=0,
        **settings,
    )
    with EmbeddedHost(config) as host, host.client(timeout=30) as cli:
        yield cli


def volume(cli: Any, dc: DataCenter, img: str, vol: str) -> dict[str, Any]:
    """Volume.getInfo of one volume of `dc`."""
    info: dict[str, Any] = cli.Volume.getInfo(**dc.ids(img, vol))
    return info


def qemu_chain(path: Path) -> list[str]:
    """The volumes qemu-img sees from `path` down, base first."""
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [Path(layer["filename"]).name for layer in reversed(json.loads(out))]


def qemu_check(path: Path) -> None:
    """`qemu-img check` of an image (even one a running guest holds); raises if bad."""
    subprocess.run(["qemu-img", "check", "-U", str(path)], capture_output=True, check=True)


@contextlib.contextmanager
def data_center_host(
    factory: Any, embed_root: Path
) -> Iterator[tuple[EmbeddedHost, Client, DataCenter]]:
    """An embedded host with a LOCALFS data center made the Engine's way (it is SPM), and
    a client that destroys the VMs it leaves behind."""
    from harness.hosts import VM_TEST_SETTINGS, client_destroying_vms, embedded_host  # noqa: PLC0415

    with embedded_host(factory, embed_root, **VM_TEST_SETTINGS) as host:
        dc = local_data_center(factory.mktemp("dc") / "sd")
        with client_destroying_vms(host) as cli:
            dc.setup(cli)
            yield host, cli, dc
