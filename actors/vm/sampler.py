"""VmStatsSampler: one bulk libvirt stats call per interval, for every VM.

The call runs on a thread of its own (it takes ~12 ms per running guest, much
more while guests boot, and can hang on a stuck QEMU), never on this actor's or
the API's thread. When it returns, each VmActor is told its record; a VM missing
from the sample is told None and reports monitorResponse -1. A sample still
running when the next tick comes is not doubled: the tick is skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import Actor
from hostvisor.actors.ticker import Ticker
from hostvisor.actors.vm.actor import StatsSample
from hostvisor.actors.vm.sampling import BulkSample, bulk_sample

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tick:
    """Tell (from the ticker): sample now."""


@dataclass(frozen=True, slots=True)
class Sampled:
    """Tell (from the sampling thread): a bulk sample, or why there is none."""

    sample: BulkSample | None
    error: str | None = None


class VmStatsSampler(Actor):
    """Samples every VM's statistics in bulk and hands each VM its record.

    Args:
        connection: returns the open libvirt connection.
        vms: returns the live VmActors by VM id.
        interval: seconds between samples (VDSM's vm_sample_interval, 15 s).
    """

    def __init__(
        self,
        *,
        connection: Callable[[], Any],
        vms: Callable[[], Mapping[str, pykka.ActorRef[Any]]],
        interval: float,
    ) -> None:
        """Remember collaborators; start ticking in `on_start`."""
        super().__init__()
        self._connection = connection
        self._vms = vms
        self._interval = interval
        self._ticker: Ticker | None = None
        self._in_flight = False
        self.samples = 0
        self.skipped = 0

    def on_start(self) -> None:
        """Start the ticker; the first sample comes after one interval."""
        self._ticker = Ticker(self.actor_ref, Tick(), self._interval, self.path)

    def on_stop(self) -> None:
        """Stop the ticker (a sample in flight is dropped when it returns)."""
        if self._ticker is not None:
            self._ticker.stop()

    def on_failure(self, *_exc_info: object) -> None:
        """Stop the ticker."""
        self.on_stop()

    def on_receive(self, message: Any) -> Any:
        """Handle `Tick` and `Sampled`."""
        match message:
            case Tick():
                self.sample_now()
            case Sampled(sample, error):
                self._in_flight = False
                if sample is not None:
                    self._distribute(sample)
                else:
                    log.warning("bulk VM stats failed: %s", error)
            case _:
                return super().on_receive(message)
        return None

    def sample_now(self) -> bool:
        """Start a bulk sample unless one is running; return whether one started."""
        if self._in_flight:
            self.skipped += 1
            return False
        self._in_flight = True
        ref = self.actor_ref
        connection = self._connection

        def run() -> None:
            try:
                message = Sampled(bulk_sample(connection()))
            except Exception as error:  # noqa: BLE001 - reported back as a message
                message = Sampled(None, repr(error))
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                return

        threading.Thread(target=run, name="vm-bulk-stats", daemon=True).start()
        return True

    def _distribute(self, sample: BulkSample) -> None:
        self.samples += 1
        for vm_id, ref in self._vms().items():
            try:
                ref.tell(StatsSample(sample, sample.records.get(vm_id)))
            except pykka.ActorDeadError:
                continue
