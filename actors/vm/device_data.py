"""External data (TPM, NVRAM), screenshots, destroy-on-reboot.

**External data** (VDSM `externaldata.py`, `filedata.py`; `VM.getExternalData`,
called by the Engine's `GetVmExternalDataVDSCommand` with `{vmID, kind,
forceUpdate}`): a VM with an emulated TPM or a UEFI NVRAM keeps state on the host
that must outlive the VM. The NVRAM is the file the live XML's `<os><nvram>` names,
sent bzip2-compressed and base64-encoded behind the marker `=0=`; the TPM is
swtpm's state directory (`<libvirt state>/swtpm/<vmId>/`), sent as an xz tar,
base64-encoded. The hash is the SHA-256 of the encoded text (hex). Data is
"stable" once two reads agree (or when `forceUpdate` asks for the newest); the
answer is `{hash}` plus `_X_data` when there is data and the caller's
`lastHash` differs. VM stats carry `tpmHash` / `nvramHash`, the stable data's hash.

**Screenshots** (`VM.screenshot`, `ScreenshotVmVDSCommand`): `virDomainScreenshot`
on a stream; `{data: base64, encoding: "base64", mime_type}`.

**Destroy on reboot** (`VM.setDestroyOnReboot`, `SetDestroyOnRebootVDSCommand`, for
run-once VMs): VDSM notes it in the VM's metadata (`ovirt-vm:destroy_on_reboot`)
and, on the guest's next reboot, destroys the VM with exit reason "Destroyed on
reboot". Here a libvirt REBOOT event callback on the domain tells the VM's actor.

Functions taking a `domain` or a connection block on libvirt (or the disk) and run
on a worker; the rest are pure.
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import io
import logging
import tarfile
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.device_errors import ExternalDataFailed
from hostvisor.actors.vm.metadata_lock import editing

log = logging.getLogger(__name__)

KINDS = ("tpm", "nvram")
"""The external data kinds VDSM knows (ExternalDataKind), as the API names them."""
STATS_FIELDS = {"nvram": "nvramHash", "tpm": "tpmHash"}
SYSTEM_SWTPM = Path("/var/lib/libvirt/swtpm")
_SCREENSHOT_CHUNK = 262_120
_META_VM = f"{{{domxml.OVIRT_VM}}}vm"
DESTROY_ON_REBOOT = "destroy_on_reboot"


def secure_hash(data: str) -> str:
    """VDSM's `ExternalData.secure_hash`: SHA-256 of the encoded data, hex."""
    return hashlib.sha256(data.encode("ascii")).hexdigest()


def devices_with_data(xml: str) -> tuple[str, ...]:
    """Which external data kinds the domain has: an emulated TPM, an NVRAM. Pure."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    except ET.ParseError:
        return ()
    kinds = []
    if any(t.find("backend[@type='emulator']") is not None for t in root.iterfind("devices/tpm")):
        kinds.append("tpm")
    if root.find("os/nvram") is not None:
        kinds.append("nvram")
    return tuple(kinds)


def nvram_path(xml: str) -> Path | None:
    """The NVRAM file the domain XML names. Pure."""
    text = ET.fromstring(xml).findtext("os/nvram")  # noqa: S314 - libvirt's own XML
    return Path(text.strip()) if text and text.strip() else None


def swtpm_dir(uri: str, vm_id: str) -> Path:
    """The state directory of swtpm of a VM, on a system or an embedded libvirt. Pure."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.path == "/embed":
        root = urllib.parse.parse_qs(parsed.query).get("root", [""])[0]
        return Path(root) / "lib" / "swtpm" / vm_id
    return SYSTEM_SWTPM / vm_id


def read_data(kind: str, xml: str, *, uri: str, vm_id: str) -> str:
    """Read and encode one kind of the VM's external data (blocks on the disk).

    Raises:
        ExternalDataFailed: the data is not there, or unreadable.
    """
    try:
        if kind == "nvram":
            path = nvram_path(xml)
            if path is None:
                raise ExternalDataFailed(reason="No such device available", kind=kind)
            raw = path.read_bytes()
            if not raw:
                raise ExternalDataFailed(reason="File with zero size is not allowed", kind=kind)
            return "=0=" + base64.b64encode(bz2.compress(raw, compresslevel=9)).decode("ascii")
        directory = swtpm_dir(uri, vm_id)
        if not directory.is_dir() or not any(directory.iterdir()):
            raise ExternalDataFailed(reason="Data path doesn't exist", kind=kind)
        return base64.b64encode(_tar(directory)).decode("ascii")
    except OSError as error:
        raise ExternalDataFailed(reason=f"Failed to read {kind} data", error=str(error)) from None


def _tar(directory: Path) -> bytes:
    """The directory as an xz tar, names sorted (VDSM: `tar --create --xz --sort=name`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for path in sorted(directory.rglob("*")):
            archive.add(path, arcname=f"./{path.relative_to(directory)}", recursive=False)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class DataState:
    """One kind of data as last read: the newest, and the last stable one with its hash."""

    current: str | None = None
    stable: str | None = None
    engine_hash: str = ""

    def read(self, data: str, *, force: bool) -> DataState:
        """The state after reading `data` (stable when forced or read twice alike)."""
        if force or data == self.current:
            return DataState(current=data, stable=data, engine_hash=secure_hash(data))
        return DataState(current=data, stable=self.stable, engine_hash=self.engine_hash)

    def answer(self, last_hash: str | None) -> dict[str, Any]:
        """VM.getExternalData's `{hash[, _X_data]}`."""
        result: dict[str, Any] = {"hash": self.engine_hash}
        if self.stable and last_hash != self.engine_hash:
            result["_X_data"] = self.stable
        return result


# -- screenshots ----------------------------------------------------------------------------


def screenshot(connection: Any, domain: Any) -> dict[str, str]:
    """The guest's console as an image (blocks on libvirt): VDSM's answer."""
    stream = connection.newStream(0)
    buffer = bytearray()
    try:
        mime_type: str = domain.screenshot(stream, 0)
        while True:
            chunk = stream.recv(_SCREENSHOT_CHUNK)
            if not chunk:
                break
            buffer += chunk
    finally:
        try:
            stream.finish()
        except libvirt.libvirtError:
            stream.abort()
    return {
        "data": base64.b64encode(bytes(buffer)).decode("ascii"),
        "encoding": "base64",
        "mime_type": mime_type,
    }


# -- destroy on reboot ----------------------------------------------------------------------


def destroy_on_reboot(xml: str) -> bool:
    """Whether the metadata asks to destroy the VM on its next reboot. Pure."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    except ET.ParseError:
        return False
    text = root.findtext(f"metadata/{_META_VM}/{{{domxml.OVIRT_VM}}}{DESTROY_ON_REBOOT}")
    if (text or "").strip().lower() in ("true", "1"):
        return True
    return (root.findtext("on_reboot") or "").strip() == "destroy"


def marked_metadata(xml: str) -> str:
    """The `ovirt-vm:vm` metadata of `xml` with `destroy_on_reboot` set, namespace-free. Pure."""
    root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    meta = root.find(f"metadata/{_META_VM}")
    meta = ET.Element(_META_VM) if meta is None else meta
    tag = f"{{{domxml.OVIRT_VM}}}{DESTROY_ON_REBOOT}"
    element = meta.find(tag)
    if element is None:
        element = ET.SubElement(meta, tag, {"type": "bool"})
    element.text = "True"
    for child in meta.iter():
        child.tag = child.tag.rpartition("}")[2]
    return ET.tostring(meta, encoding="unicode")


def mark_destroy_on_reboot(domain: Any) -> str:
    """Note destroy-on-reboot in the running domain's metadata; return its live XML (blocks)."""
    with editing(domain):
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            marked_metadata(domain.XMLDesc(0)),
            "ovirt-vm",
            domxml.OVIRT_VM,
            libvirt.VIR_DOMAIN_AFFECT_LIVE,
        )
    live: str = domain.XMLDesc(0)
    return live
