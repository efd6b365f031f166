"""The restart budget: OTP's intensity and period as one pure function."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartBudget:
    """Restart times still inside the window, oldest first.

    A supervisor may restart children at most `intensity` times in any `period`
    seconds; one more restart in the window means the supervisor gives up and
    escalates to its parent.
    """

    intensity: int
    period: float
    restarts: tuple[float, ...] = ()

    def spend(self, now: float) -> RestartBudget | None:
        """Record a restart at `now`.

        Returns:
            The new budget, or None when this restart would exceed the intensity:
            the caller must escalate instead of restarting.
        """
        window_start = now - self.period
        recent = (*(t for t in self.restarts if t > window_start), now)
        if len(recent) > self.intensity:
            return None
        return RestartBudget(self.intensity, self.period, recent)
