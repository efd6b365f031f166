"""A VM's TPM and NVRAM data put back on the host before it starts (VM.create).

A VM with an emulated TPM or a UEFI NVRAM keeps state on the host that must follow
it: the Engine reads it with `VM.getExternalData` (device_data.py) while the VM runs
and when it went Down, stores it, and hands it back when the VM starts again — on
this host or another — as two more `VM.create` params (ovirt-engine
`CreateBrokerVDSCommand.createInfo`, from `VmInfoBuildUtils.tpmData`/`nvramData`):

- `_X_tpmdata` (`VdsProperties.tpmData`): swtpm's state directory as an xz tar of
  `./tpm2/…`, base64-encoded (sent whenever the Engine has it);
- `_X_nvramdata` (`VdsProperties.nvramData`): the NVRAM file, bzip2-compressed and
  base64-encoded behind the marker `=0=` (sent for an OVMF VM only).

VDSM (`Vm._init_external_data`, `supervdsm_api/virt.py write_tpm_data`/
`write_nvram_data`, `filedata.py`) writes them before the domain is created, only
for a device the XML has, and fails VM.create with ExternalDataFailed (89) if the
data cannot be decoded or written; data with anything but plain files and
directories is refused. Here likewise: `InitialData.of_params` decodes and checks
both at once (pure, no disk), `restore` writes them (blocking): the NVRAM to the
file the domain XML's `<os><nvram>` names — where libvirt opens it; libvirt copies
its template only when the file is missing — and the TPM state to swtpm's directory
of the VM (`device_data.swtpm_dir`: libvirt runs `swtpm_setup` only when that is
empty, so the restored state is the one swtpm loads). Stale data there is replaced.

Nothing here is kept or logged: the data is the VM's secrets.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import io
import logging
import os
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import libvirt

from hostvisor.actors.vm import device_data, domxml, hostpaths
from hostvisor.actors.vm.device_errors import ExternalDataFailed
from hostvisor.actors.vm.errors import VmExists

log = logging.getLogger(__name__)

PARAMS = {"tpm": "_X_tpmdata", "nvram": "_X_nvramdata"}
"""Each kind's VM.create param (ovirt-engine VdsProperties, VDSM's schema)."""
DIR_MODE = 0o700
FILE_MODE = 0o600
_BZIP2 = ord("0")
MAX_TPM_FILES = 64
"""More members than swtpm ever writes (one or two files) is not TPM state."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InitialData:
    """The TPM and NVRAM data VM.create got, decoded and checked (the raw bytes)."""

    tpm: bytes | None = None
    """swtpm's state directory as a tar (xz or not), checked: plain files and dirs."""
    nvram: bytes | None = None
    """The NVRAM file's content."""

    @classmethod
    def of_params(cls, params: Mapping[str, Any]) -> InitialData | None:
        """The data in VM.create's vmParams, or None when there is none. Pure.

        Raises:
            ExternalDataFailed (89): a param that is not a string, is not VDSM's
                encoding, or (TPM) is not a tar of plain files and directories.
        """
        raw: dict[str, bytes] = {}
        for kind, param in PARAMS.items():
            value = params.get(param)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ExternalDataFailed(reason="Failed to write initial data", kind=kind)
            raw[kind] = decode(value, kind)
        if not raw:
            return None
        if "tpm" in raw:
            tpm_members(raw["tpm"])
        return cls(tpm=raw.get("tpm"), nvram=raw.get("nvram"))


def decode(data: str, kind: str) -> bytes:
    """Decode VDSM's encoding of external data (`filedata._FileSystemData.store`). Pure.

    Base64, line ends ignored; behind `=0=` bzip2-compressed, with no marker as is.

    Raises:
        ExternalDataFailed: not base64, a bad bzip2 stream, or an unknown marker.
    """
    try:
        encoded = data.encode("ascii").translate(None, delete=b"\n")
    except UnicodeEncodeError:
        raise ExternalDataFailed(reason="Failed to decode base64 data", kind=kind) from None
    marker = None
    if len(encoded) > 3 and encoded[0] == encoded[2] == ord("="):  # noqa: PLR2004 - "=X="
        marker, encoded = encoded[1], encoded[3:]
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ExternalDataFailed(reason="Failed to decode base64 data", kind=kind) from None
    if marker is None:
        return decoded
    if marker != _BZIP2:
        raise ExternalDataFailed(reason="Invalid data format", kind=kind, data_format=marker)
    try:
        return bz2.decompress(decoded)
    except (OSError, ValueError, EOFError):
        raise ExternalDataFailed(reason="Failed to decompress bzip2 content", kind=kind) from None


def tpm_members(archive: bytes) -> list[tuple[PurePosixPath, bytes | None]]:
    """The TPM archive's members: (relative path, content; None for a directory). Pure.

    Raises:
        ExternalDataFailed: not a tar, or a member that is not a plain file or a
            directory inside the archive's root (a link, a device, an absolute path
            or one with `..`), or too many of them.
    """
    members: list[tuple[PurePosixPath, bytes | None]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise _special(member.name)
                if member.isdir():
                    members.append((path, None))
                elif member.isfile():
                    content = tar.extractfile(member)
                    members.append((path, content.read() if content is not None else b""))
                else:
                    raise _special(member.name)
                if len(members) > MAX_TPM_FILES:
                    raise _special(member.name)
    except (tarfile.TarError, EOFError, OSError):
        raise ExternalDataFailed(reason="TPM data is not a tar archive", kind="tpm") from None
    return members


def _special(name: str) -> ExternalDataFailed:
    return ExternalDataFailed(reason="Cannot write TPM data with non-regular files", path=name)


def restore(initial: InitialData, xml: str, *, uri: str, vm_id: str) -> tuple[str, ...]:
    """Write `initial` where libvirt and swtpm will read it for `xml`; the kinds written.

    Blocks on the disk: runs on a worker, never on an actor's or the API's loop. Only
    a kind whose device the XML has is written (VDSM's check: an emulated TPM, an
    `<os><nvram>`); stale data there is replaced.

    Raises:
        ExternalDataFailed (89): the data could not be written.
    """
    kinds = device_data.devices_with_data(xml)
    written = []
    try:
        if initial.nvram is not None and "nvram" in kinds:
            path = device_data.nvram_path(xml)
            if path is None or not path.is_absolute():
                raise ExternalDataFailed(reason="No NVRAM path in the domain XML", kind="nvram")
            write_nvram(path, initial.nvram)
            written.append("nvram")
        if initial.tpm is not None and "tpm" in kinds:
            write_tpm(device_data.swtpm_dir(uri, vm_id), tpm_members(initial.tpm))
            written.append("tpm")
    except OSError as error:
        raise ExternalDataFailed(
            reason="Failed to write initial data", error=error.strerror or str(error)
        ) from None
    log.info("VM %s: external data restored: %s", vm_id, ", ".join(written) or "none")
    return tuple(written)


def restore_before_launch(connection: Any, xml: str, initial: InitialData) -> tuple[str, ...]:
    """`restore` for a VM about to be created from `xml` on `connection` (blocking).

    The NVRAM path is the one of the XML as this host launches it
    (`hostpaths.localize`); the data of a domain libvirt runs is never touched.

    Raises:
        VmExists: libvirt runs a domain of that id.
        ExternalDataFailed (89): the data could not be written.
    """
    vm_id = domxml.parse(xml).vm_id
    uri = str(connection.getURI())
    try:
        running = bool(connection.lookupByUUIDString(vm_id).isActive())
    except libvirt.libvirtError:
        running = False
    if running:
        raise VmExists(vmId=vm_id)
    launched = hostpaths.localize(xml, hostpaths.layout_of(uri)).xml
    return restore(initial, launched, uri=uri, vm_id=vm_id)


def write_nvram(path: Path, content: bytes) -> None:
    """Replace the NVRAM file at `path` by `content`, mode 0600 (blocking; OSError)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # never write through a link or an old file's mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as nvram:
        nvram.write(content)


def write_tpm(directory: Path, members: list[tuple[PurePosixPath, bytes | None]]) -> None:
    """Make `directory` hold exactly `members` (swtpm's state; blocking; OSError)."""
    if directory.is_symlink() or directory.is_file():
        directory.unlink()
    elif directory.exists():
        log.info("stale TPM data replaced in %s", directory)
        shutil.rmtree(directory)
    directory.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    directory.mkdir(mode=DIR_MODE)
    for relative, content in members:
        target = directory / relative
        if content is None:
            target.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            continue
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "wb") as state:
            state.write(content)


__all__ = ["PARAMS", "InitialData", "decode", "restore", "restore_before_launch", "tpm_members"]
