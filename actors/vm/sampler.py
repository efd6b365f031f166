"""VmStatsSampler: one bulk libvirt stats call per interval, for every VM.

The call runs on the work facility (it takes ~12 ms per running guest, much more
while guests boot, and can hang on a stuck QEMU), never on this actor's or the
API's thread. When it returns, each VmActor is told its record; a VM missing
from the sample is told None and reports monitorResponse -1.

A call still running at the next tick is not doubled. If it has been running for
`stuck_after` seconds (default: half an interval, so "still running at the next
tick") it is marked stuck, and from then on the sampler does what VDSM's
VMBulkstatsMonitor does: each tick it checks which domains are ready for commands
(`check_responsive`), skips the others for `skip_for` seconds (VDSM: 40 s at its
15 s interval) and samples the ready ones with one `domainListGetStats` call on
another worker. Skipped VMs are told None, so the stuck VM reports monitorResponse
-1 while every other VM's stats keep flowing. The fast path (one
`getAllDomainStats`) comes back once no call is stuck and no VM is skipped. At most
`max_stuck` calls may hang at once (each holds a worker); past that, ticks are
skipped. A stuck call that
returns at last is dropped when a newer sample was already handed out.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import Actor
from hostvisor.actors.vm.actor import StatsSample
from hostvisor.actors.vm.sampling import BulkSample, bulk_sample, check_responsive, sample_domains

log = logging.getLogger(__name__)

VDSM_INTERVAL = 15.0
"""VDSM's default vm_sample_interval, in seconds."""
VDSM_SKIP = 40.0
"""How long VDSM skips an unresponsive domain at that interval, in seconds."""
MAX_STUCK = 4
"""Calls that may hang at once (each holds one thread) before ticks are skipped."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Tell (from the timer service): sample now."""


@dataclass(frozen=True, slots=True)
class Unresponsive:
    """Tell (from a fallback call's worker): these VMs are not ready for commands."""

    call: int
    vm_ids: tuple[str, ...]


@dataclass(slots=True)
class _Call:
    started: float  # monotonic
    fallback: bool
    stuck: bool = False


class VmStatsSampler(Actor):
    """Samples every VM's statistics in bulk and hands each VM its record.

    Args:
        connection: returns the open libvirt connection.
        vms: returns the live VmActors by VM id.
        interval: seconds between samples (VDSM's vm_sample_interval, 15 s).
        stuck_after: seconds after which a call still running is stuck (default:
            half an interval).
        skip_for: seconds an unresponsive VM is left out of samples before it is
            checked again (default: VDSM's 40 s scaled to the interval).
        max_stuck: calls that may hang at once.
    """

    def __init__(
        self,
        *,
        connection: Callable[[], Any],
        vms: Callable[[], Mapping[str, pykka.ActorRef[Any]]],
        interval: float,
        stuck_after: float | None = None,
        skip_for: float | None = None,
        max_stuck: int = MAX_STUCK,
    ) -> None:
        """Remember collaborators; start ticking in `on_start`."""
        super().__init__()
        self._connection = connection
        self._vms = vms
        self._interval = interval
        self._stuck_after = interval / 2 if stuck_after is None else stuck_after
        self._skip_for = VDSM_SKIP * interval / VDSM_INTERVAL if skip_for is None else skip_for
        self._max_stuck = max_stuck
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._skip: dict[str, float] = {}  # vm id -> monotonic time the skip ends
        self._last_taken = float("-inf")
        self.samples = 0
        self.skipped = 0
        self.stuck = 0
        self.fallbacks = 0
        self.stale = 0

    def on_start(self) -> None:
        """Start ticking; the first sample comes after one interval."""
        self.tick_every(self._interval, Tick())

    def on_receive(self, message: Any) -> Any:
        """Handle `Tick` and `Unresponsive` (samples come back through `run_off`)."""
        match message:
            case Tick():
                self.sample_now()
            case Unresponsive(_call, vm_ids):
                self._mark_unresponsive(vm_ids)
            case _:
                return super().on_receive(message)
        return None

    # -- answers --------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Return the sampler's counters and how many calls are in flight or stuck."""
        return {
            "samples": self.samples,
            "skipped": self.skipped,
            "stuck": self.stuck,
            "fallbacks": self.fallbacks,
            "stale": self.stale,
            "in_flight": len(self._calls),
            "stuck_in_flight": sum(call.stuck for call in self._calls.values()),
        }

    def unresponsive(self) -> list[str]:
        """Return the ids of the VMs left out of samples as unresponsive."""
        return sorted(self._skip)

    # -- sampling -------------------------------------------------------------------------

    def sample_now(self) -> bool:
        """Start a sample unless a healthy one is running; return whether one started."""
        now = self.clock.monotonic()
        for call in self._calls.values():
            if not call.stuck and now - call.started >= self._stuck_after:
                call.stuck = True
                self.stuck += 1
                log.warning(
                    "VM stats call has not returned after %.1f s; sampling responsive VMs only",
                    now - call.started,
                )
        if any(not call.stuck for call in self._calls.values()):
            self.skipped += 1
            return False
        if len(self._calls) >= self._max_stuck:
            self.skipped += 1
            log.warning("%d VM stats calls are stuck; skipping this sample", len(self._calls))
            return False
        self._start(now, fallback=bool(self._calls or self._skip))
        return True

    def _start(self, now: float, *, fallback: bool) -> None:
        call_id = next(self._ids)
        self._calls[call_id] = _Call(started=now, fallback=fallback)
        ref, connection, clock = self.actor_ref, self._connection, self.clock
        # A skipped VM is checked again once its skip has run out.
        wanted = [vm for vm in self._vms() if self._skip.get(vm, now) <= now] if fallback else []
        if fallback:
            self.fallbacks += 1

        def run() -> BulkSample:
            conn = connection()
            if not fallback:
                return bulk_sample(conn, clock)
            split = check_responsive(conn, wanted)
            if split.unresponsive:
                # Told before the sample (which may hang too): the skip starts now.
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.tell(Unresponsive(call_id, tuple(split.unresponsive)))
            return sample_domains(conn, split.responsive, clock)

        def then(outcome: BulkSample | BaseException) -> None:
            if isinstance(outcome, BaseException):
                self._on_sampled(call_id, None, repr(outcome))
            else:
                self._on_sampled(call_id, outcome, None)

        self.run_off(run, then, name="vm-stats-fallback" if fallback else "vm-bulk-stats")

    def _mark_unresponsive(self, vm_ids: tuple[str, ...]) -> None:
        until = self.clock.monotonic() + self._skip_for
        for vm_id in vm_ids:
            if vm_id not in self._skip:
                log.warning(
                    "VM %s is not ready for commands; left out of stats, checked every %.1f s",
                    vm_id,
                    self._skip_for,
                )
            self._skip[vm_id] = until

    def _on_sampled(self, call_id: int, sample: BulkSample | None, error: str | None) -> None:
        call = self._calls.pop(call_id, None)
        if call is not None and call.stuck:
            waited = self.clock.monotonic() - call.started
            log.info("a stuck VM stats call returned after %.1f s", waited)
        if sample is None:
            log.warning("VM stats sampling failed: %s", error)
            return
        if sample.taken_at <= self._last_taken:
            self.stale += 1
            return
        self._distribute(sample)

    def _distribute(self, sample: BulkSample) -> None:
        self._last_taken = sample.taken_at
        self.samples += 1
        now = self.clock.monotonic()
        vms = self._vms()
        for gone in [vm_id for vm_id in self._skip if vm_id not in vms]:
            del self._skip[gone]
        for vm_id, ref in vms.items():
            record = sample.records.get(vm_id)
            until = self._skip.get(vm_id)
            if until is not None:
                if until > now or record is None:
                    record = None
                else:
                    del self._skip[vm_id]  # checked again, and it answered
                    log.info("VM %s is ready for commands again", vm_id)
            try:
                ref.tell(StatsSample(sample, record))
            except pykka.ActorDeadError:
                continue
