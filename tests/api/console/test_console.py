"""`hostvisor console`, headless (textual's Pilot), on an embedded host running a real guest.

The console reads the host through its admin socket, as an operator's would. A VM
actor is made busy with real messages (a handler that waits, then messages queued
behind it) so its mailbox depth shows; the kill is pressed as an operator presses it
(`k`, then `y`), and the restart its supervisor makes appears on screen.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import DataTable

from harness.guests import Guests
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.actor import WorkDone
from hostvisor.actors.vm.addresses import vm_path
from hostvisor.api.admin.channel import socket_path
from hostvisor.api.console.app import Channel, Confirm, Console
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOT = os.environ.get("HOSTVISOR_CONSOLE_SCREENSHOT")
"""Where to also save the console's SVG (docs/console.svg is made this way)."""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("guests"), accelerator.domain_type)


@pytest.fixture
def vm_id(host: EmbeddedHost, guests: Guests) -> Iterator[str]:
    """A running guest for one test (destroyed before the test's actors are swept up)."""
    vm, xml = guests.xml("console")
    with host.client() as cli:
        cli.VM.create(vmID=vm, vmParams={"xml": xml})
        wait_for(lambda: cli.VM.getStats(vmID=vm)[0]["status"] == "Up", 60, "the guest up")
        try:
            yield vm
        finally:
            cli.VM.destroy(vmID=vm)


async def until(
    pilot: Pilot[None], condition: Callable[[], Any], what: str, within: float = 20
) -> Any:
    """Let the app run until `condition()` holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await pilot.pause(0.05)
    return value


def label(app: Console, path: str) -> str:
    node = app.nodes.get(path)
    return "" if node is None else str(node.label)


def top_row(app: Console) -> str | None:
    """The actor in the top table's first row."""
    table = app.query_one("#top", DataTable)
    if not table.row_count:
        return None
    key: str | None = table.coordinate_to_cell_key(Coordinate(0, 0)).row_key.value
    return key


def mailbox(app: Console, path: str) -> int:
    """The mailbox depth of `path` in the console's last snapshot."""
    return int((app.actor(path) or {}).get("mailbox_depth", 0))


def hold(host: EmbeddedHost, path: str, queued: int) -> threading.Event:
    """Keep the actor at `path` busy in a handler, with `queued` messages waiting behind it."""
    release = threading.Event()
    started = threading.Event()

    def busy(_outcome: object) -> None:
        started.set()
        release.wait(30)

    ref = host.registry.lookup(path)
    ref.tell(WorkDone(then=busy, outcome=None))
    assert started.wait(10), "the actor did not take the busy message"
    for _ in range(queued):
        ref.tell(WorkDone(then=lambda _outcome: None, outcome=None))
    return release


def test_the_console_shows_the_tree_a_vm_mailbox_and_a_kill(
    host: EmbeddedHost, vm_id: str, tmp_path: Path
) -> None:
    path = vm_path(vm_id)
    channel = Channel(socket_path(host.config.state_dir))

    async def drive() -> None:
        app = Console(channel, interval=0.2)
        async with app.run_test(size=(220, 50)) as pilot:
            await until(pilot, lambda: path in app.nodes, "the VM actor in the tree")
            for branch in ("infra", "hosts", "vms", "storage", "networks", "api"):
                assert branch in app.nodes, branch
            assert "[running]" in label(app, path)

            app.reveal(path)
            detail = await until(
                pilot,
                lambda: app.detail if app.detail and app.detail["path"] == path else None,
                "the VM's detail",
            )
            assert detail["vm"]["status"] in {"Up", "Powering up"}

            release = hold(host, path, queued=5)
            try:
                depth = await until(pilot, lambda: mailbox(app, path) >= 5, "5 messages waiting")
                assert depth
                assert f"mb={mailbox(app, path)}" in label(app, path)
                busy = await until(
                    pilot,
                    lambda: (app.detail or {}).get("busy_seconds"),
                    "the VM busy in its detail",
                )
                assert busy > 0
            finally:
                release.set()
            await until(pilot, lambda: "mb=0" in label(app, path), "the mailbox drained")

            await pilot.press("k")
            await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
            await pilot.press("y")
            await until(pilot, lambda: "r=1" in label(app, path), "the restart in the tree")
            restarted = app.actor(path)
            assert restarted is not None
            assert restarted["restarts"] == 1
            assert "Killed" in restarted["last_restart_reason"]
            await until(pilot, lambda: "[running]" in label(app, path), "the VM actor back")

            await pilot.press("r")  # top by restarts: the killed VM comes first
            assert app.sort_by == "restarts"
            await until(pilot, lambda: top_row(app) == path, "the VM first by restarts")
            screenshots.append(app.export_screenshot())

    screenshots: list[str] = []
    try:
        asyncio.run(drive())
    finally:
        channel.close()
    (tmp_path / "console.svg").write_text(screenshots[0])
    assert screenshots[0].startswith("<svg")
    if SCREENSHOT:
        Path(SCREENSHOT).write_text(screenshots[0])
    with host.client() as cli:  # the guest ran on through its actor's crash
        assert cli.VM.getStats(vmID=vm_id)[0]["status"] in {"Up", "Powering up"}


def test_console_once_json_prints_the_snapshot(host: EmbeddedHost, vm_id: str) -> None:
    argv = [sys.executable, "-m", "hostvisor.api.cli", "console", "--once", "--json"]
    argv += ["--state-dir", str(host.config.state_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    actors = {actor["path"]: actor for actor in snapshot["actors"]}
    assert actors[vm_path(vm_id)]["actor_class"] == "VmActor"
    assert actors["api/admin"]["state"] == "running"
    assert {"workers", "parked", "runs"} <= set(snapshot["scheduler"])
    assert {"workers", "busy", "queued", "done"} <= set(snapshot["work"])
    host_actor = actors["hosts/host"]
    assert host_actor["messages_handled"] > 0
    assert host_actor["latency_p50"] is not None
    assert host_actor["latency_p50"] <= host_actor["latency_p99"]


def test_console_once_without_an_agent_says_so(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "hostvisor.api.cli", "console", "--once", "--json"]
    argv += ["--state-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "no agent on" in done.stderr
