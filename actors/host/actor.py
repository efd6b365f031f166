"""HostActor: the machine this agent runs on: its facts, capabilities and stats.

Nothing slow runs on the actor's thread. Everything that reads the machine,
libvirt, docker or the network configurator (a sideways ask that can take up to
its timeout) runs on the work facility (`Actor.run_off`), and the answers that
need it are given later (`reply.Later`): the caller sees one future and one
value, and the actor keeps answering meanwhile. As messages:

    Sample (every sample_interval) --(worker: CPU counters, /proc, /sys, network)-->
        the stats body is kept (the window is the last sample)
    stats()         --(worker: netConfigDirty, VM counts, momStatus)--> last body + those + times
        StatsDeadline (STATS_DEADLINE s later): answer with the last known ones;
        one read at a time, coalesced as below
    capabilities()  --(worker: libvirt, dpkg, docker ping, network)--> answer
        an ask that comes while a read runs waits for the next read, started when
        that one ends: one read at a time, never an answer older than its ask
    hardware_info() --(worker: DMI)--> answer

So `Host.getStats` costs the actor two short messages whatever libvirt, docker or
the network configurator are doing. Capabilities are read for each ask (coalesced),
not cached: a network change or docker going away shows in the next answer, as
in VDSM, without anyone having to tell the host actor.

Static facts are read once in `on_start`. What it holds is rebuilt by sampling
again after a restart.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hostvisor.actors.actor import Actor
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.future import Later
from hostvisor.actors.host.caps import capabilities
from hostvisor.actors.host.facts import HostFacts, read_facts
from hostvisor.actors.host.hardware import hardware_info
from hostvisor.actors.host.netinfo import interface_stats, network_caps
from hostvisor.actors.host.stats import (
    MOM_STATUS,
    HostSample,
    date_time,
    disk_paths,
    find_ksmd,
    read_sample,
    render_stats,
)
from hostvisor.actors.timers import Timer

log = logging.getLogger(__name__)

__all__ = ["HostActor", "HostFacts", "HostNetwork", "Sample", "StatsDeadline"]

FIRST_SAMPLE_DELAY = 1.0
STATS_DEADLINE = 1.0
"""Seconds getStats waits for netConfigDirty, the VM counts and momStatus before using the
last known."""
SOFTWARE_VERSION = "4.50.7"
"""The VDSM API level Hostvisor speaks (reference/vdsm-wire.md, API version 4.50.7)."""


def _clean() -> bool:
    return False


def _no_mom() -> str:
    return MOM_STATUS


@dataclass(frozen=True, slots=True, kw_only=True)
class HostNetwork:
    """How the host actor reads the networks of the namespace the host manages.

    Each is called on a worker, never on the actor's thread, and may block.

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
    """Tell (from the timer service): take a statistics sample now."""


@dataclass(frozen=True, slots=True)
class StatsDeadline:
    """Tell (from the timer service): answer stats ask `ask` with what is known."""

    ask: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sampled:
    sample: HostSample
    body: dict[str, Any]
    ksmd: psutil.Process | None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fresh:
    """The getStats fields read for each ask."""

    dirty: bool = False
    counts: Mapping[str, int] = field(default_factory=dict)
    mom: str = MOM_STATUS


@dataclass(slots=True)
class _StatsAsk:
    reply: Later
    deadline: Timer | None = None
    fresh: _Fresh | None = None


class HostActor(Actor):
    """Owns the host's facts and statistics. Methods are idempotent and never block.

    Args:
        state_dir: where the host's persistent id lives when DMI has none.
        connection: returns the open libvirt connection (may raise Unavailable).
        containers: whether the docker engine answers (for getCapabilities).
        sample_interval: seconds between statistics samples.
        vm_counts: returns VM counters for getStats (vmCount, vmActive, ...).
        network: reads the managed namespace's networks (default: this process's own).
        mom_status: returns getStats' `momStatus`, "active" or "inactive" (may block
            briefly: called on a worker with the other fresh fields).
    """

    def __init__(  # noqa: PLR0913 - the host's collaborators and settings
        self,
        *,
        state_dir: Path,
        connection: Callable[[], Any],
        containers: Callable[[], bool] = lambda: False,
        sample_interval: float = 15.0,
        vm_counts: Callable[[], Mapping[str, int]] = dict,
        network: HostNetwork | None = None,
        mom_status: Callable[[], str] = _no_mom,
        hooks: Callable[[], Mapping[str, Any]] = dict,
    ) -> None:
        """Remember collaborators; read the machine in `on_start`."""
        super().__init__()
        self._state_dir = state_dir
        self._connection = connection
        self._containers = containers
        self._sample_interval = sample_interval
        self._vm_counts = vm_counts
        self._network = network or HostNetwork()
        self._mom_status = mom_status
        self._hooks = hooks  # the installed VDSM hooks, read on the caps worker
        self._disks = disk_paths(state_dir)
        self._facts: HostFacts | None = None
        self._started_at = 0.0
        # statistics
        self._last_sample: HostSample | None = None
        self._ksmd: psutil.Process | None = None
        self._body: dict[str, Any] | None = None
        self._sampling = False
        self._fresh = _Fresh()  # the last known netConfigDirty and VM counts
        self._stats_asks: dict[int, _StatsAsk] = {}
        self._ask_ids = itertools.count(1)
        # fresh fields: the asks the read in progress answers, and those for the next one
        self._fresh_reading: list[int] | None = None
        self._fresh_next: list[int] = []
        # capabilities: the asks the read in progress answers, and those for the next one
        self._caps_reading: list[Later] | None = None
        self._caps_next: list[Later] = []
        self.samples = 0
        self.samples_skipped = 0
        self.stats_late = 0
        self.caps_reads = 0

    def on_start(self) -> None:
        """Read the host's facts; start sampling (the first sample at once, off-thread)."""
        self._started_at = self.clock.monotonic()
        self._facts = read_facts(self._state_dir)
        self._sample()
        # A second sample soon after start, so that rates exist within a second.
        first = min(self._sample_interval, FIRST_SAMPLE_DELAY)
        self.tick_every(self._sample_interval, Sample(), first=first)

    def on_receive(self, message: Any) -> Any:
        """Handle `Sample` and `StatsDeadline` (actor thread)."""
        match message:
            case Sample():
                self._sample()
            case StatsDeadline(ask):
                self._stats_deadline(ask)
            case _:
                return super().on_receive(message)
        return None

    # -- answers ---------------------------------------------------------------------------

    def facts(self) -> HostFacts:
        """Return the host's facts."""
        assert self._facts is not None  # noqa: S101 - set by on_start before any message
        return self._facts

    def uptime(self) -> float:
        """Return seconds since this actor started (the agent's uptime, near enough)."""
        return self.clock.monotonic() - self._started_at

    def capabilities(self) -> Later:
        """Answer Host.getCapabilities' `info`, read on a worker for this ask.

        Returns at once; the answer follows (libvirt, dpkg, a docker ping and the
        network configurator: ~100 ms, or up to their timeouts). Raises, through the
        answer, whatever the read raised.
        """
        reply = Later()
        if self._caps_reading is None:
            self._read_caps([reply])
        else:
            self._caps_next.append(reply)
        return reply

    def stats(self) -> Later:
        """Answer Host.getStats' `info`: the last sample with fresh counts and times.

        Returns at once; the answer follows within STATS_DEADLINE seconds (the
        netConfigDirty and VM counts reads run on a worker, one read at a time,
        coalesced like capabilities; past the deadline the last known ones are
        used), so a hung network configurator holds one worker, not one per ask.
        """
        ask = next(self._ask_ids)
        pending = self._stats_asks[ask] = _StatsAsk(Later())
        pending.deadline = self.tell_later(STATS_DEADLINE, StatsDeadline(ask))
        if self._fresh_reading is None:
            self._read_fresh([ask])
        else:
            self._fresh_next.append(ask)
        return pending.reply

    def hardware_info(self) -> Later:
        """Answer Host.getHardwareInfo's result (DMI; empty strings where unreadable)."""
        reply = Later()
        self.run_off(hardware_info, lambda outcome: _settle(reply, outcome), name="hardware")
        return reply

    # -- statistics --------------------------------------------------------------------------

    def _sample(self) -> None:
        """Start a sample on a worker unless one is running (actor thread)."""
        if self._sampling:
            self.samples_skipped += 1
            return
        self._sampling = True
        previous, ksmd, first = self._last_sample, self._ksmd, self._last_sample is None
        clock, network, disks = self.clock, self._network, self._disks

        def collect() -> _Sampled:
            process = find_ksmd() if first else ksmd
            taken = read_sample(clock.monotonic(), process)
            body = render_stats(
                previous or taken,
                taken,
                disks=disks,
                network=network.stats(),
                elapsed=0.0,  # laid over with the uptime and the time of each answer
                wall=clock.time(),
            )
            return _Sampled(sample=taken, body=body, ksmd=process if taken.ksmd else None)

        self.run_off(collect, self._sampled, name="sample")

    def _sampled(self, outcome: _Sampled | BaseException) -> None:
        self._sampling = False
        if isinstance(outcome, HostvisorError):
            log.warning("host statistics sample failed: %s", outcome)
            return
        if isinstance(outcome, BaseException):
            raise outcome  # a bug in reading the machine: crash, as in any handler
        self.samples += 1
        self._last_sample, self._ksmd, self._body = outcome.sample, outcome.ksmd, outcome.body
        for ask in list(self._stats_asks):
            self._try_answer(ask)

    def _read_fresh(self, asks: list[int]) -> None:
        """Read netConfigDirty and the VM counts on a worker for `asks` (actor thread)."""
        self._fresh_reading = asks
        network, vm_counts, mom_status = self._network, self._vm_counts, self._mom_status

        def read() -> _Fresh:
            return _Fresh(dirty=network.dirty(), counts=dict(vm_counts()), mom=mom_status())

        self.run_off(read, self._fresh_read, name="stats")

    def _fresh_read(self, outcome: _Fresh | BaseException) -> None:
        asks, self._fresh_reading = self._fresh_reading or [], None
        if self._fresh_next:
            waiting, self._fresh_next = self._fresh_next, []
            self._read_fresh(waiting)
        if isinstance(outcome, BaseException):
            log.warning("netConfigDirty or the VM counts could not be read: %r", outcome)
            outcome = self._fresh
        self._fresh = outcome
        for ask in asks:
            pending = self._stats_asks.get(ask)
            if pending is not None and pending.fresh is None:  # not answered at its deadline
                pending.fresh = outcome
                self._try_answer(ask)

    def _stats_deadline(self, ask: int) -> None:
        pending = self._stats_asks.get(ask)
        if pending is not None and pending.fresh is None:
            self.stats_late += 1
            pending.fresh = self._fresh
            self._try_answer(ask)

    def _try_answer(self, ask: int) -> None:
        """Answer `ask` if its fields and a sample are in (the first sample may not be)."""
        pending = self._stats_asks[ask]
        body = self._body
        if pending.fresh is None or body is None:
            return
        del self._stats_asks[ask]
        if pending.deadline is not None:
            pending.deadline.cancel()
        answer = dict(body)
        answer.update(pending.fresh.counts)
        answer.update(
            elapsedTime=f"{int(self.uptime()):.2f}",
            dateTime=date_time(self.clock.time()),
            netConfigDirty=str(pending.fresh.dirty),
            momStatus=pending.fresh.mom,
        )
        pending.reply.set(answer)

    # -- capabilities ------------------------------------------------------------------------

    def _read_caps(self, asks: list[Later]) -> None:
        """Read the capabilities on a worker for `asks` (actor thread)."""
        self._caps_reading = asks
        connection, containers, network = self._connection, self._containers, self._network
        host_id, hooks = self.facts().host_uuid, self._hooks

        def read() -> dict[str, Any]:
            return capabilities(
                connection(),
                host_uuid=host_id,
                software_version=SOFTWARE_VERSION,
                containers=containers(),
                network=network.caps(),
                hooks=hooks(),
            )

        self.run_off(read, self._caps_read, name="capabilities")

    def _caps_read(self, outcome: dict[str, Any] | BaseException) -> None:
        asks, self._caps_reading = self._caps_reading or [], None
        self.caps_reads += 1
        if self._caps_next:
            waiting, self._caps_next = self._caps_next, []
            self._read_caps(waiting)
        if isinstance(outcome, BaseException) and not isinstance(outcome, HostvisorError):
            log.error("reading the host's capabilities failed", exc_info=outcome)
        for reply in asks:
            _settle(reply, outcome)


def _settle(reply: Later, outcome: Any) -> None:
    """Settle `reply` with a work's outcome: its value, or the exception it raised."""
    if isinstance(outcome, BaseException):
        reply.set_exception(exc_info=(type(outcome), outcome, outcome.__traceback__))
    else:
        reply.set(outcome)
