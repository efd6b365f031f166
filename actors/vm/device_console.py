"""Who is on a VM's console, and what happens when they leave (VDSM `onConnect`/`onDisconnect`).

libvirt's GRAPHICS events say when a VNC or SPICE client connects, authenticates and
disconnects. VDSM keeps the client's address (`clientIp` in VM stats) and, when
the client leaves and has not come back 2 seconds later, does what the last ticket's
`disconnectAction` said: LOCK_SCREEN and LOGOUT ask oVirt's own guest agent (which
Hostvisor does not speak: logged, nothing done), REBOOT reboots the guest, SHUTDOWN
shuts it down after `consoleDisconnectActionDelay` minutes, each forced after
`sys_shutdown_timeout` (120 s) if the guest does not comply.

`Console` is the pure state; the events reach the VM's actor as `ConsoleChanged`
messages (the hypervisor actor watches every domain's: `hypervisor.events`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import libvirt

log = logging.getLogger(__name__)

RECONNECT_GRACE = 2.0
"""Seconds a client has to come back before the disconnect action (VDSM's 2 s)."""
FORCE_AFTER = 120.0
"""Seconds a disconnect shutdown waits before forcing the guest off (sys_shutdown_timeout)."""
_CONNECTED = frozenset(
    {libvirt.VIR_DOMAIN_EVENT_GRAPHICS_CONNECT, libvirt.VIR_DOMAIN_EVENT_GRAPHICS_INITIALIZE}
)


@dataclass(frozen=True, slots=True)
class GraphicsEvent:
    """Tell (from libvirt's event thread): a console client connected or disconnected."""

    connected: bool
    address: str
    port: str


@dataclass(frozen=True, slots=True)
class DisconnectDue:
    """Tell (a timer): the client left `serial` disconnects ago; act if it is still away."""

    serial: int


@dataclass(frozen=True, slots=True)
class Console:
    """The console's client and what to do when it leaves."""

    action: str = "LOCK_SCREEN"
    delay_minutes: int = 0
    client: tuple[str, str] | None = None
    disconnects: int = 0

    def on_event(self, event: GraphicsEvent) -> Console:
        """The state after `event` (a disconnect of another client changes nothing)."""
        if event.connected:
            return replace(self, client=(event.address, event.port))
        if self.client is not None and self.client[0] != event.address:
            return self
        return replace(self, client=None, disconnects=self.disconnects + 1)

    @property
    def client_ip(self) -> str:
        """VM stats' `clientIp`: the connected client's address, or ""."""
        return self.client[0] if self.client else ""
