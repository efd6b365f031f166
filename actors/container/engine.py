"""DockerEngine: the thin blocking adapter to the docker engine (the docker SDK).

Plain blocking code with no threads of its own: actors decide where each call runs
(never in a mailbox thread). One engine object is shared by every caller of a host;
the SDK's HTTP session pools its connections and is safe to use from several threads.

Errors come out as Hostvisor errors: `DockerUnavailable` (code 40) when the engine
does not answer on its socket, `DockerFailed` (code 16) when it answers with an
error; a container that does not exist is not an error here (`inspect` returns None,
`remove` does nothing). The API version is fixed (no version query at construction),
so making an engine never touches the socket.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions

from hostvisor.actors.container.errors import DockerFailed, DockerUnavailable
from hostvisor.actors.container.spec import LABEL_DOMAIN_XML, LABEL_VM_ID, RUNTIME, ContainerSpec
from hostvisor.actors.vm.errors import VmExists

log = logging.getLogger(__name__)

API_VERSION = "1.41"
"""Docker Engine API 1.41 (docker 20.10): one-shot stats; newer engines accept it too."""
CALL_TIMEOUT = 120.0
"""Seconds a slow docker call may take (create copies the image with vfs; pull; remove)."""
QUICK_TIMEOUT = 10.0
"""Seconds a quick docker call may take (inspect, list, stats, pause, kill): a hung
engine holds recovery, the sampler and the operations up no longer than this."""
PING_TIMEOUT = 2.0
CONFLICT = 409


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerState:
    """What `docker inspect` says of a container's process."""

    container_id: str
    status: str
    """docker's word: created, running, paused, restarting, removing, exited or dead."""
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_ns: int = 0
    """When the current (or last) run started, epoch nanoseconds; 0 if it never ran."""
    stop_signal: str = "SIGTERM"


@dataclass(frozen=True, slots=True, kw_only=True)
class Labelled:
    """A container that belongs to a VM (it carries our labels), from one listing."""

    container_id: str
    vm_id: str
    xml: str
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerEvent:
    """Tell (from the docker event thread): docker reported `action` on a VM's container."""

    vm_id: str
    container_id: str
    action: str
    """die, start, pause, unpause, oom, destroy, … (docker's event action)."""
    time_ns: int
    exit_code: int | None = None
    """The process's exit status, on `die`."""


def epoch_ns(text: str) -> int:
    """Parse docker's RFC 3339 time with nanoseconds; 0 for its zero time or garbage."""
    if not text or text.startswith("0001-"):
        return 0
    stamp, _, fraction = text.rstrip("Z").partition(".")
    try:
        seconds = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0
    digits = "".join(ch for ch in fraction if ch.isdigit())[:9]
    return seconds * 1_000_000_000 + int(digits.ljust(9, "0") or 0)


def state_of(inspected: Mapping[str, Any]) -> ContainerState:
    """Build a `ContainerState` from `docker inspect`'s answer."""
    state = inspected.get("State") or {}
    config = inspected.get("Config") or {}
    return ContainerState(
        container_id=inspected.get("Id", ""),
        status=state.get("Status", ""),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        started_ns=epoch_ns(state.get("StartedAt") or ""),
        stop_signal=config.get("StopSignal") or "SIGTERM",
    )


def event_of(raw: Mapping[str, Any]) -> ContainerEvent | None:
    """Build a `ContainerEvent` from one raw docker event; None if not a VM's."""
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    vm_id = attributes.get(LABEL_VM_ID)
    action = raw.get("Action") or raw.get("status") or ""
    if raw.get("Type") != "container" or not vm_id or ":" in action:  # exec_*, health_status
        return None
    exit_code = attributes.get("exitCode")
    return ContainerEvent(
        vm_id=vm_id,
        container_id=actor.get("ID") or raw.get("id", ""),
        action=action,
        time_ns=int(raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000),
        exit_code=int(exit_code) if exit_code is not None else None,
    )


class EventStream:
    """Docker events of VM containers, as they happen; `close()` from any thread ends it."""

    def __init__(self, stream: Any, engine: DockerEngine) -> None:
        """Wrap the SDK's open stream."""
        self._stream = stream
        self._engine = engine

    def __iter__(self) -> Iterator[ContainerEvent]:
        """Yield events until the stream ends (docker stopped) or is closed.

        Raises:
            DockerUnavailable: the connection broke.
        """
        with self._engine.calling("events"):
            for raw in self._stream:
                event = event_of(raw)
                if event is not None:
                    yield event

    def close(self) -> None:
        """End the stream (its reader sees the end at once). Idempotent."""
        try:
            self._stream.close()
        except (OSError, AttributeError) as error:
            log.debug("closing the docker event stream: %s", error)


class DockerEngine:
    """Blocking calls to one docker engine.

    Args:
        socket: the engine's address, e.g. `unix:///var/run/docker.sock`.
        timeout: seconds a slow call (create, start, pull, restart, remove) may take.
        quick_timeout: seconds any other call may take.
    """

    def __init__(
        self, socket: str, *, timeout: float = CALL_TIMEOUT, quick_timeout: float = QUICK_TIMEOUT
    ) -> None:
        """Make the clients; no I/O."""
        self.socket = socket
        self._api = docker.APIClient(base_url=socket, version=API_VERSION, timeout=timeout)
        self._quick = docker.APIClient(base_url=socket, version=API_VERSION, timeout=quick_timeout)

    @contextmanager
    def calling(self, operation: str) -> Iterator[None]:
        """Turn the SDK's errors into Hostvisor errors that name the runtime."""
        try:
            yield
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise DockerUnavailable(
                runtime=RUNTIME, socket=self.socket, operation=operation, reason=str(error)
            ) from None
        except docker.errors.APIError as error:
            raise DockerFailed(
                runtime=RUNTIME, operation=operation, reason=str(error.explanation or error)
            ) from None
        except ValueError as error:  # an empty or cut answer (the container just went away)
            raise DockerFailed(
                runtime=RUNTIME, operation=operation, reason=f"unreadable answer: {error}"
            ) from None
        except docker.errors.DockerException as error:
            raise DockerUnavailable(
                runtime=RUNTIME, socket=self.socket, operation=operation, reason=str(error)
            ) from None

    def ping(self) -> bool:
        """Whether the engine answers within `PING_TIMEOUT` seconds. Never raises."""
        try:
            response = self._quick.get(f"{self._quick.base_url}/_ping", timeout=PING_TIMEOUT)
        except (requests.exceptions.RequestException, docker.errors.DockerException):
            return False
        return bool(response.ok)

    def launch(self, spec: ContainerSpec) -> ContainerState:
        """Create and start the VM's container; return its state once started.

        Raises:
            VmExists: a container of that VM already exists.
            DockerFailed: docker refused (no such image, bad mount, …).
            DockerUnavailable: docker does not answer.
        """
        with self.calling("create"):
            host_config = self._api.create_host_config(**spec.host_options())
            try:
                created = self._create(spec, host_config)
            except docker.errors.APIError as error:
                if error.status_code == CONFLICT:
                    raise VmExists(vmId=spec.vm_id, runtime=RUNTIME) from None
                raise
        container_id: str = created["Id"]
        try:
            with self.calling("start"):
                self._api.start(container_id)
        except DockerFailed:
            self.remove(container_id)  # leave no container that never ran behind
            raise
        state = self.inspect(container_id)
        return state or ContainerState(container_id=container_id, status="removing")

    def _create(self, spec: ContainerSpec, host_config: Any) -> Any:
        options = spec.container_options()
        try:
            return self._api.create_container(host_config=host_config, **options)
        except docker.errors.ImageNotFound:
            # As `docker run` does: pull a missing image, then create once more.
            log.info("image %s is not here; pulling it", spec.image)
        try:
            self._api.pull(spec.image)
        except docker.errors.APIError as error:
            raise DockerFailed(
                runtime=RUNTIME,
                operation="create",
                reason=f"image {spec.image!r} is not on this host and could not be pulled: "
                f"{error.explanation or error}",
            ) from None
        return self._api.create_container(host_config=host_config, **options)

    def inspect(self, container: str) -> ContainerState | None:
        """Return the container's state; None if it does not exist."""
        with self.calling("inspect"):
            try:
                return state_of(self._quick.inspect_container(container))
            except docker.errors.NotFound:
                return None

    def pause(self, container: str) -> None:
        """Freeze the container's processes (`docker pause`)."""
        with self.calling("pause"):
            self._quick.pause(container)

    def unpause(self, container: str) -> None:
        """Thaw a paused container (`docker unpause`)."""
        with self.calling("unpause"):
            self._quick.unpause(container)

    def kill(self, container: str, signal: str = "SIGKILL") -> None:
        """Send `signal` to the container's main process; returns at once."""
        with self.calling("kill"):
            self._quick.kill(container, signal=signal)

    def restart(self, container: str, timeout: int) -> ContainerState | None:
        """Stop (killing after `timeout` s) and start again; return the new state."""
        with self.calling("restart"):
            self._api.restart(container, timeout=timeout)
        return self.inspect(container)

    def remove(self, container: str) -> None:
        """Kill the container if it runs and delete it; nothing if it is gone."""
        with self.calling("remove"):
            try:
                self._api.remove_container(container, force=True)
            except docker.errors.NotFound:
                return

    def stats(self, container: str) -> dict[str, Any]:
        """One sample of the container's statistics (docker's one-shot stats, ~5 ms)."""
        with self.calling("stats"):
            sample: dict[str, Any] = self._quick.stats(container, stream=False, one_shot=True)
            return sample

    def labelled(self, *, running: bool = False) -> list[Labelled]:
        """Every container that carries our VM label (only running ones if `running`)."""
        with self.calling("list"):
            found = self._quick.containers(
                all=not running, filters={"label": LABEL_VM_ID}, trunc=False
            )
        return [
            Labelled(
                container_id=item["Id"],
                vm_id=item["Labels"][LABEL_VM_ID],
                xml=item["Labels"].get(LABEL_DOMAIN_XML, ""),
                status=item.get("State", ""),
            )
            for item in found
        ]

    def events(self) -> EventStream:
        """Open docker's event stream for VM containers (returns once it is open).

        Raises:
            DockerUnavailable: docker does not answer.
        """
        with self.calling("events"):
            stream = self._quick.events(
                decode=True, filters={"type": "container", "label": LABEL_VM_ID}
            )
        return EventStream(stream, self)
