"""HostActor: the machine this agent runs on: its facts, capabilities and stats.

Static facts are read once in `on_start`. Statistics are sampled every
`sample_interval` seconds (driven by a ticker, never by a sleep in the mailbox
thread), and `stats()` answers from the last two samples, as VDSM's host monitor
does. Capabilities read libvirt through the hypervisor's connection, which the
actor gets from `connection()`, a sideways ask into the infra branch (which
never asks anyone back).
"""

from __future__ import annotations

import logging
import platform
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hostvisor.actors.actor import Actor
from hostvisor.actors.host.caps import capabilities
from hostvisor.actors.host.hardware import hardware_info
from hostvisor.actors.host.netinfo import interface_stats, network_caps
from hostvisor.actors.host.stats import HostStatsSampler

log = logging.getLogger(__name__)

FIRST_SAMPLE_DELAY = 1.0
SOFTWARE_VERSION = "4.50.7"
"""The VDSM API level Hostvisor speaks (reference/vdsm-wire.md, API version 4.50.7)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    """Facts that do not change while the agent runs."""

    hostname: str
    kernel: str
    cpu_count: int
    memory_bytes: int
    boot_time: float
    host_uuid: str


def _clean() -> bool:
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class HostNetwork:
    """How the host actor reads the networks of the namespace the host manages.

    Attributes:
        caps: the network part of getCapabilities (blocking, bounded by a timeout).
        stats: the network part of getStats: `network`, `rxDropped`, `txDropped`.
        dirty: whether the running network config is not yet marked safe.
    """

    caps: Callable[[], dict[str, Any]] = network_caps
    stats: Callable[[], dict[str, Any]] = interface_stats
    dirty: Callable[[], bool] = _clean


@dataclass(frozen=True, slots=True)
class Sample:
    """Tell (from the ticker): take a statistics sample now."""


class HostActor(Actor):
    """Owns the host's facts and statistics. Methods are idempotent.

    Args:
        state_dir: where the host's persistent id lives when DMI has none.
        connection: returns the open libvirt connection (may raise Unavailable).
        containers: whether the docker engine answers (for getCapabilities).
        sample_interval: seconds between statistics samples.
        vm_counts: returns VM counters for getStats (vmCount, vmActive, ...).
        network: reads the managed namespace's networks (default: this process's own).
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        connection: Callable[[], Any],
        containers: Callable[[], bool] = lambda: False,
        sample_interval: float = 15.0,
        vm_counts: Callable[[], Mapping[str, int]] = dict,
        network: HostNetwork | None = None,
    ) -> None:
        """Remember collaborators; read the machine in `on_start`."""
        super().__init__()
        self._state_dir = state_dir
        self._connection = connection
        self._containers = containers
        self._sample_interval = sample_interval
        self._vm_counts = vm_counts
        self._facts: HostFacts | None = None
        self._started_at = 0.0
        self._network = network or HostNetwork()
        self._sampler = HostStatsSampler(state_dir=state_dir, network_stats=self._network.stats)

    def on_start(self) -> None:
        """Read the host's facts, take the first sample, start the ticker."""
        self._started_at = time.monotonic()
        self._facts = HostFacts(
            hostname=socket.gethostname(),
            kernel=platform.release(),
            cpu_count=psutil.cpu_count() or 1,
            memory_bytes=psutil.virtual_memory().total,
            boot_time=psutil.boot_time(),
            host_uuid=host_uuid(self._state_dir),
        )
        self._sampler.sample()
        # A second sample soon after start, so that rates exist within a second.
        first = min(self._sample_interval, FIRST_SAMPLE_DELAY)
        self.tick_every(self._sample_interval, Sample(), first=first)

    def on_receive(self, message: Any) -> Any:
        """Handle `Sample`."""
        if isinstance(message, Sample):
            self._sampler.sample()
            return None
        return super().on_receive(message)

    def facts(self) -> HostFacts:
        """Return the host's facts."""
        assert self._facts is not None  # noqa: S101 - set by on_start before any message
        return self._facts

    def uptime(self) -> float:
        """Return seconds since this actor started (the agent's uptime, near enough)."""
        return time.monotonic() - self._started_at

    def capabilities(self) -> dict[str, Any]:
        """Return Host.getCapabilities' `info` (blocking: libvirt, dpkg; ~100 ms)."""
        return capabilities(
            self._connection(),
            host_uuid=self.facts().host_uuid,
            software_version=SOFTWARE_VERSION,
            containers=self._containers(),
            network=self._network.caps(),
        )

    def stats(self) -> dict[str, Any]:
        """Return Host.getStats' `info` from the last two samples (fast)."""
        extra: dict[str, Any] = {
            "elapsedTime": int(self.uptime()),
            "netConfigDirty": str(self._network.dirty()),
            **self._vm_counts(),
        }
        return self._sampler.stats(extra)

    def hardware_info(self) -> dict[str, str]:
        """Return Host.getHardwareInfo's result (DMI; empty strings where unreadable)."""
        return hardware_info()


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
