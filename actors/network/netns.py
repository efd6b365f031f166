"""A worker thread that lives in a network namespace and runs blocking netlink work there.

The agent manages one network namespace: its own (the default), or one named in the
config (`[hostvisor] net_namespace`), which is how tests run a whole host against a
namespace they made. A namespace is a property of a thread: this worker's thread
enters the namespace once (`setns`), opens its netlink socket there, and from then
on runs the functions it is given, one at a time, in order. Everything it opens
(netlink and ethtool sockets, /proc/sys/net files) belongs to that namespace. Only
/sys/class/net does not follow a thread's namespace, so readers here use netlink.

Actors never call netlink in their own thread: they `submit` a function and get a
`CallbackFuture`, which they turn into a message to themselves.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.network.errors import NamespaceMissing

log = logging.getLogger(__name__)

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")


def namespace_path(netns: str | None) -> Path:
    """Return the file that names `netns` (this process's own namespace for None)."""
    return Path("/proc/self/ns/net") if not netns else NETNS_DIR / netns


def namespace_identity(netns: str | None) -> str:
    """Return an id that changes when the namespace is made anew (its inode), or ""."""
    try:
        return str(namespace_path(netns).stat().st_ino)
    except OSError:
        return ""


_STOP: Any = object()


class NamespaceWorker:
    """One thread in `netns` (None: the process's own) running submitted work in order.

    `submit(fn)` queues `fn(ipr)`, where `ipr` is the thread's own pyroute2 `IPRoute`,
    and returns a future of its result. The thread starts at once; if it cannot
    enter the namespace, every submitted function fails with `NamespaceMissing`.
    """

    def __init__(self, netns: str | None, name: str) -> None:
        """Start the thread; it enters `netns` before running anything."""
        self.netns = netns or None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # owns a thread: setns() moves the calling thread into the namespace, for good
        self._thread = threading.Thread(target=self._run, name=f"netns:{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[IPRoute], T]) -> CallbackFuture:
        """Queue `fn(ipr)` for the namespace thread; return a future of its result."""
        future = CallbackFuture()
        self._queue.put((fn, future))
        return future

    def run(self, fn: Callable[[IPRoute], T], timeout: float) -> T:
        """Run `fn(ipr)` in the namespace and wait for it (blocking, at most `timeout`)."""
        result: T = self.submit(fn).get(timeout=timeout)
        return result

    def stop(self) -> None:
        """Let the thread finish what is queued, then end; returns at once."""
        self._queue.put(_STOP)

    def join(self, timeout: float) -> bool:
        """Wait (blocking, at most `timeout`) for the thread to end; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            if self.netns is not None:
                pyroute2_netns.setns(self.netns, flags=0)
            ipr = IPRoute()
        except OSError as error:
            log.error("cannot enter network namespace %s: %s", self.netns, error)  # noqa: TRY400
            self._fail_all(NamespaceMissing(netns=self.netns, reason=str(error)))
            return
        try:
            self._serve(ipr)
        finally:
            ipr.close()

    def _serve(self, ipr: IPRoute) -> None:
        while (item := self._queue.get()) is not _STOP:
            fn, future = item
            try:
                result = fn(ipr)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting actor
                future.set_exception(exc_info=(type(error), error, error.__traceback__))
            else:
                future.set(result)

    def _fail_all(self, error: NamespaceMissing) -> None:
        while (item := self._queue.get()) is not _STOP:
            _fn, future = item
            future.set_exception(exc_info=(NamespaceMissing, error, None))
