"""README.md, "Your first VM": its commands, as written, against a real `hostvisor serve`.

The commands are read from README.md between the `first-vm commands` markers, so the
docs and this test cannot drift apart. Two things differ from a newcomer's terminal:
the agent listens on a free port instead of `make run`'s 54321 (`-p PORT` is added to
each `vdsm-client`, with `--insecure` so that VDSM PKI files on the machine do not
matter), and `.venv/bin/` is this interpreter's bin directory (tox has no `.venv`).
Without /dev/kvm the guest runs under TCG, as the README says to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import Daemon
from harness.waiting import wait_for
from hostvisor.api.client import connect

pytestmark = [pytest.mark.slow, pytest.mark.kvm, pytest.mark.libvirt]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE = "docs/examples/first-vm.xml"
BEGIN = "<!-- first-vm commands"
END = "<!-- end of first-vm commands -->"
VM_ID = "6f1d3c52-8a0e-4b7f-9c2d-2a4e5b6c7d80"
SERVE = [sys.executable, "-m", "hostvisor.api.cli", "serve"]


def readme_commands() -> list[str]:
    """The lines of the shell block between the markers (comments and blanks left out)."""
    text = README.read_text()
    assert BEGIN in text, f"README.md lost its {BEGIN!r} marker"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    fenced = block.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in fenced.splitlines() if line.strip() and not line.startswith("#")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Agent:
    """`hostvisor serve` on a free port and its own state directory, stopped by pid."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        config = directory / "vdsm.conf"
        config.write_text(f"[addresses]\nmanagement_port = {self.port}\n")
        argv = [*SERVE, "--config", str(config), "--state-dir", str(directory / "state")]
        self.daemon = Daemon(argv, directory / "serve.log", env=dict(os.environ))
        self.daemon.wait_ready(lambda: "hostvisor is up" in self.daemon.log_text(), timeout=90)

    def statuses(self) -> dict[str, str]:
        with connect("127.0.0.1", self.port, timeout=10) as cli:
            return {vm["vmId"]: vm["status"] for vm in cli.Host.getVMList(onlyUUID=False)}


@pytest.fixture
def agent(short_dir: Path) -> Iterator[Agent]:
    # A short directory: QEMU's monitor socket path under it must fit in 107 bytes.
    running = Agent(short_dir)
    try:
        yield running
    finally:
        assert running.daemon.stop() == 0
        assert "Traceback" not in running.daemon.log_text()


def _as_run_here(command: str, agent: Agent, example: str) -> str:
    client = f"{Path(sys.executable).parent}/vdsm-client -p {agent.port} --insecure"
    return command.replace(".venv/bin/vdsm-client", client).replace(EXAMPLE, example)


def _run(command: str) -> Any:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{command}\nexit {done.returncode}: {done.stderr}"
    assert done.stderr == "", done.stderr
    return json.loads(done.stdout)


def _verb(command: str) -> str:
    words = command.split("vdsm-client", 1)[1].split()
    if words[:2] == ["-f", "-"]:
        words = words[2:]
    return " ".join(words[:2])


def test_readme_block_is_the_first_vm_walkthrough():
    commands = readme_commands()

    assert [_verb(line) for line in commands] == [
        "VM create",
        "Host getVMList",
        "VM getStats",
        "VM pause",
        "VM cont",
        "VM destroy",
        "Host getVMList",
    ]
    assert f"< {EXAMPLE} |" in commands[0]
    assert all(f"vmID={VM_ID}" in line for line in commands[2:6])
    assert f"<uuid>{VM_ID}</uuid>" in (ROOT / EXAMPLE).read_text()


def test_the_readme_first_vm_commands_work_as_written(
    agent: Agent, accelerator: Any, tmp_path: Path
):
    example = EXAMPLE
    if accelerator.domain_type != "kvm":  # the README's TCG variant of the same file
        example = str(tmp_path / "first-vm.xml")
        Path(example).write_text((ROOT / EXAMPLE).read_text().replace("type='kvm'", "type='qemu'"))
    commands = [_as_run_here(line, agent, example) for line in readme_commands()]

    created = _run(commands[0])
    assert created["vmId"] == VM_ID
    assert created["status"] == "WaitForLaunch"
    # A newcomer reads the answer before typing on; libvirt starts the guest meanwhile.
    status = wait_for(
        lambda: (s := agent.statuses().get(VM_ID)) not in {None, "WaitForLaunch"} and s,
        30,
        "the guest to start",
    )
    assert status in {"Powering up", "Up"}, status

    assert _run(commands[1]) == [{"vmId": VM_ID, "status": status}]
    stats = _run(commands[2])
    assert [entry["vmId"] for entry in stats] == [VM_ID]
    assert stats[0]["vmName"] == "first-vm"
    assert stats[0]["status"] == status
    assert _run(commands[3]) == {"vmList": {}}
    assert agent.statuses() == {VM_ID: "Paused"}
    assert _run(commands[4]) == {"vmList": {}}
    assert agent.statuses()[VM_ID] in {"Powering up", "Up"}
    assert _run(commands[5]) is True
    assert _run(commands[6]) == []
