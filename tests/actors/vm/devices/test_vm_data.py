"""VM.getExternalData (NVRAM), VM.screenshot, VM.setDestroyOnReboot, shutdown by the agent.

- A UEFI guest (OVMF, whose variables libvirt copies into the VM's NVRAM file)
  answers getExternalData "nvram" as VDSM encodes it (`=0=` + base64 of bzip2), with
  the SHA-256 of that text as its hash, also in VM stats (`nvramHash`).
- A screenshot is the guest's console as a PNG.
- The tiny Linux guest with qemu-ga (TCG) shuts down through its agent: it has no
  ACPI daemon, so nothing else could have done it. After setDestroyOnReboot, a
  reboot the guest's agent carries out ends the VM: Down, "Destroyed on reboot".
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import io
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.waiting import wait_for
from hostvisor.actors.actor import Kill
from hostvisor.actors.vm.addresses import vm_path
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

NO_VM, VM_DOWN, EXTERNAL_DATA = 1, 6, 89
WIRE = -32602  # a missing param or a wrong JSON type: as every verb
DESTROYED_ON_REBOOT = 13
OVMF = Path("/usr/share/OVMF")


def uefi_xml(vm_id: str, nvram: Path, domain_type: str) -> str:
    """A UEFI guest with the Engine's metadata and an NVRAM file (no disk)."""
    return f"""<domain type='{domain_type}'>
  <name>uefi-{vm_id[:8]}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>128</memory>
  <metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
    <ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion></ovirt-vm:vm></metadata>
  <vcpu>1</vcpu>
  <features><acpi/></features>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>{OVMF}/OVMF_CODE_4M.fd</loader>
    <nvram template='{OVMF}/OVMF_VARS_4M.fd'>{nvram}</nvram></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
    <graphics type='vnc' port='-1' autoport='yes'><listen type='address' address='127.0.0.1'/>
    </graphics><video><model type='vga'/></video></devices>
</domain>"""


def _code(call: Any) -> int:
    with pytest.raises(ServerError) as caught:
        call()
    return caught.value.code


def test_the_nvram_comes_with_its_hash_as_vdsm_encodes_it(
    host: EmbeddedHost, cli: Client, short_dir: Path
):
    if not (OVMF / "OVMF_CODE_4M.fd").exists():
        pytest.fail("OVMF is not installed (Debian package ovmf)")
    vm_id, nvram = str(uuid.uuid4()), short_dir / "uefi_VARS.fd"
    # TCG: OVMF under this host's nested KVM sometimes stops on a KVM internal error.
    cli.VM.create(vmID=vm_id, vmParams={"xml": uefi_xml(vm_id, nvram, "qemu")})
    launched = wait_for(
        lambda: (st := cli.VM.getStats(vmID=vm_id)[0])["status"] != "WaitForLaunch" and st,
        120,
        "the launch",
    )
    assert launched["status"] == "Up", launched

    answer = cli.VM.getExternalData(vmID=vm_id, kind="nvram", forceUpdate=True)

    data = answer["_X_data"]
    assert data.startswith("=0=")
    decoded = bz2.decompress(base64.b64decode(data[3:]))
    assert len(decoded) == (OVMF / "OVMF_VARS_4M.fd").stat().st_size
    assert answer["hash"] == hashlib.sha256(data.encode("ascii")).hexdigest()
    # The caller has this data already: only the hash comes.
    again = cli.VM.getExternalData(
        vmID=vm_id, kind="nvram", lastHash=answer["hash"], forceUpdate=False
    )
    assert again == {"hash": answer["hash"]}

    get = cli.VM.getExternalData
    cases = {
        "no TPM": (EXTERNAL_DATA, lambda: get(vmID=vm_id, kind="tpm")),
        "unknown kind": (EXTERNAL_DATA, lambda: get(vmID=vm_id, kind="bios")),
        "unknown VM": (NO_VM, lambda: get(vmID=str(uuid.uuid4()), kind="nvram")),
        "no kind": (WIRE, lambda: get(vmID=vm_id)),
        "kind not a string": (WIRE, lambda: get(vmID=vm_id, kind=1)),
        "forceUpdate not a boolean": (
            WIRE,
            lambda: get(vmID=vm_id, kind="nvram", forceUpdate="y"),
        ),
    }
    codes = {name: _code(call) for name, (_expected, call) in cases.items()}
    assert codes == {name: expected for name, (expected, _call) in cases.items()}

    # A running VM's stats carry the hash of the data last read (VDSM's nvramHash).
    assert cli.VM.getStats(vmID=vm_id)[0]["nvramHash"] == answer["hash"]

    # The Engine saves the data of a VM that went Down, before it destroys it.
    host.tree.connection().lookupByUUIDString(vm_id).destroy()
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Down", 30, "Down")
    last = cli.VM.getExternalData(vmID=vm_id, kind="nvram")
    assert last["hash"] == hashlib.sha256(last["_X_data"].encode("ascii")).hexdigest()
    assert bz2.decompress(base64.b64decode(last["_X_data"][3:]))  # the file, as it is now


def test_the_tpm_state_comes_as_vdsm_archives_it(cli: Client, halting_vm: Any, embed_root: Path):
    if shutil.which("swtpm") is None or shutil.which("swtpm_setup") is None:
        pytest.fail("swtpm is not installed (Debian packages swtpm, swtpm-tools)")
    # libvirt runs swtpm_setup as qemu.conf's swtpm_user (default "tss"), which must
    # reach the state under the embed root (made 0700 by mkdtemp).
    if "swtpm_user" not in (embed_root / "etc" / "qemu.conf").read_text():
        embed_root.chmod(0o755)
    tpm = '<tpm model="tpm-crb"><backend type="emulator" version="2.0"/></tpm>'
    vm_id, _disk = halting_vm(nic=tpm, spice=False)

    answer = cli.VM.getExternalData(vmID=vm_id, kind="tpm")

    data = answer["_X_data"]
    assert answer["hash"] == hashlib.sha256(data.encode("ascii")).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(data)), mode="r:xz") as archive:
        names = archive.getnames()
    assert "./tpm2/tpm2-00.permall" in names, names  # swtpm's state, as `tar --directory`
    assert cli.VM.getStats(vmID=vm_id)[0]["tpmHash"] == answer["hash"]


def test_a_screenshot_is_the_console_as_png(host: EmbeddedHost, cli: Client, halting_vm: Any):
    vm_id, _disk = halting_vm(spice=False)

    shot = cli.VM.screenshot(vmID=vm_id)

    assert (shot["encoding"], shot["mime_type"]) == ("base64", "image/png")
    assert base64.b64decode(shot["data"]).startswith(b"\x89PNG\r\n\x1a\n")

    assert _code(lambda: cli.VM.screenshot(vmID=str(uuid.uuid4()))) == NO_VM
    assert _code(cli.VM.screenshot) == WIRE
    host.tree.connection().lookupByUUIDString(vm_id).destroy()
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Down", 30, "Down")
    assert _code(lambda: cli.VM.screenshot(vmID=vm_id)) == VM_DOWN
    assert _code(lambda: cli.VM.setDestroyOnReboot(vmID=vm_id)) == VM_DOWN


def test_shutdown_goes_through_the_guest_agent(cli: Client, agent_vm: Any):
    vm_id = agent_vm()

    cli.VM.shutdown(vmID=vm_id, timeout=600)  # forced only after 10 min: the agent did it

    down = wait_for(
        lambda: (s := cli.VM.getStats(vmID=vm_id)[0])["status"] == "Down" and s, 60, "Down"
    )
    assert down["exitCode"] == 0, down


def test_a_vm_set_to_be_destroyed_on_reboot_is_destroyed_when_it_reboots(
    cli: Client, agent_vm: Any
):
    vm_id = agent_vm()
    assert _code(lambda: cli.VM.setDestroyOnReboot(vmID=str(uuid.uuid4()))) == NO_VM
    assert _code(cli.VM.setDestroyOnReboot) == WIRE
    assert _code(lambda: cli.VM.setDestroyOnReboot(vmID=5)) == WIRE

    assert cli.VM.setDestroyOnReboot(vmID=vm_id) is True
    assert "destroy_on_reboot" in cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"

    cli.VM.shutdown(vmID=vm_id, reboot=True)  # the agent reboots the guest

    down = wait_for(
        lambda: (s := cli.VM.getStats(vmID=vm_id)[0])["status"] == "Down" and s, 60, "Down"
    )
    assert down["exitReason"] == DESTROYED_ON_REBOOT, down


def test_destroy_on_reboot_outlives_a_restart_of_the_vms_actor(
    host: EmbeddedHost, cli: Client, agent_vm: Any
):
    vm_id = agent_vm()
    cli.VM.setDestroyOnReboot(vmID=vm_id)
    registry = host.tree.registry
    old = registry.get(vm_path(vm_id))
    assert old is not None

    old.tell(Kill("a drill: the VM's actor crashes"))  # its guest runs on
    wait_for(
        lambda: (
            (ref := registry.get(vm_path(vm_id))) is not None and ref is not old and ref.is_alive()
        ),
        30,
        "the VM's next actor",
    )
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "Up again")
    cli.VM.shutdown(vmID=vm_id, reboot=True)

    down = wait_for(
        lambda: (s := cli.VM.getStats(vmID=vm_id)[0])["status"] == "Down" and s, 60, "Down"
    )
    assert down["exitReason"] == DESTROYED_ON_REBOOT, down
