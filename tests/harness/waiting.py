"""Waiting on a condition in tests: poll it, fail with what was awaited after a deadline.

Every wait in the tests goes through here. The step is short polling of the thing
the test observes (an API answer, a file, a process), never a sleep standing in for
an event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll `condition` until it returns a true value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
    return value
