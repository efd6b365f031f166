"""The host's facts: what does not change while the agent runs, read once at start."""

from __future__ import annotations

import platform
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    """Facts that do not change while the agent runs."""

    hostname: str
    kernel: str
    cpu_count: int
    memory_bytes: int
    boot_time: float
    host_uuid: str


def read_facts(state_dir: Path) -> HostFacts:
    """Read the host's facts (blocking briefly: /proc, DMI, the kept id in `state_dir`)."""
    return HostFacts(
        hostname=socket.gethostname(),
        kernel=platform.release(),
        cpu_count=psutil.cpu_count() or 1,
        memory_bytes=psutil.virtual_memory().total,
        boot_time=psutil.boot_time(),
        host_uuid=host_uuid(state_dir),
    )


def host_uuid(state_dir: Path) -> str:
    """Return the host's id: the one kept in the state directory, else DMI's, else a new one.

    As VDSM, whose /etc/vdsm/vdsm.id wins over DMI's product UUID: the kept id lets two
    agents on one machine (test hosts in namespaces, nested setups) be two hosts to the
    Engine. Without one, DMI's UUID is used as is (not kept, so a board swap shows); a
    machine with neither gets a new id, made once and kept.
    """
    kept = state_dir / "host.id"
    try:
        chosen = kept.read_text().strip()
    except FileNotFoundError:
        chosen = ""
    if chosen:
        return chosen
    try:
        dmi = Path("/sys/class/dmi/id/product_uuid").read_text().strip()
    except OSError:
        dmi = ""
    if dmi:
        return dmi.lower()
    made = str(uuid.uuid4())
    kept.parent.mkdir(parents=True, exist_ok=True)
    temporary = kept.with_suffix(".tmp")
    temporary.write_text(made + "\n")
    temporary.replace(kept)
    return made
