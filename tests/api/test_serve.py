"""`hostvisor serve` as an operator and systemd see it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemons import Daemon

SERVE = [sys.executable, "-m", "hostvisor.api.cli", "serve"]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(60)
    yield sock
    sock.close()


def start_serve(
    tmp_path: Path, *args: str, notify: socket.socket | None = None, state: Path | None = None
) -> Daemon:
    env = dict(os.environ)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.getsockname()
    return Daemon(
        [*SERVE, "--state-dir", str(state or tmp_path / "state"), *args],
        tmp_path / "serve.log",
        env=env,
    )


def wait_message(sock: socket.socket, wanted: str) -> str:
    while True:
        message = sock.recv(4096).decode()
        if wanted in message:
            return message


@pytest.mark.slow
@pytest.mark.libvirt
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_the_tree_and_stops_cleanly_on_a_signal(
    tmp_path, short_dir, notify_socket, signum
):
    daemon = start_serve(tmp_path, notify=notify_socket, state=short_dir)
    try:
        ready = wait_message(notify_socket, "READY=1")
        assert "actors" in ready
        assert "hostvisor is up" in daemon.log_text()
        assert "hypervisor connected: uri=qemu:///embed" in daemon.log_text()
        os.kill(daemon.pid, signum)
        wait_message(notify_socket, "STOPPING=1")
        assert daemon.process.wait(timeout=5) == 0  # Ctrl-C stops within 5 s
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert "hostvisor stopped" in log
    assert "Traceback" not in log


@pytest.mark.slow
@pytest.mark.libvirt
def test_sigusr1_dumps_every_thread_stack_and_every_actor(tmp_path, short_dir, notify_socket):
    daemon = start_serve(tmp_path, notify=notify_socket, state=short_dir)
    try:
        wait_message(notify_socket, "READY=1")
        os.kill(daemon.pid, signal.SIGUSR1)
        daemon.wait_ready(lambda: "end of thread dump" in daemon.log_text(), timeout=10)
        dump = daemon.log_text()
        assert "Thread 'libvirt-events'" in dump
        assert "actor infra/hypervisor (HypervisorActor): running, idle, mailbox 0" in dump
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0


def test_a_bad_config_value_is_a_clear_error(tmp_path):
    conf = tmp_path / "vdsm.conf"
    conf.write_text("[addresses]\nmanagement_port = lots\n[irs]\nunknown_key = 1\n")
    result = subprocess.run(
        [*SERVE, "--config", str(conf)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "management_port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.libvirt
def test_a_tree_that_cannot_start_exits_non_zero(tmp_path):
    conf = tmp_path / "vdsm.conf"
    conf.write_text("[hostvisor]\nlibvirt_uri = test:///no/such/file.xml\n")
    result = subprocess.run(
        [*SERVE, "--config", str(conf), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "the tree failed to start" in result.stderr
    assert "infra/hypervisor" in result.stderr
