"""Where the event bus lives, and its typed client (the bus is `hostvisor.actors.events`).

The bus only hears tells (events go up), so its client only tells: it never
blocks and never waits for an answer.
"""

from __future__ import annotations

from typing import Any, Final, final

import pykka

from hostvisor.actors.events import Event, Publish

EVENTS_ID: Final = "events"
EVENTS: Final = f"infra/{EVENTS_ID}"
"""The EventBus, in the infra branch (see hostvisor.actors.hypervisor.addresses)."""


@final
class EventBusProxy:
    """Tells to the EventBus. Thread-safe; holds the ref only."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Tell the bus behind `ref`."""
        self.ref = ref

    def publish(self, event: Event) -> None:
        """Publish `event` to every subscriber (a tell; returns at once).

        Raises:
            pykka.ActorDeadError: the bus is not running.
        """
        self.ref.tell(Publish(event))
