"""VmEntry: what a guest reports, frozen at its actor's last change.

A guest's actor (VmActor, ContainerActor) makes a new entry whenever its status,
samples or operations change, and posts it to the board (`board.VmBoard`). Both
the actor and the board answer from entries, through the same functions, so
`VM.getStats` and `Host.getAllVmStats` always agree. What depends on the clock
("Powering up", elapsedTime, an operation that has become overdue) is computed
when the entry is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.guest.status import VmStatus


@dataclass(frozen=True, slots=True)
class VmEntry:
    """One VM's reportable state; never mutated (its mappings are not shared for writing)."""

    vm_id: str
    status: VmStatus
    """The status the actor holds (Up, not "Powering up": that is read off the clock)."""
    status_time: int
    info: Mapping[str, Any]
    """Fields of VM.getInfo besides status and statusTime (exit fields when Down)."""
    figures: Mapping[str, Any] = field(default_factory=dict)
    """Fields computed from the last two samples (cpuUsage, disks, …)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Fields of a running VM's stats besides the figures (pauseCode, kvmEnable, …)."""
    started: float | None = None
    """When the guest started (monotonic); None before launch."""
    powering_up: float = 60.0
    monitor_response: int = 0
    """-1 when the last bulk sample had nothing for this VM."""
    busy_since: float | None = None
    """Since when the oldest operation in flight has run (monotonic); None when idle."""
    operation_timeout: float = 30.0
    xml: str = ""
    """The domain XML as libvirt runs it (as the VM was created, before launch)."""

    def reported_status(self, now: float) -> VmStatus:
        """The status as clients see it: "Powering up" for the first seconds of Up."""
        started = self.started
        if self.status is VmStatus.UP and started is not None and now - started < self.powering_up:
            return VmStatus.POWERING_UP
        return self.status

    def brief(self, now: float) -> dict[str, Any]:
        """`{vmId, status}` (getVMList with onlyUUID=false)."""
        return {"vmId": self.vm_id, "status": self.reported_status(now).value}

    def info_fields(self, now: float) -> dict[str, Any]:
        """VM.getInfo: the status fields, for any status."""
        return {
            "vmId": self.vm_id,
            "status": self.reported_status(now).value,
            "statusTime": str(self.status_time),
            **self.info,
        }

    def stats(self, now: float) -> dict[str, Any]:
        """VM.getStats' entry: the status fields plus the last sampled figures."""
        stats = self.info_fields(now)
        if self.status is VmStatus.DOWN:
            return stats
        stats.update(self.figures)
        stats.update(self.extra)
        overdue = self.busy_since is not None and now - self.busy_since > self.operation_timeout
        stats["monitorResponse"] = "-1" if overdue else str(self.monitor_response)
        started = self.started
        stats["elapsedTime"] = str(int(now - started)) if started is not None else "0"
        return stats

    def definition(self, now: float) -> dict[str, Any]:
        """Host.getVMFullList's entry: the status fields and the domain XML."""
        return {**self.info_fields(now), "xml": self.xml}


RENDERINGS = {
    "brief": VmEntry.brief,
    "info": VmEntry.info_fields,
    "stats": VmEntry.stats,
    "definition": VmEntry.definition,
}
"""How each kind of answer is made from an entry."""
