"""The recovery gate: the API answers 99 until the host has recovered.

The host opens it once every resource actor has rebuilt its state from the
source of truth. Reading it is a plain attribute read, cheap on every call.
"""

from __future__ import annotations

import threading


class Gate:
    """Closed at first; opened once, never closed again. Thread-safe."""

    def __init__(self) -> None:
        """Start closed."""
        self._open = threading.Event()

    def open(self) -> None:
        """Let calls through from now on."""
        self._open.set()

    def is_open(self) -> bool:
        """Whether calls are let through."""
        return self._open.is_set()

    def wait_open(self, timeout: float | None = None) -> bool:
        """Block until open or `timeout`; return whether it is open."""
        return self._open.wait(timeout)
