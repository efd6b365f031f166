"""A pool's files beside its volumes: the master tree, VM OVFs, ISO files, the master role.

VDSM keeps, on the master domain and on export (Backup) domains, the `master/`
tree: `master/vms/<vmId>/<vmId>.ovf` (written by `StoragePool.updateVMs`, read by
`getBackedUpVmsInfo`) and `master/tasks/` (the SPM tasks; actors/storage/task_store.py).
An ISO domain keeps its files under `images/11111111-1111-1111-1111-111111111111/`
(`StorageDomain.getFileStats`). These are the typed domain messages that read and
write them; the domain's actor runs each (reads on a worker, writes on its writer),
so each blocks only a worker, on that domain's mount.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.domain_ops import DomainRead, DomainWrite
from hostvisor.actors.storage.errors import (
    GetFileStatsError,
    MissingOvfFileFromVM,
    UnsupportedDomainVersion,
    VMPathNotExists,
)
from hostvisor.actors.storage.filedomain import ISO_IMAGE_UUID, FileDomain
from hostvisor.actors.storage.filevolume import IMAGES_DIR
from hostvisor.actors.storage.metadata import (
    atomic_write,
    fsync_directory,
    write_domain_metadata,
)
from hostvisor.actors.storage.model import DomainClass, check_uuid

MASTER_DIR = "master"
VMS_DIR = "vms"
TASKS_DIR = "tasks"
ACCESS_DENIED = 469
"""VDSM's StorageServerAccessPermissionError code: a file qemu could not read."""
NEWEST_VERSION = 5


def master_dir(domain_path: Path) -> Path:
    """`<domain>/master`."""
    return domain_path / MASTER_DIR


def vms_dir(domain_path: Path) -> Path:
    """`<domain>/master/vms`: one directory per VM, holding `<vmId>.ovf`."""
    return domain_path / MASTER_DIR / VMS_DIR


def tasks_dir(domain_path: Path) -> Path:
    """`<domain>/master/tasks`: one file per SPM task."""
    return domain_path / MASTER_DIR / TASKS_DIR


def iso_dir(domain_path: Path) -> Path:
    """Where an ISO domain keeps its files."""
    return domain_path / IMAGES_DIR / ISO_IMAGE_UUID


# -- reads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStats(DomainRead[dict[str, dict[str, Any]]]):
    """StorageDomain.getFileStats: the ISO domain's files matching `pattern`.

    {name: {size, ctime, status}} as VDSM's fileSD.getFileList: names relative to the
    ISO directory (subdirectories walked), size and ctime strings, status 0 when
    the file is readable, 469 when it is not.
    """

    pattern: str = "*"
    case_sensitive: bool = False
    op = "file stats"

    def apply(self, domain: FileDomain) -> dict[str, dict[str, Any]]:
        """Walk the ISO directory (blocking). Raises GetFileStatsError unless an ISO domain."""
        if domain.metadata().get("CLASS") != DomainClass.ISO.word:
            raise GetFileStatsError(sdUUID=domain.sd_uuid, reason="not an ISO domain")
        base = iso_dir(domain.path)
        names = sorted(_walk(base))
        if self.pattern != "*":
            if self.case_sensitive:
                names = fnmatch.filter(names, self.pattern)
            else:
                regex = re.compile(fnmatch.translate(self.pattern), re.IGNORECASE)
                names = [name for name in names if regex.match(name)]
        stats: dict[str, dict[str, Any]] = {}
        for name in names:
            path = base / name
            st = path.stat()
            readable = os.access(path, os.R_OK)
            stats[name] = {
                "size": str(st.st_size),
                "ctime": str(st.st_ctime),
                "status": 0 if readable else ACCESS_DENIED,
            }
        return stats


def _walk(base: Path) -> list[str]:
    found: list[str] = []
    for directory, _subdirs, files in os.walk(base):
        relative = Path(directory).relative_to(base)
        found.extend(str(relative / name) if str(relative) != "." else name for name in files)
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class VmsInfo(DomainRead[dict[str, str]]):
    """StoragePool.getBackedUpVmsInfo: {vmId: OVF text} of the VMs kept on the domain.

    Only `vm_ids` (all when empty); a VM with no directory is left out, as VDSM does.
    """

    vm_ids: tuple[str, ...] = ()
    op = "vms info"

    def apply(self, domain: FileDomain) -> dict[str, str]:
        """Read the OVFs (blocking). Raises MissingOvfFileFromVM."""
        base = vms_dir(domain.path)
        wanted = self.vm_ids or tuple(_vm_ids(base))
        found: dict[str, str] = {}
        for vm in wanted:
            directory = base / vm
            if not directory.is_dir():
                continue
            ovf = directory / f"{vm}.ovf"
            if not ovf.exists():
                raise MissingOvfFileFromVM(vmId=vm)
            found[vm] = ovf.read_text(encoding="utf-8")
        return found


def _vm_ids(base: Path) -> list[str]:
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return []
    ids = []
    for entry in entries:
        try:
            ids.append(check_uuid(entry.name, "vmId"))
        except InvalidArgument:
            continue
    return ids


# -- writes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MakeMasterTree(DomainWrite[Path]):
    """Make `master/vms` and `master/tasks` (the master at spmStart; export domains)."""

    op = "make master tree"

    def apply(self, domain: FileDomain) -> Path:
        """Create the directories if missing (blocking); return `master/`."""
        for directory in (vms_dir(domain.path), tasks_dir(domain.path)):
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        return master_dir(domain.path)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateVms(DomainWrite[None]):
    """StoragePool.updateVMs: (re)write each VM's OVF under `master/vms`.

    `vms` holds (vmId, OVF text); each VM's directory is replaced whole.
    """

    vms: tuple[tuple[str, str], ...]
    op = "update vms"

    def apply(self, domain: FileDomain) -> None:
        """Write the OVFs durably (blocking). Raises VMPathNotExists."""
        base = _existing_vms_dir(domain)
        for vm, ovf in self.vms:
            directory = base / vm
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(mode=0o755)
            atomic_write(directory / f"{vm}.ovf", ovf.encode("utf-8"))
            fsync_directory(directory)
        fsync_directory(base)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveVm(DomainWrite[None]):
    """StoragePool.removeVM: remove a VM's directory from `master/vms` (if there)."""

    vm: str
    op = "remove vm"

    def apply(self, domain: FileDomain) -> None:
        """Remove it (blocking). Raises VMPathNotExists."""
        directory = _existing_vms_dir(domain) / self.vm
        if directory.exists():
            shutil.rmtree(directory)
            fsync_directory(directory.parent)


def _existing_vms_dir(domain: FileDomain) -> Path:
    base = vms_dir(domain.path)
    if not base.is_dir():
        raise VMPathNotExists(path=str(base), sdUUID=domain.sd_uuid)
    return base


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPoolKeys(DomainWrite[dict[str, str]]):
    """Change pool keys of the metadata (ROLE, MASTER_VERSION, POOL_UUID, ...).

    Used by switchMaster and reconstructMaster; returns the metadata as it was.
    """

    changes: tuple[tuple[str, str], ...]
    op = "set pool keys"

    def apply(self, domain: FileDomain) -> dict[str, str]:
        """Write the keys atomically (blocking)."""
        before = domain.metadata()
        domain.update_metadata(**dict(self.changes))
        return before


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckVersion(DomainRead[int]):
    """StoragePool.upgrade, for one domain: its version, refused if past what is supported."""

    target: int
    op = "check version"

    def apply(self, domain: FileDomain) -> int:
        """Return the domain's version. Raises UnsupportedDomainVersion."""
        if self.target > NEWEST_VERSION:
            raise UnsupportedDomainVersion(version=self.target, newest=NEWEST_VERSION)
        return domain.version


POOL_ONLY_KEYS = (
    "POOL_DESCRIPTION",
    "POOL_DOMAINS",
    "POOL_SPM_ID",
    "POOL_SPM_LVER",
    "MASTER_VERSION",
)
"""The keys only a pool's master carries."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeavePool(DomainWrite[None]):
    """StoragePool.destroy, for one domain: no pool, the Regular role, no master keys."""

    op = "leave pool"

    def apply(self, domain: FileDomain) -> None:
        """Rewrite the metadata without the pool (blocking)."""
        values = {k: v for k, v in domain.metadata().items() if k not in POOL_ONLY_KEYS}
        values.update(POOL_UUID="", ROLE="Regular")
        write_domain_metadata(domain.metadata_path, values)
