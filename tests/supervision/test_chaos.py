"""A chaos drill: random actors killed for a minute under a client load, on real guests.

An in-process host runs a few halting guests (real QEMU through `qemu:///embed`).
Several clients call what the Engine polls (`Host.getAllVmStats`, `Host.getStats`,
`VM.getStats`, `Host.ping`) in loops, each call with a deadline, while a killer
tells `Kill` to a random registered actor (any but the root) every fraction of a
second, from a fixed seed. Throughout: every call is answered OK or with a clean
error (a VDSM code the Engine retries on, or a connection the API's restart
closed), none hangs. At the end: the tree still runs, every guest is listed and
managed (pause and resume work), and no QEMU was restarted (same pids).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.agent import free_port
from harness.guests import Guests, qemu_pid
from harness.hosts import VM_TEST_SETTINGS
from harness.netns import TestNamespace
from harness.vms import kill_qemu, qemu_alive
from harness.waiting import wait_for
from hostvisor.actors.actor import Kill
from hostvisor.actors.hypervisor.connection import embed_uri
from hostvisor.api.client import CallTimeout, Client, ServerError, connect
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config
from hostvisor.supervision.registry import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.kvm]

DRILL_SECONDS = 60.0
GUESTS = 3
CLIENTS = 4
CALL_TIMEOUT = 45.0
"""A call not answered within this is hung: the API answers every verb polled here
within its 30 s deadline (code 40 past it), whatever happened to the actors."""
STALL = 5.0
"""A call answered later than this is reported (a cheap read that waited on a restart)."""
KILL_PAUSE = (0.2, 0.8)
"""Seconds between two kills, drawn uniformly."""
SEED = 1212
CLEAN = {99, 40}
"""Codes a call may get while actors restart: Recovering, Timeout (both retried)."""


@dataclass
class Tally:
    """What the clients saw, shared by their threads (each update under the lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    """Calls that hung, or were answered with an error no restart excuses."""
    slowest: float = 0.0
    stalls: list[str] = field(default_factory=list)
    """Calls answered after more than `STALL` seconds: when, what, how long, how."""

    def add(self, method: str, outcome: str, seconds: float, bad: str | None = None) -> None:
        with self.lock:
            self.calls[method] += 1
            self.outcomes[outcome] += 1
            self.slowest = max(self.slowest, seconds)
            if seconds > STALL and len(self.stalls) < 20:
                began = time.strftime("%H:%M:%S", time.localtime(time.time() - seconds))
                self.stalls.append(f"{began} {method} {seconds:.1f} s: {outcome}")
            if bad is not None and len(self.bad) < 50:
                self.bad.append(bad)


@pytest.fixture(scope="module")
def netns() -> Iterator[TestNamespace]:
    """The namespace whose network the host manages: restarts touch none of ours."""
    space = TestNamespace(nics=("eth0",), prefix="hvchaos")
    yield space
    space.delete()


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path, netns: TestNamespace
) -> Iterator[EmbeddedHost]:
    docker = tmp_path_factory.mktemp("docker") / "none.sock"
    config = load_config(
        state_dir=tmp_path_factory.mktemp("state"),
        libvirt_uri=embed_uri(embed_root),
        management_port=free_port(),  # fixed: a restarted API listens where it did
        net_namespace=netns.name,
        docker_socket=f"unix://{docker}",
        **VM_TEST_SETTINGS,
    )
    with EmbeddedHost(config) as running:
        yield running


def load(port: int, vm_ids: list[str], stop: threading.Event, tally: Tally) -> None:
    """Call the polled verbs in a loop until `stop`; reconnect when the API closed us."""
    calls = [
        ("Host.getAllVmStats", lambda cli, _vm: cli.Host.getAllVmStats(_timeout=CALL_TIMEOUT)),
        ("Host.getStats", lambda cli, _vm: cli.Host.getStats(_timeout=CALL_TIMEOUT)),
        ("VM.getStats", lambda cli, vm: cli.VM.getStats(vmID=vm, _timeout=CALL_TIMEOUT)),
        ("Host.ping", lambda cli, _vm: cli.Host.ping(_timeout=CALL_TIMEOUT)),
    ]
    cli: Client | None = None
    turn = 0
    while not stop.is_set():
        turn += 1
        method, call = calls[turn % len(calls)]
        vm_id = vm_ids[turn % len(vm_ids)]
        began = time.monotonic()
        try:
            if cli is None:
                cli = connect("127.0.0.1", port, timeout=CALL_TIMEOUT)
            result = call(cli, vm_id)
            took = time.monotonic() - began
            tally.add(method, "ok", took, bad=check(method, result, vm_ids))
        except ServerError as error:
            took = time.monotonic() - began
            excused = error.code in CLEAN
            bad = None if excused else f"{method}: code {error.code} {error.message[:120]}"
            tally.add(method, f"code {error.code}", took, bad)
        except CallTimeout:
            tally.add(method, "hung", time.monotonic() - began, f"{method}: no answer")
        except (OSError, ConnectionError):  # the API's actor restarted: it closed us
            tally.add(method, "closed", time.monotonic() - began)
            if cli is not None:
                cli.close()
            cli = None
            stop.wait(0.1)  # give the restarted API a moment before reconnecting
        except Exception as error:  # noqa: BLE001 - a client-side surprise is a finding
            tally.add(method, "surprise", time.monotonic() - began, f"{method}: {error!r}")
    if cli is not None:
        cli.close()


def check(method: str, result: Any, vm_ids: list[str]) -> str | None:
    """What is wrong with an OK answer (a guest missing from a listing), or None."""
    if method == "Host.getAllVmStats":
        listed = {vm["vmId"] for vm in result}
        if not set(vm_ids) <= listed:
            return f"{method} listed {len(listed & set(vm_ids))} of {len(vm_ids)} guests"
    return None


def kill_randomly(
    host: EmbeddedHost, stop: threading.Event, kills: Counter[str], timeline: list[str]
) -> None:
    """Kill a random registered actor (never the root) every `KILL_PAUSE` seconds.

    Counts kills by branch in `kills`; appends "HH:MM:SS.mmm path" to `timeline`.
    """
    chooser = random.Random(SEED)  # noqa: S311 - a drill's reproducible choice, not a secret
    while not stop.wait(chooser.uniform(*KILL_PAUSE)):
        paths = sorted(path for path in host.registry.paths() if path != ROOT)
        if not paths:
            continue
        path = chooser.choice(paths)
        ref = host.registry.get(path)
        try:
            if ref is None:
                continue
            ref.tell(Kill("chaos"))
        except pykka.ActorDeadError:  # it died (or restarted) since the registry said
            continue
        kills[path.split("/")[0] + ("/*" if "/" in path else "")] += 1
        now = time.time()
        timeline.append(
            f"{time.strftime('%H:%M:%S', time.localtime(now))}.{now % 1:.3f}"[:12] + f" {path}"
        )


def window(hms: str) -> set[str]:
    """The second `hms` (HH:MM:SS) and the two before it."""
    base = time.mktime(time.strptime(f"2000 {hms}", "%Y %H:%M:%S"))
    return {time.strftime("%H:%M:%S", time.localtime(base - back)) for back in range(3)}


def statuses(cli: Client) -> dict[str, str]:
    return {vm["vmId"]: vm["status"] for vm in cli.Host.getAllVmStats()}


@pytest.mark.timeout(240)
def test_random_kills_under_load_lose_no_call_and_no_guest(
    host: EmbeddedHost, embed_root: Path, tmp_path: Path, accelerator: Any
):
    guests = Guests(tmp_path, accelerator.domain_type)
    made = [guests.xml(f"chaos-{i}") for i in range(GUESTS)]
    vm_ids = [vm_id for vm_id, _xml in made]
    pids: dict[str, int] = {}
    try:
        with host.client(timeout=60) as cli:
            for vm_id, xml in made:
                cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
            wait_for(lambda: statuses(cli) == dict.fromkeys(vm_ids, "Up"), 60, "every guest Up")
        pids = {vm_id: qemu_pid(embed_root, f"chaos-{i}", vm_id) for i, vm_id in enumerate(vm_ids)}

        stop = threading.Event()
        tally = Tally()
        kills: Counter[str] = Counter()
        workers = [
            threading.Thread(
                target=load,
                args=(host.config.management_port, vm_ids, stop, tally),
                name=f"load-{n}",
            )
            for n in range(CLIENTS)
        ]
        timeline: list[str] = []
        killer = threading.Thread(
            target=kill_randomly, args=(host, stop, kills, timeline), name="killer"
        )
        for thread in [*workers, killer]:
            thread.start()
        failed = host.runner.wait_failed(DRILL_SECONDS)
        stop.set()
        for thread in [*workers, killer]:
            thread.join(timeout=CALL_TIMEOUT + 10)
        hung_threads = [t.name for t in [*workers, killer] if t.is_alive()]
        restarts = sum(status.restarts.count for status in host.status())
        print(
            f"\nchaos: kills {sum(kills.values())} {dict(kills)}; restarts counted {restarts}; "
            f"calls {dict(tally.calls)}; outcomes {dict(tally.outcomes)}; "
            f"slowest {tally.slowest:.2f} s; stalls {tally.stalls}"
        )
        for stall in tally.stalls:  # what was killed just before each stall began
            began = stall[:8]
            print(f"  {stall}: kills then {[k for k in timeline if k[:8] in window(began)]}")

        assert failed is None, f"the root failed: {failed}"
        assert hung_threads == []
        assert tally.outcomes["ok"] > 0
        assert tally.bad == [], tally.bad
        # The tree runs; every guest is listed, Up, and managed; no QEMU restarted.
        assert host.runner.failed() is None
        with host.client(timeout=60) as cli:
            wait_for(
                lambda: statuses(cli) == dict.fromkeys(vm_ids, "Up"),
                60,
                "every guest listed Up after the drill",
            )
            for vm_id in vm_ids:
                cli.VM.pause(vmID=vm_id)
            wait_for(lambda: statuses(cli) == dict.fromkeys(vm_ids, "Paused"), 30, "all paused")
            for vm_id in vm_ids:
                cli.VM.cont(vmID=vm_id)
            wait_for(lambda: statuses(cli) == dict.fromkeys(vm_ids, "Up"), 30, "all resumed")
        assert {
            vm_id: qemu_pid(embed_root, f"chaos-{i}", vm_id) for i, vm_id in enumerate(vm_ids)
        } == pids
    finally:
        cleanup(host, vm_ids, pids)


def cleanup(host: EmbeddedHost, vm_ids: list[str], pids: dict[str, int]) -> None:
    """Destroy the guests through the API; kill any QEMU left by its pid."""
    try:
        with host.client(timeout=30) as cli:
            for vm_id in vm_ids:
                try:
                    cli.VM.destroy(vmID=vm_id)
                except ServerError:
                    continue
    except (OSError, ConnectionError, CallTimeout):
        pass
    for vm_id, pid in pids.items():
        if qemu_alive(pid, vm_id):
            kill_qemu(pid, vm_id)
