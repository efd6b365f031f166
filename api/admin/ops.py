"""What the admin channel answers: snapshots, an actor's detail, and the drills.

Each operation is a plain function of the registry and the runtime, run on the
admin channel's connection thread (never on an actor's turn). Reading is lock-free
on the actors' side: a snapshot reads each actor's `ActorStats` and mailbox size
(`Registry.snapshot`), which no actor waits for. Only two things send a message:
- the detail of a VM asks its actor for its frozen entry, with a short deadline
  (the VM answers it from its model; a VM busy past the deadline is shown as such);
- the drills: `kill` tells the actor `Kill` (it crashes, its supervisor restarts it
  within its budget); `restart` asks the actor's supervisor to terminate and start
  the child again (a clean restart: no budget spent).

Every result is JSON-ready (dicts, lists, str, numbers, None).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import pykka

from hostvisor.actors.actor import LATENCY_BOUNDS, CallbackFuture, Kill
from hostvisor.actors.container.addresses import CONTAINER_GUESTS
from hostvisor.actors.errors import Conflict, HostvisorError, InvalidArgument, NotFound
from hostvisor.actors.guest.entry import VmEntry
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.vm.addresses import VM_GUESTS
from hostvisor.actors.vm.proxy import VmProxy
from hostvisor.supervision.registry import ROOT, ActorStatus, Registry
from hostvisor.supervision.spec import Restart
from hostvisor.supervision.supervisor import SupervisorHandle

DETAIL_TIMEOUT = 0.5
"""Seconds a VM actor has to hand its entry to the detail pane."""
DRILL_TIMEOUT = 10.0
"""Seconds a supervisor has to terminate and restart a child."""


def status_json(status: ActorStatus) -> dict[str, Any]:
    """One actor's status as JSON (latencies in seconds; None before any message).

    The latency buckets are left out (a thousand VM actors' would triple a
    snapshot); `detail` has them.
    """
    restarts = status.restarts
    return {
        "path": status.path,
        "actor_class": status.actor_class,
        "state": status.state,
        "parent": status.parent,
        "children": list(status.children),
        "mailbox_depth": status.mailbox_depth,
        "messages_handled": status.messages_handled,
        "skipped": status.skipped,
        "last_handling_seconds": status.last_handling_seconds,
        "busy_seconds": status.busy_seconds,
        "busy_total_seconds": status.busy_total_seconds,
        "latency_p50": status.latency_p50,
        "latency_p99": status.latency_p99,
        "restarts": restarts.count,
        "last_restart_reason": restarts.last_reason,
        "last_restart_at": restarts.last_at,
    }


def snapshot(registry: Registry, runtime: Runtime) -> dict[str, Any]:
    """The whole tree, the scheduler's and the work pool's statistics (never blocks)."""
    return {
        "time": time.time(),
        "latency_bounds": list(LATENCY_BOUNDS),
        "actors": [status_json(status) for status in registry.snapshot()],
        "scheduler": asdict(runtime.scheduler.statistics()),
        "work": asdict(runtime.work.statistics()),
    }


def vm_id_of(path: str) -> str | None:
    """The VM id in a VM or container VM actor's path, else None."""
    for guests in (VM_GUESTS, CONTAINER_GUESTS):
        prefix = f"{guests}/"
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return path[len(prefix) :]
    return None


def detail(registry: Registry, path: str) -> dict[str, Any]:
    """One actor's status; for a VM, also what its entry says (asked, 0.5 s deadline).

    Blocks the calling thread for at most `DETAIL_TIMEOUT` (VM actors only).

    Raises:
        NotFound: nothing lives at `path`.
    """
    status = registry.status(path)
    result = status_json(status)
    result["latency_counts"] = list(status.latency_counts)
    vm_id = vm_id_of(path)
    if vm_id is None:
        return result
    result["vm_id"] = vm_id
    future = VmProxy(registry.lookup(path)).entry()
    try:
        entry = future.get(timeout=DETAIL_TIMEOUT)
    except pykka.Timeout:
        if isinstance(future, CallbackFuture):
            future.abandon()  # dropped unhandled if it still waits in the mailbox
        result["vm"] = {"error": f"busy: no answer in {DETAIL_TIMEOUT} s"}
        return result
    except (HostvisorError, pykka.ActorDeadError) as error:
        result["vm"] = {"error": f"not answering: {error}"}
        return result
    result["vm"] = _vm_detail(entry) if isinstance(entry, VmEntry) else {"error": "no entry"}
    return result


def _vm_detail(entry: VmEntry) -> dict[str, Any]:
    """Status, the operation in flight and the last sample's age, from a VM's entry."""
    now = time.monotonic()
    busy_since = entry.busy_since
    figures = entry.figures
    sampled_at = getattr(entry, "sampled_at", None)  # not every entry exposes it
    return {
        "status": entry.reported_status(now).value,
        "operation_in_flight_seconds": None if busy_since is None else now - busy_since,
        "monitor_response": entry.monitor_response,
        "last_sample_age_seconds": None if sampled_at is None else now - float(sampled_at),
        "sampled": bool(figures),
        "cpu_usage": figures.get("cpuUsage"),
    }


def kill(registry: Registry, path: str, reason: str = "killed from the console") -> dict[str, Any]:
    """Tell the actor at `path` to crash (OTP's kill); its supervisor restarts it.

    Never blocks. Raises NotFound when nothing lives there; refuses the root (its
    death is the agent's).
    """
    if path == ROOT:
        raise InvalidArgument(path=path, reason="the root is not killed from the console")
    registry.lookup(path).tell(Kill(reason))
    return {"path": path, "killed": True}


def restart(registry: Registry, path: str) -> dict[str, Any]:
    """Terminate the child at `path` and start it again through its supervisor.

    Blocks the calling thread for up to `DRILL_TIMEOUT` per step.

    Raises:
        NotFound: nothing lives at `path`.
        InvalidArgument: `path` is the root.
        Conflict: a temporary child (it would not come back).
    """
    status = registry.status(path)
    if status.parent is None:
        raise InvalidArgument(path=path, reason="the root is not restarted from the console")
    parent = SupervisorHandle(registry.lookup(status.parent)).with_timeout(DRILL_TIMEOUT)
    child_id = path.rsplit("/", 1)[-1]
    info = next((c for c in parent.which_children() if c.id == child_id), None)
    if info is None:
        raise NotFound(actor=path)
    if info.restart is Restart.TEMPORARY:
        raise Conflict(actor=path, reason="a temporary child is not restarted")
    parent.terminate_child(child_id)
    new_path = parent.restart_child(child_id)
    return {"path": new_path, "restarted": True}
