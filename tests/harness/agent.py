"""A real `hostvisor serve` process on one state directory, restartable, killed by pid.

Tests of recovery run the agent as its own process so that `kill -9` is real: what
outlives it (guests, mounts, files) is what a restarted agent must adopt.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from harness.daemons import Daemon
from hostvisor.api.client import ServerError, connect

SERVE = [sys.executable, "-m", "hostvisor.api.cli", "serve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Agent:
    """`hostvisor serve` on one state directory, restartable; killed or stopped by pid."""

    def __init__(self, directory: Path, **settings: str) -> None:
        """Write the agent's config; `settings` are more `[hostvisor]` keys."""
        self.directory = directory
        self.state_dir = directory / "state"
        self.port = free_port()
        self.config = directory / "vdsm.conf"
        extra = "".join(f"{key} = {value}\n" for key, value in settings.items())
        self.config.write_text(
            "[vars]\nvm_sample_interval = 0.5\nhost_sample_stats_interval = 1\n"
            f"[addresses]\nmanagement_port = {self.port}\n"
            f"[hostvisor]\nvm_powering_up_seconds = 0\n{extra}"
        )
        self.runs: list[Daemon] = []

    @property
    def embed_root(self) -> Path:
        return self.state_dir / "libvirt"

    def start(self, env: dict[str, str] | None = None) -> Daemon:
        """Start the agent; `env` adds to (or overrides) this process's environment."""
        argv = [*SERVE, "--config", str(self.config), "--state-dir", str(self.state_dir)]
        log = self.directory / f"serve-{len(self.runs)}.log"
        daemon = Daemon(argv, log, env={**os.environ, **(env or {})})
        self.runs.append(daemon)
        return daemon

    def start_ready(self, env: dict[str, str] | None = None, timeout: float = 60.0) -> Daemon:
        """Start the agent; return once it answers Host.ping (failing early if it exits)."""
        daemon = self.start(env)
        daemon.wait_ready(lambda: self.call("Host.ping")[0] == "ok", timeout=timeout)
        return daemon

    def call(self, method: str, **params: Any) -> tuple[str, Any]:
        """One call on a new connection: ("ok", result), ("error", code) or ("down", why)."""
        try:
            with connect("127.0.0.1", self.port, timeout=10) as cli:
                namespace, verb = method.split(".")
                return "ok", getattr(getattr(cli, namespace), verb)(**params)
        except ServerError as error:
            return "error", error.code
        except OSError as error:
            return "down", repr(error)

    def stop_all(self) -> None:
        for daemon in self.runs:
            daemon.stop()


def kill9(daemon: Daemon) -> None:
    """SIGKILL an agent this test started, and wait for it (a crash, not a stop)."""
    os.kill(daemon.pid, signal.SIGKILL)
    assert daemon.process.wait(timeout=10) == -signal.SIGKILL


def gated_qemu_img(directory: Path, verb: str = "create") -> tuple[Path, dict[str, str]]:
    """A FIFO, and an environment whose `qemu-img <verb>` waits for a line on it.

    With "create", a volume creation stops exactly between its ILLEGAL metadata and
    its data; with "convert", a copy stops after its destination was laid out, before
    any data: a kill lands there every time; writing a line to the FIFO lets it go on.
    """
    gate = directory / f"{verb}-gate"
    os.mkfifo(gate)
    real = shutil.which("qemu-img")
    assert real is not None
    wrapper = directory / "bin" / "qemu-img"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\nif [ "$1" = {verb} ]; then read _ < "{gate}"; fi\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    return gate, {"PATH": f"{wrapper.parent}:{os.environ['PATH']}"}
