"""libvirt domain events become frozen messages, once, on libvirt's event thread.

Each callback only builds a message (`DomainLifecycle`, `DeviceRemoved`,
`GuestRebooted`, `ConsoleChanged`) and hands it to `deliver`, which tells the VM's
actor: nothing here touches an actor's state, and nothing here can block libvirt's
event loop.

The hypervisor actor registers them all once per connection, for every domain, and
drops them when it closes the connection. libvirt tracks one callback per (event,
domain filter) and connection, and the Python binding gives every callback the same
C function: a second registration for the same event fails ("event callback already
tracked"). So no VM actor registers its own; one restarted, or two unplugs of one
VM at once, would collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DomainLifecycle:
    """Tell: libvirt reported a lifecycle change of domain `vm_id`."""

    vm_id: str
    event: int
    """A `libvirt.VIR_DOMAIN_EVENT_*` constant (STARTED, SUSPENDED, STOPPED...)."""
    detail: int
    """The event's detail constant (for STOPPED: SHUTDOWN, DESTROYED, CRASHED...)."""


@dataclass(frozen=True, slots=True)
class DeviceRemoved:
    """Tell: the guest of domain `vm_id` released the device `alias` (after a detach)."""

    vm_id: str
    alias: str


@dataclass(frozen=True, slots=True)
class GuestRebooted:
    """Tell: the guest of domain `vm_id` rebooted (libvirt's REBOOT event)."""

    vm_id: str


@dataclass(frozen=True, slots=True)
class ConsoleChanged:
    """Tell: a console client of domain `vm_id` connected or left (libvirt's GRAPHICS)."""

    vm_id: str
    connected: bool
    address: str
    port: str


DomainEvent = DomainLifecycle | DeviceRemoved | GuestRebooted | ConsoleChanged
"""What `deliver` gets; each names its domain's UUID (`vm_id`)."""

Deliver = Callable[[DomainEvent], None]

_CONNECTED = frozenset(
    {libvirt.VIR_DOMAIN_EVENT_GRAPHICS_CONNECT, libvirt.VIR_DOMAIN_EVENT_GRAPHICS_INITIALIZE}
)
"""GRAPHICS phases that mean a client is there (DISCONNECT means it left)."""


def watch_lifecycle(conn: Any, deliver: Deliver) -> int:
    """Register for every domain's lifecycle events; return the callback id."""

    def on_lifecycle(_conn: Any, domain: Any, event: int, detail: int, _opaque: Any) -> None:
        try:
            deliver(DomainLifecycle(domain.UUIDString(), event, detail))
        except Exception:
            log.exception("delivering a lifecycle event failed")

    callback_id: int = conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None
    )
    return callback_id


def watch_devices(conn: Any, deliver: Deliver) -> list[int]:
    """Register for every domain's device removals, reboots and console clients.

    Returns the callback ids (blocks briefly). Raises libvirt.libvirtError.
    """

    def on_removed(_conn: Any, domain: Any, alias: str, _opaque: Any) -> None:
        _deliver(deliver, lambda: DeviceRemoved(domain.UUIDString(), alias))

    def on_reboot(_conn: Any, domain: Any, _opaque: Any) -> None:
        _deliver(deliver, lambda: GuestRebooted(domain.UUIDString()))

    def on_graphics(
        _conn: Any,
        domain: Any,
        phase: int,
        _local: Any,
        remote: Any,
        _scheme: Any,
        _subject: Any,
        _opaque: Any,
    ) -> None:
        _deliver(
            deliver,
            lambda: ConsoleChanged(
                domain.UUIDString(),
                connected=phase in _CONNECTED,
                address=str(remote.get("node", "")),
                port=str(remote.get("service", "")),
            ),
        )

    ids = []
    try:
        for event_id, callback in (
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, on_removed),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, on_reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_GRAPHICS, on_graphics),
        ):
            ids.append(conn.domainEventRegisterAny(None, event_id, callback, None))
    except BaseException:
        for callback_id in ids:
            unwatch(conn, callback_id)
        raise
    return ids


def _deliver(deliver: Deliver, make: Callable[[], DomainEvent]) -> None:
    try:
        deliver(make())
    except Exception:
        log.exception("delivering a domain event failed")


def unwatch(conn: Any, callback_id: int) -> None:
    """Deregister a callback; a closed connection is fine."""
    try:
        conn.domainEventDeregisterAny(callback_id)
    except libvirt.libvirtError as error:
        log.debug("deregistering event callback %s: %s", callback_id, error)
