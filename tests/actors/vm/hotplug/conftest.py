"""A whole host with one storage domain, and a tiny Linux guest on it, for the hotplug tests.

The host is embedded (qemu:///embed), its data center made the Engine's way
(harness.engine); the guest (the VM tests' `tiny_guest`: a Debian kernel and an
initramfs running qemu-ga) boots under TCG from the Engine's domain XML with its
system disk on the domain and an empty IDE CD-ROM. What the guest itself sees is read
through qemu-ga's guest-exec.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from actors.vm.conftest import EngineDisk, Kernel, TinyGuest, engine_domain_xml

from harness.engine import COW, DataCenter, MiB, local_data_center, new_id, succeeded
from harness.guests import StatusEvents
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

OVIRT_VM = "http://ovirt.org/vm/1.0"
CDROM = (
    '<disk type="file" device="cdrom"><driver name="qemu" type="raw" error_policy="report"/>'
    '<source file="" startupPolicy="optional"/><target dev="hdc" bus="ide"/><readonly/>'
    '<alias name="ua-cdrom-0000"/></disk>'
)


MOVABLE_MEMORY = "memhp_default_state=online_movable"
"""The guest kernel onlines a plugged DIMM into ZONE_MOVABLE, so it can give it back.
Measured: with no `memhp_default_state` the tiny guest (no udev) leaves a DIMM offline;
with `=online` it lands in ZONE_NORMAL and the guest rejects its unplug (libvirt:
"unplug of device was rejected by the guest")."""
UNMOVABLE_MEMORY = "memhp_default_state=online"


def boot_with(tiny_guest: TinyGuest, memory: str = MOVABLE_MEMORY) -> Kernel:
    """The tiny guest's boot, its hotplugged memory onlined as `memory` says."""
    boot = tiny_guest.boot()
    return Kernel(kernel=boot.kernel, initrd=boot.initrd, cmdline=f"{boot.cmdline} {memory}")


def error_of(call: Any, *args: Any, **kwargs: Any) -> ServerError:
    """The ServerError `call` answers (fails the test if it succeeds)."""
    with pytest.raises(ServerError) as raised:
        call(*args, **kwargs)
    return raised.value


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture(scope="module")
def cli(host: EmbeddedHost) -> Iterator[Client]:
    with host.client(timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def dc(cli: Client, tmp_path_factory: pytest.TempPathFactory) -> DataCenter:
    center = local_data_center(tmp_path_factory.mktemp("sd") / "local")
    center.setup(cli)
    return center


@dataclass
class Guest:
    """A running VM of the host, and what the test reads of it."""

    vm_id: str
    cli: Client
    host: EmbeddedHost
    dc: DataCenter
    image: str
    volume: str

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.cli.VM.getStats(vmID=self.vm_id)[0]
        return answer

    def xml(self) -> str:
        answer: str = self.cli.Host.dumpxmls(vmList=[self.vm_id])[self.vm_id]
        return answer

    def libvirt_xml(self) -> str:
        xml: str = self.domain().XMLDesc(0)
        return xml

    def domain(self) -> Any:
        return self.host.tree.connection().lookupByUUIDString(self.vm_id)

    def run(self, command: str, timeout: float = 30) -> tuple[int, str]:
        """Run `command` with sh in the guest (qemu-ga's guest-exec); its exit code and output."""
        import base64  # noqa: PLC0415

        import libvirt_qemu  # type: ignore[import-untyped]  # noqa: PLC0415

        domain = self.domain()
        request = {
            "execute": "guest-exec",
            "arguments": {"path": "/bin/sh", "arg": ["-c", command], "capture-output": True},
        }
        pid = json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps(request), 10, 0))
        status = {"execute": "guest-exec-status", "arguments": {"pid": pid["return"]["pid"]}}

        def exited() -> dict[str, Any] | None:
            answer = json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps(status), 10, 0))
            return answer["return"] if answer["return"]["exited"] else None

        done = wait_for(exited, timeout, f"guest-exec {command!r}", step=0.1)
        output = base64.b64decode(done.get("out-data", "")).decode()
        return int(done.get("exitcode", -1)), output

    def sees(self, path: str, timeout: float = 60) -> None:
        """Wait until `path` exists in the guest."""
        wait_for(lambda: self.run(f"test -e {path}")[0] == 0, timeout, f"{path} in the guest")

    def lost(self, path: str) -> bool:
        return self.run(f"test -e {path}")[0] != 0


def create_volume(cli: Client, dc: DataCenter, *, size: int, fmt: int = COW) -> tuple[str, str]:
    """A new image with one volume on the domain; its (image, volume) ids."""
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, size=size, fmt=fmt))
    return img, vol


def start_guest(
    cli: Client,
    host: EmbeddedHost,
    dc: DataCenter,
    tiny_guest: TinyGuest,
    name: str,
    memory: str = MOVABLE_MEMORY,
) -> Guest:
    """Start the tiny guest from the Engine's XML, its disk on `dc`; wait for its agent.

    `memory` is its kernel's `memhp_default_state` (how it onlines hotplugged DIMMs).
    """
    img, vol = create_volume(cli, dc, size=16 * MiB)
    vm_id = str(uuid.uuid4())
    guess = Path(f"/rhev/data-center/{dc.sp}/{dc.sd}/images/{img}/{vol}")
    disk = EngineDisk(path=guess, pool_id=dc.sp, domain_id=dc.sd, image_id=img, volume_id=vol)
    xml = engine_domain_xml(
        vm_id=vm_id,
        name=name,
        domain_type="qemu",  # TCG: this host's nested KVM hangs Linux guests (ENVIRONMENT.md)
        disk=disk,
        kernel=boot_with(tiny_guest, memory),
        memory_mib=256,
        spice=False,
    ).replace("</devices>", CDROM + "</devices>")
    events = StatusEvents(cli)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    events.until(vm_id, "Up", timeout=60)
    guest = Guest(vm_id=vm_id, cli=cli, host=host, dc=dc, image=img, volume=vol)
    deadline = time.monotonic() + 120

    def agent_answers() -> bool:
        try:
            return guest.run("true")[0] == 0
        except Exception:  # the agent is not up yet
            if time.monotonic() > deadline:
                raise
            return False

    wait_for(agent_answers, 120, "the guest's agent", step=0.5)
    return guest


@pytest.fixture(scope="module")
def guest(
    cli: Client, host: EmbeddedHost, dc: DataCenter, tiny_guest: TinyGuest
) -> Iterator[Guest]:
    running = start_guest(cli, host, dc, tiny_guest, "hotplug-tiny")
    yield running
    cli.VM.destroy(vmID=running.vm_id)
