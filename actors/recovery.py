"""The recoverer: a branch's dynamic children are re-adopted whenever the branch starts.

A dynamic supervisor (VMs, containers, storage domains) comes back empty after it
restarts — OTP's convention. So each such branch is `rest_for_one`: first the
dynamic supervisor, last a `Recoverer`. Whenever the branch starts — with the host,
after a crash of the recoverer, after the dynamic supervisor restarted, after the
branch escalated and was restarted whole — the recoverer starts again, re-reads the
source of truth (libvirt, docker, the storage mounts) and starts one child per
resource that has no actor. Nothing about a guest is touched.

    branch start ──> Recoverer.on_start ──tell──> Recover
                     Recover: recover() (blocks this actor only) ──> report(branch, n)

Recovery runs on the recoverer's own thread: nobody asks it anything, so blocking it
costs nothing else. A `recover()` that raises crashes the recoverer, and the branch's
supervisor restarts it (and retries) within its restart budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.actor import Actor

log = logging.getLogger(__name__)

RECOVERER_ID = "recoverer"
"""The recoverer's child id in its branch (`<branch>/recoverer`)."""


def recovering(stats_handled: int) -> bool:
    """Whether a recoverer that has handled `stats_handled` messages is still recovering.

    Its first message is its `Recover`, counted once handled: 0 means the branch
    started and has not yet re-adopted its resources. Pure; any thread.
    """
    return stats_handled == 0


@dataclass(frozen=True, slots=True)
class Recover:
    """Tell (to itself, at start): re-adopt the branch's resources now."""


class Recoverer(Actor):
    """Re-adopts a branch's resources from their source of truth on every start.

    Args:
        branch: the branch's name, as reported.
        recover: re-reads the source of truth and starts the missing children;
            returns how many it adopted. Blocks; runs on this actor's thread.
        report: told `(branch, adopted)` after each recovery.
        what: what the branch recovers, for the log ("VMs").
    """

    def __init__(
        self,
        *,
        branch: str,
        recover: Callable[[], int],
        report: Callable[[str, int], None],
        what: str = "resources",
    ) -> None:
        """Keep the callables; nothing runs before `on_start`."""
        super().__init__()
        self._branch = branch
        self._recover = recover
        self._report = report
        self._what = what
        self.recoveries = 0

    def on_start(self) -> None:
        """Schedule the recovery (the branch's start does not wait for it)."""
        self.actor_ref.tell(Recover())

    def on_receive(self, message: Any) -> Any:
        """Handle `Recover`: run the recovery, report it."""
        if isinstance(message, Recover):
            started = self.clock.monotonic()
            adopted = self._recover()
            self.recoveries += 1
            log.info(
                "%s: recovered %d %s in %.2f s",
                self._branch,
                adopted,
                self._what,
                self.clock.monotonic() - started,
            )
            self._report(self._branch, adopted)
            return adopted
        raise TypeError(f"{self.path} got an unknown message {message!r}")
