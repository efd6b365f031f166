"""Runs one host's tree: start the root, watch it, stop it within a bounded time.

Used by `hostvisor serve` and by the embedded host of the test harnesses alike.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import pykka

from hostvisor.actors.actor import Exit, ExitReason, Link
from hostvisor.actors.errors import StartFailed
from hostvisor.actors.runtime import Runtime
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.registry import ROOT, ActorStatus, Registry, RestartInfo
from hostvisor.supervision.spec import ROOT_FLAGS, ChildSpec, SupervisorFlags
from hostvisor.supervision.supervisor import Supervisor, SupervisorHandle

log = logging.getLogger(__name__)


class TreeRunner:
    """The root supervisor of one host and what became of it.

    Not an actor: it is the process's (or the test's) handle on the tree, used from
    the thread that starts and stops it.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        registry: Registry,
        clock: Clock | None = None,
        runtime: Runtime | None = None,
        flags: SupervisorFlags = ROOT_FLAGS,
    ) -> None:
        """Prepare the root; nothing starts until `start`."""
        self.registry = registry
        self._children = tuple(children)
        self._clock = clock
        self.runtime = runtime or Runtime.make(clock)
        """The clock, timers and workers every actor of this tree shares."""
        self._flags = flags
        self._ref: pykka.ActorRef[Any] | None = None
        self._stopping = False
        self._root_exit: Exit | None = None
        self._root_exited = threading.Event()

    @property
    def root(self) -> SupervisorHandle:
        """A handle on the root supervisor."""
        if self._ref is None:
            raise RuntimeError("the tree is not started")
        return SupervisorHandle(self._ref)

    def start(self, timeout: float) -> None:
        """Start the tree and wait until every child has started (blocking).

        Raises:
            StartFailed: a child failed to start, or the tree took over `timeout` s;
                whatever had started is stopped again.
        """
        link = Link(path=ROOT, notify=self._on_root_exit, runtime=self.runtime)
        self._ref = Supervisor.spawn(
            link,
            flags=self._flags,
            children=self._children,
            registry=self.registry,
            clock=self._clock,
        )
        try:
            link.started.get(timeout=timeout)
        except pykka.Timeout:
            self.stop(timeout)
            raise StartFailed(child=ROOT, reason=f"tree not up after {timeout} s") from None
        self.registry.register(
            ROOT, self._ref, stats=link.stats, parent=None, restarts=RestartInfo()
        )

    def stop(self, timeout: float) -> bool:
        """Stop the tree in reverse order; return False if it did not stop in `timeout` s.

        Idempotent. Guests are not touched: actors release resources, never guests.
        """
        self._stopping = True
        ref = self._ref
        if ref is None:
            return True
        try:
            ref.stop(block=True, timeout=timeout)
        except pykka.Timeout:
            log.error("the tree did not stop within %s s; abandoning it", timeout)  # noqa: TRY400
            return False
        finally:
            self.registry.unregister(ROOT, ref)
        return True

    def wait_failed(self, timeout: float | None = None) -> Exit | None:
        """Block until the root exits without having been asked to; return its exit."""
        if self._root_exited.wait(timeout) and not self._stopping:
            return self._root_exit
        return None

    def failed(self) -> Exit | None:
        """Return the root's exit if it died on its own (escalation), else None."""
        return None if self._stopping else self._root_exit

    def snapshot(self) -> tuple[ActorStatus, ...]:
        """Return the status of every actor in the tree, depth first."""
        return self.registry.snapshot()

    def _on_root_exit(self, notice: Exit) -> None:
        """Runs in the root's thread as it ends."""
        self._root_exit = notice
        if not self._stopping:
            level = logging.ERROR if notice.reason is not ExitReason.NORMAL else logging.WARNING
            log.log(
                level,
                "supervisor report: supervisor=/ event='root exited' reason=%s error=%s",
                notice.reason.value,
                notice.error,
            )
        self._root_exited.set()
