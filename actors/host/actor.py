"""HostActor: the facts of the machine this agent runs on.

It answers from what it read in `on_start` plus cheap psutil calls; the VDSM
capability and statistics verbs build on it (reference/vdsm-wire.md §3.2).
"""

from __future__ import annotations

import platform
import socket
import time
from dataclasses import dataclass

import psutil

from hostvisor.actors.actor import Actor


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    """Facts that do not change while the agent runs."""

    hostname: str
    kernel: str
    cpu_count: int
    memory_bytes: int
    boot_time: float


class HostActor(Actor):
    """Owns the host's own facts. Every method is non-blocking and idempotent."""

    def __init__(self) -> None:
        """Read nothing yet; facts are read in `on_start`."""
        super().__init__()
        self._facts: HostFacts | None = None
        self._started_at = 0.0

    def on_start(self) -> None:
        """Read the host's facts (fast, local)."""
        self._started_at = time.monotonic()
        self._facts = HostFacts(
            hostname=socket.gethostname(),
            kernel=platform.release(),
            cpu_count=psutil.cpu_count() or 1,
            memory_bytes=psutil.virtual_memory().total,
            boot_time=psutil.boot_time(),
        )

    def facts(self) -> HostFacts:
        """Return the host's facts."""
        assert self._facts is not None  # noqa: S101 - set by on_start before any message
        return self._facts

    def uptime(self) -> float:
        """Return seconds since this actor started (the agent's uptime, near enough)."""
        return time.monotonic() - self._started_at
