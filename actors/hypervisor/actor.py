"""HypervisorActor: owns the host's libvirt connection.

The connection is opened in `on_start` (so a restart reopens it) and closed in
`on_stop`. Closing a connection never touches a running guest. Other actors get
the connection object from `connection()` and make their own blocking calls on
their own threads or workers; libvirt connections are thread-safe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.hypervisor.connection import (
    Accelerator,
    HypervisorInfo,
    describe,
    detect_accelerator,
    open_connection,
    prepare_embed_root,
)
from hostvisor.actors.hypervisor.events import Deliver, unwatch, watch_devices, watch_lifecycle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GetConnection:
    """Ask: answer the open libvirt connection."""


class HypervisorActor(Actor):
    """The libvirt connection of one host.

    Args:
        uri: a libvirt URI; empty means an embedded QEMU driver rooted at `embed_root`.
        embed_root: where the embedded driver keeps its state.
    """

    def __init__(
        self, *, uri: str, embed_root: Path, deliver: Deliver = lambda _event: None
    ) -> None:
        """Remember where to connect; connect in `on_start`.

        `deliver` receives every domain's events (lifecycle, device removals, reboots,
        console clients: `events.DomainEvent`), on libvirt's event thread.
        """
        super().__init__()
        self._uri = uri
        self._embed_root = embed_root
        self._deliver = deliver
        self._conn: Any = None
        self._watches: list[int] = []  # event callbacks on the connection
        self._info: HypervisorInfo | None = None

    def on_start(self) -> None:
        """Open the connection (blocking; bounded by the child's start timeout)."""
        uri = self._uri or prepare_embed_root(self._embed_root)
        accelerator = detect_accelerator()
        if uri.startswith("test:"):
            accelerator = Accelerator.TCG
        self._conn = open_connection(uri)
        self._watches = [watch_lifecycle(self._conn, self._deliver)]
        self._watches += watch_devices(self._conn, self._deliver)
        self._info = describe(self._conn, accelerator)
        log.info(
            "hypervisor connected: uri=%s driver=%s libvirt=%s accelerator=%s",
            self._info.uri,
            self._info.driver,
            self._info.libvirt_version,
            accelerator.name,
        )

    def on_stop(self) -> None:
        """Close the connection handle; guests keep running."""
        self._close()

    def on_failure(self, *_exc_info: object) -> None:
        """Close the connection handle before the restart reopens one.

        A worker still inside a call on it finishes safely (`ConnectionHandle`).
        """
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            for watch in self._watches:
                unwatch(self._conn, watch)
            self._watches = []
            try:
                self._conn.close()
            finally:
                self._conn = None

    def on_receive(self, message: Any) -> Any:
        """Answer `GetConnection`."""
        if isinstance(message, GetConnection):
            return self._conn
        return super().on_receive(message)

    def info(self) -> HypervisorInfo:
        """Return the hypervisor's facts. Non-blocking; idempotent."""
        assert self._info is not None  # noqa: S101 - set by on_start before any message
        return self._info

    def connection(self) -> Any:
        """Return the open libvirt connection (a thread-safe handle)."""
        return self._conn
