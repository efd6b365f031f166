"""VM statuses and exits: the guest model's (`hostvisor.actors.guest.status`), re-exported."""

from __future__ import annotations

from hostvisor.actors.guest.status import (
    EXIT_MESSAGES,
    Exit,
    ExitCode,
    ExitReason,
    PauseCode,
    VmStatus,
)

__all__ = ["EXIT_MESSAGES", "Exit", "ExitCode", "ExitReason", "PauseCode", "VmStatus"]
