"""NetworkActor: one configured network, watching the devices it is made of.

Made (and remade, and stopped) by the configurator as networks come, change and
go. It owns its network's view of the kernel: the state of its devices (the NIC or
bond, the VLAN device, the bridge), kept current by the link monitor's
`LinkChanged` messages. When one of its devices goes up or down, appears or
vanishes, it sends VDSM's `|net|host_conn|no_id` event up to the bus: the hint
that makes the Engine read the host's capabilities again.

It never touches the kernel itself: the configurator changes the devices; this
actor only reports on them. Its state is rebuilt from what it is given at start
(the configuration and the devices' state at that moment), then from events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.events import Event
from hostvisor.actors.network.model import NetworkAttrs
from hostvisor.actors.network.monitor import LinkChanged, LinkState

log = logging.getLogger(__name__)

HOST_CONN_EVENT = "|net|host_conn|no_id"


@dataclass(frozen=True, slots=True)
class Reconfigured:
    """Tell (from the configurator): the network now has these attributes and devices."""

    attrs: NetworkAttrs
    links: Mapping[str, LinkState]


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkStatus:
    """A snapshot of one network actor's view."""

    name: str
    devices: tuple[str, ...]
    links: Mapping[str, LinkState]
    events_sent: int

    @property
    def up(self) -> bool:
        """Whether every device of the network exists and is up with a carrier."""
        return all(self.links.get(d, LinkState(name=d)).running for d in self.devices)


class NetworkActor(Actor):
    """Owns one network's view of its devices. Never blocks.

    Args:
        name: the network's name (also its bridge's, when bridged).
        attrs: its configured attributes.
        links: the state of its devices when it is made.
        publish: sends an event up to the event bus (never blocks).
    """

    def __init__(
        self,
        *,
        name: str,
        attrs: NetworkAttrs,
        links: Mapping[str, LinkState],
        publish: Callable[[Event], None],
    ) -> None:
        """Remember the network and the state of its devices."""
        super().__init__()
        self.name = name
        self._attrs = attrs
        self._devices = attrs.devices(name)
        self._links = {d: links.get(d, LinkState(name=d, exists=False)) for d in self._devices}
        self._publish = publish
        self._events_sent = 0

    def on_receive(self, message: Any) -> Any:
        """Handle `LinkChanged` (from the monitor) and `Reconfigured` (configurator)."""
        match message:
            case LinkChanged(link):
                self._on_link(link)
            case Reconfigured(attrs, links):
                self._attrs = attrs
                self._devices = attrs.devices(self.name)
                self._links = {
                    d: links.get(d, LinkState(name=d, exists=False)) for d in self._devices
                }
            case _:
                return super().on_receive(message)
        return None

    def status(self) -> NetworkStatus:
        """Return this network's view of its devices (fast)."""
        return NetworkStatus(
            name=self.name,
            devices=self._devices,
            links=dict(self._links),
            events_sent=self._events_sent,
        )

    def _on_link(self, link: LinkState) -> None:
        if link.name not in self._links:
            return
        before = self._links[link.name]
        self._links[link.name] = link
        if (before.exists, before.running) != (link.exists, link.running):
            log.info(
                "network %s: %s is %s", self.name, link.name,
                "gone" if not link.exists else ("up" if link.running else "down"),
            )  # fmt: skip
            self._publish(Event(method=HOST_CONN_EVENT, params={}))
            self._events_sent += 1
