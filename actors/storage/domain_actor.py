"""StorageDomainActor: one file storage domain, its checks and its serialized writes.

The domain's on-disk metadata is the source of truth (`FileDomain`); this actor
holds nothing a restart could lose except the last health check. Every change to
the domain (metadata, volumes, images) runs on the domain's one writer thread, in
the order asked, so two changes never interleave; reads run on threads of their
own. Neither ever runs on the actor's thread, so a domain on a hung mount still
answers its repo stats (with the last check getting old).

A periodic check (VDSM's domain monitor) reads and validates the metadata and times
it: `Host.getStorageRepoStats` reports its code, delay, lastCheck and validity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from hostvisor.actors.actor import Actor, CallbackFuture
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.storage.errors import StorageError
from hostvisor.actors.storage.filedomain import FileDomain

log = logging.getLogger(__name__)

CHECK_INTERVAL = 10.0
"""VDSM's domain monitor checks every 10 s."""


@dataclass(frozen=True, slots=True)
class Check:
    """Tell (from the ticker): check the domain now."""


@dataclass(frozen=True, slots=True)
class Checked:
    """Tell (from a check's thread): how the check went."""

    at: float  # monotonic
    delay: float
    error: HostvisorError | None
    version: int


class StorageDomainActor(Actor):
    """Owns one storage domain.

    Args:
        domain: the domain on disk.
        check_interval: seconds between health checks.
    """

    def __init__(
        self,
        *,
        domain: FileDomain,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        """Remember the domain; start checking it in `on_start`."""
        super().__init__()
        self.domain = domain
        self._check_interval = check_interval
        self._writer: ThreadPoolExecutor | None = None
        self._checking = False
        self._last: Checked | None = None

    def on_start(self) -> None:
        """Start the writer thread and the periodic check (the first one now)."""
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"sd:{self.domain.sd_uuid}")
        self.tick_every(self._check_interval, Check(), first=0)

    def on_stop(self) -> None:
        """Stop checking; a write in progress finishes on its thread."""
        self._shutdown()

    def on_failure(self, *_exc_info: Any) -> None:
        """Stop checking; the restarted actor starts afresh."""
        self._shutdown()

    def _shutdown(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=False)

    def on_receive(self, message: Any) -> Any:
        """Run checks and record their outcome."""
        match message:
            case Check():
                self._check()
            case Checked():
                self._checking = False
                self._last = message
            case _:
                return super().on_receive(message)
        return None

    # -- work -----------------------------------------------------------------------------

    def where(self) -> Path:
        """The domain's directory."""
        return self.domain.path

    def write(self, op: str, work: Callable[[FileDomain], Any]) -> CallbackFuture:
        """Run `work(domain)` after every change asked before it; settle with its result."""
        future = CallbackFuture()
        assert self._writer is not None  # noqa: S101 - set in on_start
        self._writer.submit(_settle, future, op, self.domain, work)
        return future

    def read(self, op: str, work: Callable[[FileDomain], Any]) -> CallbackFuture:
        """Run `work(domain)` on a thread of its own; settle with its result."""
        future = CallbackFuture()
        threading.Thread(
            target=_settle,
            args=(future, op, self.domain, work),
            name=f"sd:{self.domain.sd_uuid}:{op}",
            daemon=True,
        ).start()
        return future

    # -- health -----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._checking:
            return  # the last check still hangs: its age shows in lastCheck
        self._checking = True
        ref = self.actor_ref
        domain = self.domain

        def check() -> None:
            started = time.monotonic()
            error: HostvisorError | None = None
            version = 0
            try:
                domain.validate()
                version = int(domain.metadata().get("VERSION", "0"))
            except HostvisorError as failure:
                error = failure
            except OSError as failure:
                error = StorageError(reason=str(failure))
            finished = time.monotonic()
            try:
                ref.tell(
                    Checked(at=finished, delay=finished - started, error=error, version=version)
                )
            except pykka.ActorDeadError:
                return

        threading.Thread(target=check, name=f"sd:{domain.sd_uuid}:check", daemon=True).start()

    def repo_stats(self) -> dict[str, Any]:
        """`Host.getStorageRepoStats`' entry of this domain.

        `acquired` says whether this host holds the domain's host id, which only the
        pool knows: the caller sets it.
        """
        last = self._last
        if last is None:
            return {
                "code": 0,
                "lastCheck": "-1",
                "delay": "0",
                "valid": False,
                "version": -1,
                "acquired": False,
                "actual": False,
            }
        return {
            "code": last.error.code if last.error else 0,
            "lastCheck": f"{time.monotonic() - last.at:.1f}",
            "delay": f"{last.delay:.6f}",
            "valid": last.error is None,
            "version": last.version,
            "acquired": False,
            "actual": True,
        }


def _settle(
    future: CallbackFuture, op: str, domain: FileDomain, work: Callable[[FileDomain], Any]
) -> None:
    try:
        result = work(domain)
    except HostvisorError as error:
        future.set_exception(exc_info=(type(error), error, None))
    except Exception as error:
        log.exception("%s on domain %s failed", op, domain.sd_uuid)
        failure = StorageError(operation=op, reason=f"{type(error).__name__}: {error}")
        future.set_exception(exc_info=(StorageError, failure, None))
    else:
        future.set(result)
