"""The event bus: resource actors tell events up; the bus hands them to subscribers.

Events are VDSM's JSON-RPC notifications (reference/vdsm-wire.md §1.4): a method
such as `|virt|VM_status|<vmId>` and params, to which the bus adds `notify_time`
as VDSM computes it (2**31 - 1 plus monotonic milliseconds, because old Engines
mis-parse smaller values). Subscribers are actors found by path at publish time,
so a subscriber that restarts keeps receiving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import Actor
from hostvisor.actors.clock import Clock

NOTIFY_TIME_BASE = 2**31 - 1


def notify_time(clock: Clock) -> int:
    """Return VDSM's `notify_time` for now on `clock` (its monotonic milliseconds)."""
    return NOTIFY_TIME_BASE + int(clock.monotonic() * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One notification: `method` like `|virt|VM_status|<id>`, and its params."""

    method: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Publish:
    """Tell the bus: publish this event."""

    event: Event


class EventBus(Actor):
    """Stamps events and tells them to every live subscriber. Never blocks."""

    def __init__(self, *, subscribers: Callable[[], list[pykka.ActorRef[Any]]]) -> None:
        """Deliver to whatever `subscribers()` returns at publish time."""
        super().__init__()
        self._subscribers = subscribers
        self.published = 0

    def on_receive(self, message: Any) -> Any:
        """Handle `Publish`."""
        if isinstance(message, Publish):
            self._publish(message.event)
            return None
        return super().on_receive(message)

    def _publish(self, event: Event) -> None:
        stamped = Event(
            method=event.method, params={**event.params, "notify_time": notify_time(self.clock)}
        )
        for ref in self._subscribers():
            try:
                ref.tell(Publish(stamped))
            except pykka.ActorDeadError:
                continue
        self.published += 1
