"""ContainerActor: one VM that runs as a docker container, reported as any other VM.

Docker is the source of truth: the container carries the VM id and its domain XML
in labels (`spec`), so a new ContainerActor either launches the container (VM.create)
or, after any restart, reads it back (`recover=True`). It never blocks on docker:
every call runs on the work facility and comes back as a message, so a hung docker
engine only makes this VM's operations time out.

It answers the VM verbs through the same method names as a VmActor (`pause`,
`cont`, `reset`, `shutdown`, `destroy` return a future that settles when docker
has done the work; `info`, `stats`, `brief`, `definition`), and posts a `VmEntry`
to the VM board after each change, so listings show it with the KVM guests. Any
other VM operation (migrate, snapshot, hotplug…) is refused with code 75, naming
the runtime.

What it hears:
- `ContainerEvent`s from docker's event stream (start, die, pause, unpause, oom,
  destroy), told by the docker watcher;
- `EngineReconnected` when that stream opens again (docker restarted): events were
  missed, so it re-inspects its container and reports what docker says now, e.g.
  Down with the exit status of a container that died meanwhile; `EngineLost` while
  docker does not answer (monitorResponse -1);
- `Sampled` from the container stats sampler.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.container import lifecycle
from hostvisor.actors.container.engine import ContainerEvent, ContainerState, DockerEngine
from hostvisor.actors.container.spec import RUNTIME, ContainerSpec
from hostvisor.actors.container.stats import ContainerSample, CpuLimits, container_stats
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.guest.actor import GuestActor, ShutdownTimedOut
from hostvisor.actors.guest.model import Publish, TellBoard, no_board
from hostvisor.actors.guest.status import Exit, ExitReason, PauseCode, VmStatus
from hostvisor.actors.vm import domxml

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContainerServices:
    """What every ContainerActor of a host reaches outside itself.

    Attributes:
        engine: returns the host's docker engine (an ask to the docker actor).
        publish: sends an event up to the event bus (never blocks).
        board: tells the board a VM's entries (a `Post` or a `Forget`).
    """

    engine: Callable[[], DockerEngine]
    publish: Publish
    board: TellBoard = no_board


@dataclass(frozen=True, slots=True)
class Inspected:
    """What docker inspect said (a refresh's outcome); `error` if it failed."""

    seq: int
    state: ContainerState | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EngineReconnected:
    """Tell (from the docker watcher): the event stream is open again; re-read docker."""


@dataclass(frozen=True, slots=True)
class EngineLost:
    """Tell (from the docker watcher): docker's event stream ended; docker is not answering."""


@dataclass(frozen=True, slots=True)
class Sampled:
    """Tell (from the container sampler): this container's stats; None if it had none."""

    sample: ContainerSample | None


class ContainerActor(GuestActor):
    """Owns one container VM. Runs in its own thread; docker calls run on the work facility.

    Args:
        spec: the VM's container settings (and its domain XML).
        services: the host's docker engine, event bus and board.
        recover: adopt the existing container instead of launching one.
        hint: docker's word for the adopted container's state, from the listing that
            found it (`running`, `paused`, …): reported until the first inspect is in.
        powering_up: seconds a started VM reports "Powering up" (VDSM: 60).
        operation_timeout: seconds after which an operation still running makes the
            VM report monitorResponse -1.
    """

    guest_runtime = RUNTIME

    def __init__(
        self,
        *,
        spec: ContainerSpec,
        services: ContainerServices,
        recover: bool = False,
        hint: str | None = None,
        powering_up: float = 60.0,
        operation_timeout: float = 30.0,
    ) -> None:
        """Remember the VM; launch or recover in `on_start`."""
        super().__init__(
            vm_id=spec.vm_id,
            described=domxml.describe(spec.domain),
            xml=spec.domain.xml,
            publish=services.publish,
            board=services.board,
            powering_up=powering_up,
            operation_timeout=operation_timeout,
        )
        self.spec = spec
        self._services = services
        self._recover = recover
        self._hint = hint
        self._container = spec.name  # docker's id once known
        self._container_id: str | None = None
        self._stop_signal = "SIGTERM"
        self._run_started_ns = 0  # docker's start of the current run
        self._stop_requested = False
        self._shutdown_attempt = 0
        self._oom = False
        self._resets = 0  # restarts in flight: their die/start are not news
        self._refresh_ids = itertools.count(1)
        self._applied_refresh = 0
        self._last_sample: ContainerSample | None = None
        quota = spec.cpu_quota // max(1, spec.domain.vcpus) if spec.cpu_quota else -1
        self._cpu = CpuLimits(vcpus=spec.domain.vcpus, period=spec.cpu_period, quota=quota)

    # -- life ---------------------------------------------------------------------------

    def on_start(self) -> None:
        """Start reading the existing container back, or launching one (returns at once)."""
        if self._recover:
            hinted = lifecycle.status_of(self._hint or "")
            if hinted not in (VmStatus.DOWN, VmStatus.WAIT_FOR_LAUNCH):  # Down needs its exit
                self.guest.set_status(hinted, publish=False)
            self._refresh()
        else:
            self._launch()
        self.guest.post()

    def _launch(self) -> None:
        spec = self.spec
        engine = self._services.engine
        self.operation(
            "launch", lambda: engine().launch(spec), then=self._apply, failed=self._launch_failed
        )

    def _launch_failed(self, error: BaseException) -> None:
        if self.guest.status is VmStatus.WAIT_FOR_LAUNCH:
            self.guest.go_down(lifecycle.launch_failed(str(error)))

    # -- messages -----------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle docker events, finished operations, refreshes, samples and timers."""
        match message:
            case ContainerEvent():
                self._on_event(message)
            case Sampled(sample):
                self._on_sample(sample)
            case EngineReconnected():
                self.guest.responsive()
                self._refresh()
            case EngineLost():
                self.guest.unresponsive()
            case ShutdownTimedOut(attempt):
                self._on_shutdown_timeout(attempt)
            case _:
                return super().on_receive(message)
        return None

    def _on_event(self, event: ContainerEvent) -> None:
        if self._container_id is not None and event.container_id != self._container_id:
            return  # another container with our label (one left from before): not ours
        action, guest = event.action, self.guest
        if action == "start" and event.time_ns > self._run_started_ns:
            self._run_started_ns = event.time_ns
            self.mark_started(self.clock.monotonic())
            if guest.status is VmStatus.WAIT_FOR_LAUNCH and not self._resets:
                guest.set_status(VmStatus.UP)
        elif action == "pause" and guest.running:
            guest.set_status(VmStatus.PAUSED)
        elif action == "unpause" and guest.status is VmStatus.PAUSED:
            guest.set_status(VmStatus.UP)
        elif action == "oom":
            self._oom = True
        elif action == "die" and self._is_news(event):
            guest.go_down(
                lifecycle.exit_of(
                    event.exit_code or 0, requested=self._stop_requested, oom=self._oom
                )
            )
        elif action == "destroy" and not guest.down and not self._resets:
            guest.go_down(lifecycle.gone(self._stop_requested))

    def _is_news(self, die: ContainerEvent) -> bool:
        """Whether a `die` ends the current run (not a restart's, nor an earlier run's)."""
        return not self.guest.down and not self._resets and die.time_ns >= self._run_started_ns

    def _apply(self, state: ContainerState | None, *, publish: bool = True) -> None:
        """Report what docker inspect says of the container (Down stays Down)."""
        guest = self.guest
        guest.changed()
        if state is None:
            if not guest.down:
                guest.go_down(lifecycle.gone(self._stop_requested), publish=publish)
            return
        self._container = self._container_id = state.container_id
        self._stop_signal = state.stop_signal
        if guest.down:
            return
        if state.started_ns > self._run_started_ns:
            self._run_started_ns = state.started_ns
            clock = self.clock
            ran_for = max(0.0, clock.time() - state.started_ns / 1e9)
            self.mark_started(clock.monotonic() - ran_for)
        if self._resets:
            # A restart is in flight (a reboot can be asked before the launch's own
            # inspect is back): that inspect shows the run being restarted, and the
            # restart reports the outcome when it is done.
            return
        status = lifecycle.status_of(state.status)
        if status is VmStatus.DOWN:
            guest.go_down(
                lifecycle.exit_of_state(state, requested=self._stop_requested), publish=publish
            )
        elif status is not VmStatus.WAIT_FOR_LAUNCH and guest.status is not VmStatus.POWERING_DOWN:
            guest.set_status(status, publish=publish)

    def _refresh(self) -> None:
        """Inspect the container on a worker; the answer comes back as `Inspected`."""
        seq = next(self._refresh_ids)
        container, engine = self._container, self._services.engine

        def run() -> Inspected:
            try:
                return Inspected(seq, engine().inspect(container))
            except HostvisorError as error:
                return Inspected(seq, None, str(error))

        def then(outcome: Inspected | BaseException) -> None:
            if isinstance(outcome, BaseException):
                raise outcome  # not docker's refusal (those are Inspected): a bug, crash
            self._on_inspected(outcome)

        self.run_off(run, then, name="inspect")

    def _on_inspected(self, inspected: Inspected) -> None:
        if inspected.seq < self._applied_refresh:
            return  # an older refresh answered late
        self._applied_refresh = inspected.seq
        self.guest.changed()
        if inspected.error is not None:
            log.warning("VM %s: docker inspect failed: %s", self.vm_id, inspected.error)
            self.guest.unresponsive()
            return
        if not self._resets:  # a restart in flight reports its own outcome
            self._apply(inspected.state)

    def _on_sample(self, sample: ContainerSample | None) -> None:
        if sample is None:
            self.guest.unresponsive()
            return
        self.guest.sampled(container_stats(sample, self._last_sample, cpu=self._cpu))
        self._last_sample = sample

    # -- operations (asked by the API; each returns a future) ----------------------------

    def pause(self) -> CallbackFuture:
        """Freeze the container (`docker pause`); the status is Paused once it settles."""
        return self._operate("pause", lambda e, c: e.pause(c), then=VmStatus.PAUSED)

    def cont(self) -> CallbackFuture:
        """Thaw a paused container (`docker unpause`); the status is Up once it settles."""
        return self._operate("cont", lambda e, c: e.unpause(c), then=VmStatus.UP)

    def reset(self) -> CallbackFuture:
        """Restart the container at once (SIGKILL, then start), like a reset button."""
        return self._restart("reset", timeout=0)

    def shutdown(
        self, *, timeout: float, reboot: bool = False, force: bool = False
    ) -> CallbackFuture:
        """Send the container its stop signal; after `timeout` seconds kill it, if `force`.

        Without `force` a container that ignores its stop signal keeps running and is
        reported Up again, as a guest that ignores ACPI (VDSM's powerdown).

        With `reboot`, restart it instead (stop signal, `timeout`, start); the
        future settles once the restart is under way, as a guest's reboot does.
        """
        self.guest.require_running("shutdown")
        if reboot:
            self.guest.set_status(VmStatus.REBOOT_IN_PROGRESS)
            self._restart("reboot", timeout=int(timeout))
            under_way = CallbackFuture()
            under_way.set(None)
            return under_way
        self._stop_requested = True
        self._shutdown_force = force
        self._shutdown_attempt += 1
        self.guest.set_status(VmStatus.POWERING_DOWN)
        signal = self._stop_signal
        future = self._operate("shutdown", lambda e, c: e.kill(c, signal))
        self.tell_later(timeout, ShutdownTimedOut(self._shutdown_attempt))
        return future

    def _on_shutdown_timeout(self, attempt: int) -> None:
        if attempt != self._shutdown_attempt or self.guest.status is not VmStatus.POWERING_DOWN:
            return
        if self._shutdown_force:
            log.info("VM %s did not shut down in time; killing its container", self.vm_id)
            self._operate("force off", lambda e, c: e.kill(c, "SIGKILL"))
            return
        log.warning("VM %s did not shut down in time; it keeps running", self.vm_id)
        self._stop_requested = False
        self.guest.set_status(VmStatus.UP)

    def destroy(self) -> CallbackFuture:
        """Kill the container if it runs and delete it. The actor is removed afterwards.

        A VM whose container was never made (its launch failed) needs no docker call.
        """
        self._stop_requested = True
        if self._container_id is None and self.guest.down:
            done = CallbackFuture()
            done.set(None)
            return done
        engine, container = self._services.engine, self._container
        return self.operation(
            "destroy", lambda: engine().remove(container), then=lambda _r: self._destroyed()
        )

    def _destroyed(self) -> None:
        if not self.guest.down:
            self.guest.go_down(Exit.of(ExitReason.ADMIN_SHUTDOWN))

    def _restart(self, op: str, *, timeout: int) -> CallbackFuture:
        self.guest.require_running(op)
        self._resets += 1
        engine, container = self._services.engine, self._container

        def restarted(state: ContainerState | None) -> None:
            self._resets -= 1
            self._apply(state)

        def failed(error: BaseException) -> None:
            # A reboot's caller was answered when it began: say it here, then report
            # whatever docker says the container is now.
            log.warning("VM %s: %s of its container failed: %s", self.vm_id, op, error)
            self._resets -= 1
            self._refresh()

        return self.operation(
            op, lambda: engine().restart(container, timeout), then=restarted, failed=failed
        )

    # -- answers --------------------------------------------------------------------------

    def _extra(self) -> Mapping[str, Any]:
        return {"kvmEnable": "false", "acpiEnable": "false", "pauseCode": PauseCode.NOERR.value}

    # -- helpers --------------------------------------------------------------------------

    def _operate(
        self,
        op: str,
        action: Callable[[DockerEngine, str], Any],
        *,
        then: VmStatus | None = None,
    ) -> CallbackFuture:
        """Run `action(engine, container)` off the actor's thread; then the status is `then`.

        docker's own event says the same, but may come after the answer: setting it
        here means a caller that reads the status right after the verb sees it.
        """
        self.guest.require_running(op)
        engine, container = self._services.engine, self._container

        def done(_result: Any) -> None:
            if then is not None and self.guest.running:
                self.guest.set_status(then)

        return self.operation(op, lambda: action(engine(), container), then=done)
