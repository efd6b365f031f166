"""Clocks a supervisor reads its restart window from: those of `hostvisor.actors.clock`.

Re-exported here because supervision's users (the tree, tests) name them from here.
"""

from __future__ import annotations

from hostvisor.actors.clock import Clock, ManualClock, MonotonicClock

__all__ = ["Clock", "ManualClock", "MonotonicClock"]
