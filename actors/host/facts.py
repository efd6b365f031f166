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
    """Return the host's id: DMI's product UUID, else one made once and kept.

    VDSM keeps its own in /etc/vdsm/vdsm.id when DMI has none; ours lives in the
    state directory.
    """
    try:
        dmi = Path("/sys/class/dmi/id/product_uuid").read_text().strip()
    except OSError:
        dmi = ""
    if dmi:
        return dmi.lower()
    kept = state_dir / "host.id"
    try:
        return kept.read_text().strip()
    except FileNotFoundError:
        made = str(uuid.uuid4())
        kept.parent.mkdir(parents=True, exist_ok=True)
        temporary = kept.with_suffix(".tmp")
        temporary.write_text(made + "\n")
        temporary.replace(kept)
        return made
