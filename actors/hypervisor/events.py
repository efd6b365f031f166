"""libvirt domain events become frozen messages, once, on libvirt's event thread.

The callback only builds a `DomainLifecycle` and hands it to `deliver`, which
tells the owning actor: nothing here touches an actor's state, and nothing here
can block libvirt's event loop.
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


Deliver = Callable[[DomainLifecycle], None]


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


def unwatch(conn: Any, callback_id: int) -> None:
    """Deregister a callback; a closed connection is fine."""
    try:
        conn.domainEventDeregisterAny(callback_id)
    except libvirt.libvirtError as error:
        log.debug("deregistering event callback %s: %s", callback_id, error)
