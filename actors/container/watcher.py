"""DockerActor: the host's docker connection and the thread that reads docker's events.

Lives in `infra` beside the libvirt connection. It owns the `DockerEngine` (a client
for the configured socket: making it does no I/O, so a host whose docker is missing
starts all the same, and its KVM VMs never notice) and an `EventWatcher` thread.

The watcher opens docker's event stream for VM containers (those carrying our VM
label) and turns each event into a frozen `ContainerEvent`, handed to `deliver`,
which tells the owning ContainerActor. When docker goes away the stream ends:
the watcher says so (`lost`), then reconnects with a backoff (0.1 s doubling to
5 s). Each time the stream is open again it calls `connected`: the host then asks
every container actor to re-read docker (events were missed meanwhile) and adopts
labelled containers it has no actor for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.container.engine import ContainerEvent, DockerEngine, EventStream
from hostvisor.actors.errors import HostvisorError

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class GetEngine:
    """Ask: answer the host's `DockerEngine`."""


def _nothing() -> None:
    """A hook that does nothing."""


class EventWatcher:
    """A thread that reads docker's event stream, reconnecting until stopped.

    Not an actor: it owns only its thread and the stream it reads; `stop()` may be
    called from any thread.
    """

    def __init__(
        self,
        engine: DockerEngine,
        *,
        deliver: Callable[[ContainerEvent], None],
        connected: Callable[[], None] = _nothing,
        lost: Callable[[], None] = _nothing,
    ) -> None:
        """Start watching at once."""
        self._engine = engine
        self._deliver = deliver
        self._connected = connected
        self._lost = lost
        self._stopped = threading.Event()
        self._stream: EventStream | None = None
        self.connections = 0
        # owns a thread: docker's event stream is one long blocking read
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the thread ends at once (its stream is closed under it)."""
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopped.is_set():
            try:
                stream = self._engine.events()
            except HostvisorError as error:
                log.debug("docker events: not connected (%s); retrying in %.1f s", error, backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self._stream = stream
            if self._stopped.is_set():  # stop() ran before the stream was published
                stream.close()
                return
            self.connections += 1
            log.info("docker events: connected to %s", self._engine.socket)
            self._hook(self._connected)
            self._read(stream)
            if not self._stopped.is_set():
                log.warning("docker events: the stream from %s ended", self._engine.socket)
                self._hook(self._lost)

    def _read(self, stream: EventStream) -> None:
        try:
            for event in stream:
                try:
                    self._deliver(event)
                except Exception:
                    log.exception("delivering docker event %s failed", event)
        except (HostvisorError, OSError) as error:
            log.debug("docker events: stream broke: %s", error)
        except Exception as error:  # noqa: BLE001 - urllib3 raises several kinds as it closes
            log.debug("docker events: stream closed: %r", error)
        finally:
            stream.close()

    def _hook(self, hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception:
            log.exception("docker events: hook %r failed", hook)


class DockerActor(Actor):
    """The docker engine of one host and the watcher of its events.

    Args:
        socket: the engine's address (config `docker_socket`).
        deliver: tells a `ContainerEvent` to the owning actor (called on the watcher thread).
        connected: called on the watcher thread each time the event stream opens.
        lost: called on the watcher thread each time the event stream ends.
    """

    def __init__(
        self,
        *,
        socket: str,
        deliver: Callable[[ContainerEvent], None],
        connected: Callable[[], None] = _nothing,
        lost: Callable[[], None] = _nothing,
    ) -> None:
        """Remember the socket; make the client and start watching in `on_start`."""
        super().__init__()
        self._socket = socket
        self._deliver = deliver
        self._connected = connected
        self._lost = lost
        self._engine: DockerEngine | None = None
        self._watcher: EventWatcher | None = None

    def on_start(self) -> None:
        """Make the client (no I/O) and start the watcher thread; never waits for docker."""
        self._engine = DockerEngine(self._socket)
        self._watcher = EventWatcher(
            self._engine, deliver=self._deliver, connected=self._connected, lost=self._lost
        )

    def on_stop(self) -> None:
        """Stop watching; containers keep running."""
        if self._watcher is not None:
            self._watcher.stop()

    def on_failure(self, *_exc_info: object) -> None:
        """Stop watching before the restart starts a new watcher."""
        self.on_stop()

    def on_receive(self, message: Any) -> Any:
        """Answer `GetEngine`."""
        if isinstance(message, GetEngine):
            return self._engine
        return super().on_receive(message)

    def connections(self) -> int:
        """How many times the event stream has been opened (introspection, tests)."""
        return self._watcher.connections if self._watcher is not None else 0
