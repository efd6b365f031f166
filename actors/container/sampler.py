"""ContainerStatsSampler: every interval, docker's stats of every VM container.

Docker has no bulk stats call, so each tick makes one listing of the running VM
containers (one call) and then reads each one's one-shot stats (~5 ms each),
`WORKERS` at a time, each read a job on the work facility, off this actor's
thread; when they are all in, each ContainerActor is told its sample (None when
docker had nothing for it, which it reports as monitorResponse -1). A collection
still running at the next tick is not doubled: that tick is skipped.

    Tick --(worker: list running VM containers)--> up to WORKERS reads at once
    each read --(worker: docker stats)--> the next read; after the last: hand out
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka

from hostvisor.actors.actor import Actor
from hostvisor.actors.container.actor import Sampled
from hostvisor.actors.container.engine import DockerEngine, Labelled
from hostvisor.actors.container.stats import ContainerSample
from hostvisor.actors.errors import HostvisorError

log = logging.getLogger(__name__)

WORKERS = 4
"""Stats calls in flight at once."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Tell (from the timer service): sample now."""


@dataclass(slots=True)
class _Collection:
    """One tick's collection in progress (the sampler's thread only)."""

    to_read: deque[Labelled]
    reading: int = 0
    samples: dict[str, ContainerSample] = field(default_factory=dict)


class ContainerStatsSampler(Actor):
    """Samples every container VM's statistics and hands each actor its sample.

    Args:
        engine: returns the host's docker engine.
        containers: returns the live ContainerActors by VM id.
        interval: seconds between samples (VDSM's vm_sample_interval).
    """

    def __init__(
        self,
        *,
        engine: Callable[[], DockerEngine],
        containers: Callable[[], Mapping[str, pykka.ActorRef[Any]]],
        interval: float,
    ) -> None:
        """Remember collaborators; start ticking in `on_start`."""
        super().__init__()
        self._engine = engine
        self._containers = containers
        self._interval = interval
        self._busy = False
        self.samples = 0
        self.skipped = 0

    def on_start(self) -> None:
        """Start ticking."""
        self.tick_every(self._interval, Tick())

    def on_receive(self, message: Any) -> Any:
        """Handle `Tick` (collections come back through `run_off`)."""
        match message:
            case Tick():
                self._tick()
            case _:
                return super().on_receive(message)
        return None

    def _tick(self) -> None:
        if self._busy:
            self.skipped += 1
            return
        if not self._containers():
            return
        self._busy = True
        engine = self._engine
        self.run_off(lambda: engine().labelled(running=True), self._listed, name="container-list")

    def _listed(self, outcome: list[Labelled] | BaseException) -> None:
        if isinstance(outcome, HostvisorError):
            self._busy = False
            self._hand_out({}, str(outcome))
            return
        if isinstance(outcome, BaseException):
            raise outcome  # not docker's refusal: a bug, crash
        collection = _Collection(to_read=deque(outcome))
        if not outcome:
            self._done(collection)
            return
        for _ in range(min(WORKERS, len(outcome))):
            self._read_next(collection)

    def _read_next(self, collection: _Collection) -> None:
        item = collection.to_read.popleft()
        collection.reading += 1
        engine, clock = self._engine, self.clock

        def read() -> ContainerSample | None:
            try:
                raw = engine().stats(item.container_id)
            except HostvisorError as error:  # it stopped between the listing and the read
                log.debug("stats of container %s: %s", item.container_id, error)
                return None
            return ContainerSample(taken_at=clock.monotonic(), raw=raw)

        def then(outcome: ContainerSample | BaseException | None) -> None:
            collection.reading -= 1
            if isinstance(outcome, BaseException):
                raise outcome  # not docker's refusal: a bug, crash
            if outcome is not None:
                collection.samples[item.vm_id] = outcome
            if collection.to_read:
                self._read_next(collection)
            elif not collection.reading:
                self._done(collection)

        self.run_off(read, then, name="container-stats")

    def _done(self, collection: _Collection) -> None:
        self._busy = False
        self._hand_out(collection.samples, None)

    def _hand_out(self, samples: Mapping[str, ContainerSample], error: str | None) -> None:
        self.samples += 1
        if error is not None:
            log.debug("container stats: %s", error)
        for vm_id, ref in self._containers().items():
            try:
                ref.tell(Sampled(samples.get(vm_id)))
            except pykka.ActorDeadError:
                continue
