"""Start a daemon for a test and stop it by the pid the test started — never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest


class Daemon:
    """A process a test started, with its log file.

    Stopping sends SIGTERM to that pid, waits, then SIGKILL: nothing else is touched.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until `ready()` holds, failing early (with the log) if the daemon exits.

        Polls `ready` while waiting on the process itself, so a dead daemon ends the
        wait at once instead of after the whole timeout.
        """
        deadline_steps = max(1, int(timeout / 0.05))
        for _ in range(deadline_steps):
            if ready():
                return
            try:
                self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"{self.argv[0]} exited with {self.process.returncode}:\n{self.log_text()}")
        pytest.fail(f"{self.argv[0]} not ready after {timeout} s:\n{self.log_text()}")

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the daemon by its pid; return its exit status."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def running(argv: Sequence[str], log_path: Path, **kwargs: object) -> Iterator[Daemon]:
    """Run a daemon for the length of a `with` block, then stop it by its pid."""
    daemon = Daemon(argv, log_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield daemon
    finally:
        daemon.stop()
