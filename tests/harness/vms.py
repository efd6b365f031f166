"""VMs as the Engine sends them, and waiting on them with deadlines (never bare sleeps)."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from harness.guests import domain_xml

OVIRT_METADATA = (
    "<metadata><ovirt-vm:vm xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>"
    "{extra}</ovirt-vm:vm></metadata>"
)


def ovirt_guest_xml(
    *, name: str, vm_id: str, disk: Path, domain_type: str, launch_paused: bool = False
) -> str:
    """A real guest's domain XML carrying the Engine's `ovirt-vm` metadata."""
    extra = "<ovirt-vm:launchPaused>true</ovirt-vm:launchPaused>" if launch_paused else ""
    xml = domain_xml(name=name, uuid=vm_id, disk=disk, domain_type=domain_type)
    return xml.replace("<vcpu>", OVIRT_METADATA.format(extra=extra) + "\n  <vcpu>", 1)


def td_domain_xml(
    *,
    name: str,
    vm_id: str | None = None,
    paused: bool = False,
    ovirt: bool = True,
    start_time: float | None = None,
) -> str:
    """A domain of libvirt's test driver, with `ovirt-vm` metadata unless `ovirt` is false.

    `paused` sets the test driver's run state (only read from a test:///FILE node);
    `start_time` (epoch seconds) is the metadata's startTime, as a launched VM has.
    """
    runstate = "<test:runstate>3</test:runstate>" if paused else ""
    started = (
        "" if start_time is None else f"<ovirt-vm:startTime>{start_time:.3f}</ovirt-vm:startTime>"
    )
    return (
        "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
        f"<name>{name}</name><uuid>{vm_id or uuid.uuid4()}</uuid>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        f"{OVIRT_METADATA.format(extra=started) if ovirt else ''}"
        f"<os><type>hvm</type></os>{runstate}</domain>"
    )


def write_test_node(path: Path, domains: Iterable[str]) -> str:
    """Write a test-driver node file holding `domains`; return its URI.

    Every connection opened on the URI gets a fresh driver with these domains running
    (or paused), so a restarted host sees them again.
    """
    path.write_text("<node>\n" + "\n".join(domains) + "\n</node>\n")
    return f"test://{path}"


def qemu_pid(embed_root: Path, name: str, vm_id: str) -> int:
    """The pid of guest `name`'s QEMU, from the embedded driver's pid file.

    Checked against the process's command line, which carries the VM's UUID.
    """
    pid = int((embed_root / "run" / "qemu" / f"{name}.pid").read_text().strip())
    assert qemu_alive(pid, vm_id), f"pid {pid} is not the QEMU of {vm_id}"
    return pid


def qemu_alive(pid: int, vm_id: str) -> bool:
    """Whether `pid` is a live (not zombie) QEMU whose command line names `vm_id`."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and vm_id in " ".join(process.cmdline())
    except psutil.Error:
        return False


def kill_qemu(pid: int, vm_id: str) -> None:
    """SIGKILL a QEMU this test started (checked by its command line), and reap-wait."""
    if not qemu_alive(pid, vm_id):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(timeout=10)


def statuses(cli: Any) -> dict[str, str]:
    """{vmId: status} from Host.getVMList."""
    return {vm["vmId"]: vm["status"] for vm in cli.Host.getVMList(onlyUUID=False)}
