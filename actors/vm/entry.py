"""VmEntry: what a VM reports (`hostvisor.actors.guest.entry`), re-exported."""

from __future__ import annotations

from hostvisor.actors.guest.entry import RENDERINGS, VmEntry

__all__ = ["RENDERINGS", "VmEntry"]
