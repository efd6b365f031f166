"""ContainerStatsSampler: every interval, docker's stats of every VM container.

Docker has no bulk stats call, so each tick makes one listing of the running VM
containers (one call) and then reads each one's one-shot stats (~5 ms each) on a
few threads at once, all off this actor's thread; when they are in, each
ContainerActor is told its sample (None when docker had nothing for it, which it
reports as monitorResponse -1). A collection still running at the next tick is not
doubled: that tick is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import Actor
from hostvisor.actors.container.actor import Sampled
from hostvisor.actors.container.engine import DockerEngine
from hostvisor.actors.container.stats import ContainerSample
from hostvisor.actors.errors import HostvisorError

log = logging.getLogger(__name__)

WORKERS = 4
"""Stats calls in flight at once."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Tell (from the ticker): sample now."""


@dataclass(frozen=True, slots=True)
class Collected:
    """Tell (from a collecting thread): the samples by VM id, or why there are none."""

    samples: Mapping[str, ContainerSample]
    error: str | None = None


def collect(engine: DockerEngine, workers: int = WORKERS) -> dict[str, ContainerSample]:
    """Read the stats of every running VM container (blocking). Raises DockerUnavailable."""
    running = engine.labelled(running=True)

    def read(container_id: str) -> ContainerSample | None:
        try:
            raw = engine.stats(container_id)
        except HostvisorError as error:  # it stopped between the listing and the read
            log.debug("stats of container %s: %s", container_id, error)
            return None
        return ContainerSample(taken_at=time.monotonic(), raw=raw)

    if not running:
        return {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="container-stats") as pool:
        samples = pool.map(read, [item.container_id for item in running])
        pairs = zip((item.vm_id for item in running), samples, strict=True)
        return {vm_id: sample for vm_id, sample in pairs if sample is not None}


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
        """Handle `Tick` and `Collected`."""
        match message:
            case Tick():
                self._tick()
            case Collected(samples, error):
                self._hand_out(samples, error)
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
        ref, engine = self.actor_ref, self._engine

        def run() -> None:
            try:
                message = Collected(collect(engine()))
            except HostvisorError as error:
                message = Collected({}, str(error))
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                return

        threading.Thread(target=run, name="container-stats", daemon=True).start()

    def _hand_out(self, samples: Mapping[str, ContainerSample], error: str | None) -> None:
        self._busy = False
        self.samples += 1
        if error is not None:
            log.debug("container stats: %s", error)
        for vm_id, ref in self._containers().items():
            try:
                ref.tell(Sampled(samples.get(vm_id)))
            except pykka.ActorDeadError:
                continue
