"""A real sanlock daemon for a test, stopped by the pid the test started.

ENVIRONMENT.md: `sanlock daemon` exits with "cannot set the limits for memlock"
on these machines, which deny raising RLIMIT_MEMLOCK and RLIMIT_RTPRIO even to
root. A tiny LD_PRELOAD library, built here with gcc once per session, makes
`setrlimit` succeed for those two resources; then the daemon runs, with no
watchdog (`-w 0`, there is no wdmd) and no mlockall (`-l 0`).

Each daemon has its own run directory (`SANLOCK_RUN_DIR`, which libsanlock's clients
read too): two test hosts on one machine each run their own daemon, as two real
hosts do. One daemon cannot hold two host ids of one lockspace (sanlock keys a
lockspace by its name), so sharing one daemon between two hosts cannot show
two hosts in one lockspace. A daemon that must open a host's mounts runs inside
that host's mount namespace (`mount_ns_of`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness.components import need
from harness.daemons import Daemon

SHIM = r"""
#define _GNU_SOURCE
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* sanlock raises these two limits at start; these machines refuse both even to root. */
int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim) {
    if (resource == RLIMIT_MEMLOCK || resource == RLIMIT_RTPRIO) return 0;
    return (int)syscall(SYS_prlimit64, 0, resource, rlim, 0);
}
"""

IO_TIMEOUT = 1
"""The I/O timeout tests give sanlock: add_lockspace then takes ~3 s instead of ~21 s."""


def need_sanlock() -> None:
    """Skip (fail under CI=true) unless sanlock, its Python binding and gcc are here."""
    need(shutil.which("sanlock") is not None, "sanlock is not installed (Debian sanlock)")
    need(shutil.which("gcc") is not None, "gcc is needed to build the setrlimit shim")
    try:
        import sanlock  # noqa: F401, PLC0415 - only where python3-sanlock is installed
    except ImportError:
        need(False, "python3-sanlock is not importable (venv without system site packages?)")


def build_shim(directory: Path) -> Path:
    """Build the setrlimit shim into `directory` (once; reused when it is there)."""
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / "setrlimit-shim.so"
    if library.exists():
        return library
    source = directory / "setrlimit-shim.c"
    source.write_text(SHIM)
    building = directory / f".shim-{os.getpid()}.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(building), str(source)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    building.rename(library)
    return library


class Sanlockd:
    """One sanlock daemon with its own run directory; `stop()` kills it by its pid."""

    def __init__(self, directory: Path, shim: Path, *, mount_ns_of: int | None = None) -> None:
        """Start the daemon; wait until its socket answers.

        Args:
            directory: holds the run directory (`run/`) and the daemon's log.
            shim: the setrlimit shim (`build_shim`).
            mount_ns_of: run inside this pid's mount namespace (a test host's).
        """
        self.run_dir = directory / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SANLOCK_RUN_DIR": str(self.run_dir), "LD_PRELOAD": str(shim)}
        argv = ["sanlock", "daemon", "-D", "-w", "0", "-l", "0", "-U", "root", "-G", "root"]
        if mount_ns_of is not None:
            argv = ["nsenter", "-t", str(mount_ns_of), "-m", "--", *argv]
        self.daemon = Daemon(argv, directory / "sanlock.log", env=env)
        self.daemon.wait_ready(self.answers, timeout=30)

    @property
    def pid(self) -> int:
        """The daemon's pid (nsenter execs it: the same process)."""
        return self.daemon.pid

    @property
    def socket(self) -> Path:
        return self.run_dir / "sanlock.sock"

    def answers(self) -> bool:
        """Whether `sanlock client status` gets an answer from this daemon."""
        if not self.socket.exists():
            return False
        done = subprocess.run(
            ["sanlock", "client", "status"],
            env={**os.environ, "SANLOCK_RUN_DIR": str(self.run_dir)},
            capture_output=True,
            timeout=10,
            check=False,
        )
        return done.returncode == 0

    @contextlib.contextmanager
    def client_env(self) -> Iterator[None]:
        """Make this process's sanlock calls (and children it starts) reach this daemon."""
        before = os.environ.get("SANLOCK_RUN_DIR")
        os.environ["SANLOCK_RUN_DIR"] = str(self.run_dir)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("SANLOCK_RUN_DIR", None)
            else:
                os.environ["SANLOCK_RUN_DIR"] = before

    def client(self, *args: str) -> str:
        """`sanlock client ARGS` against this daemon; its output."""
        done = subprocess.run(
            ["sanlock", "client", *args],
            env={**os.environ, "SANLOCK_RUN_DIR": str(self.run_dir)},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        """Kill the daemon by its pid (a test daemon: its lockspaces are on test files)."""
        self.daemon.stop(timeout=2)
