"""TPM and NVRAM data restored at VM.create, as the Engine sends it back.

The Engine reads a VM's TPM state and UEFI variables with VM.getExternalData while
it runs, keeps them, and sends them back as `_X_tpmdata` and `_X_nvramdata` in
VM.create's vmParams when the VM starts again, here or on another host
(`CreateBrokerVDSCommand`). A UEFI guest (OVMF, TCG) with an emulated TPM 2.0
(swtpm) runs once; its data is read; it is destroyed and its files are gone (libvirt
removes a transient domain's TPM state; the NVRAM file is deleted, as on a host the
VM never ran on). VM.create with the data: swtpm starts on the restored state —
libvirt does not manufacture a new TPM (no second `swtpm_setup` run in the swtpm
log), and the TPM state the host reads back is the one of the first run — and the
NVRAM file qemu runs on holds the first run's variables, not the template's.

Bad data (not a string, not base64, a tar with a link in it) answers
ExternalDataFailed (89) and creates nothing.
"""

from __future__ import annotations

import base64
import bz2
import io
import lzma
import tarfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.waiting import wait_for
from hostvisor.actors.vm import device_data
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt, pytest.mark.slow]

EXTERNAL_DATA_FAILED = 89
OVMF = Path("/usr/share/OVMF")
PERMALL = "./tpm2/tpm2-00.permall"


def uefi_tpm_xml(vm_id: str, nvram: Path) -> str:
    """A UEFI guest with an emulated TPM 2.0, as the Engine writes them (no disk; TCG)."""
    return f"""<domain type='qemu'>
  <name>xd-{vm_id[:8]}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>128</memory>
  <metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
    <ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion></ovirt-vm:vm></metadata>
  <vcpu>1</vcpu>
  <features><acpi/></features>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' secure='no' type='pflash'>{OVMF}/OVMF_CODE_4M.fd</loader>
    <nvram template='{OVMF}/OVMF_VARS_4M.fd'>{nvram}</nvram></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
    <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
  </devices>
</domain>"""


def _up(cli: Client, vm_id: str) -> None:
    stats = wait_for(
        lambda: (st := cli.VM.getStats(vmID=vm_id)[0])["status"] != "WaitForLaunch" and st,
        120,
        "the launch",
    )
    assert stats["status"] == "Up", stats


def _tar_files(data: str) -> dict[str, bytes]:
    """The files of the TPM data (base64 of an xz tar)."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(data)), mode="r:xz") as tar:
        for member in tar:
            content = tar.extractfile(member) if member.isfile() else None
            if content is not None:
                files[member.name] = content.read()
    return files


def _swtpm_log(host: EmbeddedHost, name: str) -> str:
    root = Path(str(host.config.libvirt_uri).split("root=", 1)[1])
    log = root / "log" / "swtpm" / f"{name}-swtpm.log"
    return log.read_text(errors="replace") if log.exists() else ""


def _nvram_bytes(answer: dict[str, Any]) -> bytes:
    data: str = answer["_X_data"]
    assert data.startswith("=0=")
    return bz2.decompress(base64.b64decode(data[3:]))


def _nvram_changed(cli: Client, vm_id: str, template: bytes) -> dict[str, Any] | None:
    """The NVRAM data once it differs from the template (OVMF wrote a variable)."""
    answer: dict[str, Any] = cli.VM.getExternalData(vmID=vm_id, kind="nvram", forceUpdate=True)
    return answer if _nvram_bytes(answer) != template else None


def _nvram_in_use(cli: Client, vm_id: str) -> Path:
    root = ET.fromstring(cli.Host.dumpxmls(vmList=[vm_id])[vm_id])  # noqa: S314
    return Path((root.findtext("os/nvram") or "").strip())


def test_tpm_and_nvram_data_come_back_at_the_next_create(
    host: EmbeddedHost, cli: Client, short_dir: Path
) -> None:
    if not (OVMF / "OVMF_CODE_4M.fd").exists():
        pytest.fail("OVMF is not installed (Debian package ovmf)")
    vm_id, nvram = str(uuid.uuid4()), short_dir / "nvram" / "vm.fd"
    nvram.parent.mkdir()
    xml = uefi_tpm_xml(vm_id, nvram)
    name = f"xd-{vm_id[:8]}"
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    _up(cli, vm_id)
    assert "manufactur" in _swtpm_log(host, name).lower()  # a new TPM the first time
    manufactured = _swtpm_log(host, name).lower().count("manufactur")
    tpm = cli.VM.getExternalData(vmID=vm_id, kind="tpm", forceUpdate=True)
    template = (OVMF / "OVMF_VARS_4M.fd").read_bytes()
    nvram_data = wait_for(
        lambda: _nvram_changed(cli, vm_id, template), 120, "OVMF to write its variables"
    )
    first_state = _tar_files(tpm["_X_data"])[PERMALL]
    cli.VM.destroy(vmID=vm_id)
    swtpm = device_data.swtpm_dir(str(host.config.libvirt_uri), vm_id)
    wait_for(lambda: not swtpm.exists(), 10, "libvirt to drop the transient VM's TPM state")
    nvram.unlink()

    cli.VM.create(
        vmID=vm_id,
        vmParams={
            "xml": xml,
            "_X_tpmdata": tpm["_X_data"],
            "_X_nvramdata": nvram_data["_X_data"],
        },
    )

    _up(cli, vm_id)
    assert _swtpm_log(host, name).lower().count("manufactur") == manufactured  # not a new TPM
    again = cli.VM.getExternalData(vmID=vm_id, kind="tpm", forceUpdate=True)
    assert _tar_files(again["_X_data"])[PERMALL] == first_state
    assert _nvram_in_use(cli, vm_id) == nvram
    sent = _nvram_bytes(nvram_data)
    now = cli.VM.getExternalData(vmID=vm_id, kind="nvram", forceUpdate=True)
    assert _nvram_bytes(now) == sent  # the first run's variables, not the template
    cli.VM.destroy(vmID=vm_id)


def _tar_with_link() -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        link = tarfile.TarInfo("./tpm2/tpm2-00.permall")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("_X_tpmdata", 7),
        ("_X_tpmdata", "not base64 at all!"),
        ("_X_tpmdata", _tar_with_link()),
        ("_X_tpmdata", base64.b64encode(lzma.compress(b"not a tar")).decode("ascii")),
        ("_X_nvramdata", "=0=" + base64.b64encode(b"not bzip2").decode("ascii")),
        ("_X_nvramdata", "=7=AAAA"),
        ("_X_nvramdata", ["=0="]),
    ],
    ids=[
        "tpm-int",
        "tpm-not-base64",
        "tpm-link",
        "tpm-not-tar",
        "nvram-not-bzip2",
        "nvram-format",
        "nvram-list",
    ],
)
def test_bad_external_data_fails_the_create_and_makes_nothing(
    host: EmbeddedHost, cli: Client, short_dir: Path, param: str, value: Any
) -> None:
    vm_id, nvram = str(uuid.uuid4()), short_dir / "vm.fd"
    xml = uefi_tpm_xml(vm_id, nvram)
    with pytest.raises(ServerError) as refused:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, param: value})
    assert refused.value.code == EXTERNAL_DATA_FAILED
    assert vm_id not in cli.Host.getVMList()
    assert not nvram.exists()
    assert not device_data.swtpm_dir(str(host.config.libvirt_uri), vm_id).exists()
