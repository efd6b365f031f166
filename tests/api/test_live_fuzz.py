"""A running agent under a fuzz campaign: it answers everything, and nothing hurts it.

`hostvisor serve` runs as its own process (stopped by its pid), managing a network
namespace of its own (so no hostile `setupNetworks` reaches this machine's links)
and one real halting guest. Thousands of hostile frames and requests go in:
wrong kinds and odd values for every param of every verb the agent declares (from
the verb table, so a new verb is covered without touching this file), hostile
domain XML, lone surrogates in ids, methods and params, deep JSON, batches at and
past the cap, broken STOMP frames (a fixed list and Hypothesis-made streams with a
fixed seed budget) and frames dripped slower than the frame deadline.

Then: the process is alive; every request was answered with a JSON-RPC response
(none -32603, which is a bug), or its connection was closed after an ERROR frame;
a fresh client is served; the log holds no traceback and no actor crash; threads
and RSS are back near where they were after a warm-up (`harness.fuzzcampaign`):
at most `THREAD_SLACK` more threads, besides the work facility's bounded pool (whose
idle workers leave after 30 s, longer than this test waits), and at most
`RSS_SLACK_MIB` MiB more RSS. The numbers are printed and logged.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.agent import Agent
from harness.daemons import Daemon
from harness.engine import RAW, MiB, local_data_center, new_id, succeeded
from harness.fuzzcampaign import Campaign, Meter, log_problems
from harness.fuzzclient import FuzzConnection, request
from harness.guests import Guests
from harness.hostile import BROKEN_FRAMES, SURROGATE, verb_cases, vm_params_cases
from harness.netns import TestNamespace
from harness.vms import kill_qemu, qemu_alive, qemu_pid
from harness.waiting import wait_for
from hostvisor.api.client import Client, connect
from hostvisor.api.embedded import offline_verb_table
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.stomp.frames import encode

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.kvm]

log = logging.getLogger("hostvisor.tests.fuzz")

FRAME_TIMEOUT = 2.0
"""The agent's frame deadline here: a frame dripped slower than this is refused."""
LENIENT = {"send-before-connect", "connect-twice"}
"""Broken streams the agent may take in its stride (as VDSM does): no ERROR, no close."""
DESTRUCTIVE = (
    "delete",
    "destroy",
    "format",
    "detach",
    "deactivate",
    "disconnect",
    "spmstop",
    "teardown",
    "stop",
    "clear",
    "reconstruct",
    "switch",
    "shutdown",
    "reset",
    "remove",
)
"""Verb names fuzzed last, on one connection: odd but valid params really run them on
the real guest and storage the other cases need."""


@pytest.fixture(scope="module")
def netns() -> Iterator[TestNamespace]:
    space = TestNamespace(nics=("eth0",), prefix="hvfuzz")
    yield space
    space.delete()


@pytest.fixture(scope="module")
def agent(netns: TestNamespace, accelerator: Any) -> Iterator[tuple[Agent, Daemon]]:
    """The agent, in a short directory (QEMU's monitor socket paths are short)."""
    directory = Path(tempfile.mkdtemp(prefix="hv-fuzz-", dir="/tmp"))
    agent = Agent(
        directory,
        net_namespace=netns.name,
        docker_socket=f"unix://{directory}/no-docker.sock",
        frame_timeout=str(FRAME_TIMEOUT),
        detect_timeout="2",
    )
    daemon = agent.start()
    try:
        daemon.wait_ready(lambda: agent.call("Host.ping")[0] == "ok", timeout=60)
        yield agent, daemon
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


def destructive(method: str) -> bool:
    """Whether odd but valid params would tear down what the other cases need."""
    return method.split(".")[1].lower().startswith(DESTRUCTIVE)


def verb_requests(table: dict[str, Verb], known: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """Every verb's cases, naming the real guest and storage (`known` ids by wire name).

    Returns the (label, method, params) requests to send first, and those of the
    destructive verbs, to send once the first are answered.
    """
    first: list[Any] = []
    last: list[Any] = []
    vm_id = known["vmID"]
    for method, verb in sorted(table.items()):
        requests = last if destructive(method) else first
        cases = verb_cases(verb, str(uuid.uuid4()), known)
        requests.extend((label, method, params) for label, params in cases)
        if method.startswith("VM.hot") or method in {"VM.migrate", "VM.snapshot"}:
            for label, case in vm_params_cases(vm_id):
                named = {"vmId": vm_id, **case} if isinstance(case, dict) else case
                requests.append((f"params:{label}", method, {"vmID": vm_id, "params": named}))
    return first, last


def real_storage(cli: Client, directory: Path) -> dict[str, str]:
    """A LOCALFS data center with one volume, made the Engine's way; its ids by wire name."""
    dc = local_data_center(directory)
    dc.setup(cli)
    img, vol = new_id(), new_id()
    succeeded(cli, dc.create_volume(cli, img, vol, fmt=RAW, size=MiB))
    ids = dc.ids(img, vol)
    return {**ids, "masterSdUUID": dc.sd, "srcImgUUID": img, "srcVolUUID": vol}


# -- the phases ---------------------------------------------------------------------------


def surrogate_bodies() -> list[tuple[Any, bytes | str]]:
    """Lone surrogates in ids, methods and params, escaped and as raw CESU bytes."""
    bodies: list[tuple[Any, bytes | str]] = []
    for n, (method, params) in enumerate(
        [
            ("Host.ping", {}),
            (f"Host.ping{SURROGATE}", {}),
            (f"{SURROGATE}.{SURROGATE}", {}),
            ("VM.getStats", {"vmID": SURROGATE}),
            ("Host.getVMList", {"vmList": [SURROGATE, "\udfff"]}),
            ("Host.echo", {"message": {SURROGATE: [SURROGATE]}}),
            ("Host.setLogLevel", {"level": SURROGATE, "name": SURROGATE}),
        ]
    ):
        bodies.extend(
            (request_id, json.dumps(request(method, params, request_id)))
            for request_id in (f"s{n}{SURROGATE}", f"s{n}\udfff\ud800x")
        )
    raw = b'{"jsonrpc":"2.0","id":"c\xed\xa0\x80","method":"Host.ping\xed\xb0\x80"}'
    bodies.append(("c\ud800", raw))
    return bodies


def deep_json_bodies() -> list[tuple[Any, bytes | str]]:
    """Bodies nested past any sane depth, and params nested near the decoder's limit."""
    bodies: list[tuple[Any, bytes | str]] = [
        (None, b"[" * 100_000 + b"]" * 100_000),
        (None, b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ]
    for depth in (100, 400, 1000):
        nested = '{"k":[' * depth + '"x"' + "]}" * depth  # built as text: json.dumps recurses
        for method in ("Host.echo", "VM.create", "Host.setupNetworks", "Host.getVMList"):
            request_id = f"deep-{depth}-{method}"
            params = f'{{"message":{nested},"vmParams":{nested},"networks":{nested}}}'
            body = f'{{"jsonrpc":"2.0","id":"{request_id}","method":"{method}","params":{params}}}'
            # Past the decoder's depth the id cannot be read: a parse error, id null.
            bodies.append((request_id if depth < 500 else None, body))
    return bodies


def batch_bodies(table: dict[str, Verb]) -> list[tuple[list[Any], list[Any]]]:
    """Batches: at the cap, past it, far past it, mixed hostile, and not objects."""
    pings = [request("Host.ping", {}, f"b1-{i}") for i in range(1000)]
    methods = sorted(table)
    mixed = []
    for i in range(1000):
        verb = table[methods[i % len(methods)]]
        cases = list(verb_cases(verb, str(uuid.uuid4())))
        mixed.append(request(verb.method, cases[i % len(cases)][1], f"mix-{i}"))
    return [
        ([p["id"] for p in pings], pings),
        ([None], [request("Host.ping", {}, f"over-{i}") for i in range(1001)]),
        ([None], [request("Host.getStats", {}, f"huge-{i}") for i in range(10_000)]),
        ([m["id"] for m in mixed], mixed),
        ([None], [1, "x", None, [], {}] * 20),
        ([None], []),
    ]


def special_bodies(
    port: int, table: dict[str, Verb], internal: list[str]
) -> tuple[int, Counter[int]]:
    """Send the surrogate, deep and batch bodies one after another on one connection.

    Each body is answered before the next goes (a client within its budget). Returns
    how many requests went and the codes that came back; adds to `internal` the id of
    each request answered -32603.
    """
    conn = FuzzConnection(port)
    sent = 0
    try:
        for request_id, body in surrogate_bodies() + deep_json_bodies():
            conn.exchange(body, timeout=30)
            if request_id is not None:
                assert conn.answered(request_id), (request_id, conn.errors)
            sent += 1
        for ids, batch in batch_bodies(table):
            conn.exchange(batch, timeout=60)
            for request_id in ids:
                assert conn.answered(request_id), (request_id, conn.errors)
            sent += max(len(batch), 1)
        assert not conn.closed
        assert conn.errors == []
        assert conn.broken is None
        internal.extend(
            f"special {key}"
            for key, responses in conn.answers.items()
            for response in responses
            if response.get("error", {}).get("code") == -32603
        )
        return sent, conn.codes
    finally:
        conn.close()


def broken_streams(port: int) -> dict[str, str]:
    """Each broken stream on a fresh socket; return what the server did with each."""
    outcomes: dict[str, str] = {}
    for label, data in BROKEN_FRAMES:
        outcomes[label] = send_and_watch(port, data)
    return outcomes


def send_and_watch(port: int, data: bytes) -> str:
    """Send `data` on a fresh socket; return "[error+]close" or "[error+]open"."""
    conn = FuzzConnection(port, handshake=False)
    try:
        conn.send_raw(data)
        closed = conn.wait_closed(timeout=FRAME_TIMEOUT + 0.5)
        return ("error+" if conn.errors else "") + ("close" if closed else "open")
    finally:
        conn.close()


# Hypothesis: near-frames from STOMP's own pieces, after a valid CONNECT.
PIECES = st.sampled_from(
    [
        b"SEND\n",
        b"SUBSCRIBE\n",
        b"DISCONNECT\n",
        b"destination:jms.topic.vdsm_requests\n",
        b"reply-to:r\n",
        b"content-length:",
        b"5",
        b"-3",
        b"99999999999",
        b"\n",
        b"\n\n",
        b":",
        b"\\",
        b"\x00",
        b"\xed\xa0\x80",
        b"\xff",
        b'{"jsonrpc":"2.0","id":1,"method":"Host.ping"}',
        b"[",
    ]
)
STREAMS = st.lists(PIECES | st.binary(max_size=8), min_size=1, max_size=24).map(b"".join)
HYPOTHESIS_STREAMS = 60


def hypothesis_streams(port: int) -> Counter[str]:
    """Hypothesis-made streams after a CONNECT, a fixed derandomized budget."""
    outcomes: Counter[str] = Counter()
    connect_frame = encode("CONNECT", {"accept-version": "1.2"})

    @settings(
        max_examples=HYPOTHESIS_STREAMS,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(STREAMS)
    def one(stream: bytes) -> None:
        conn = FuzzConnection(port, handshake=False)
        try:
            conn.send_raw(connect_frame + stream)
            # Either the server refuses it (ERROR, close) or it waits for the rest of a
            # frame: then our close ends it. Either way the reply must be well-formed.
            closed = conn.wait_closed(timeout=0.05)
            assert conn.broken is None, conn.broken
            outcomes[
                "error+close" if closed and conn.errors else "close" if closed else "open"
            ] += 1
        finally:
            conn.close()

    one()
    return outcomes


def dripped_frames(port: int) -> dict[str, Any]:
    """Frames dripped slower than the frame deadline are refused; a quick drip is answered."""
    body = json.dumps(request("Host.ping", {}, "drip")).encode()
    frame = encode("SEND", {"destination": "jms.topic.vdsm_requests", "reply-to": "d"}, body)
    slow = [FuzzConnection(port) for _ in range(3)]
    quick = FuzzConnection(port)
    quick.send_raw(encode("SUBSCRIBE", {"destination": "d", "id": "2"}))
    pause = FRAME_TIMEOUT / 20  # ~40 bytes per deadline: never done in time
    stop = threading.Event()
    drippers = [threading.Thread(target=c.drip, args=(frame, pause, stop)) for c in slow]
    for dripper in drippers:
        dripper.start()
    started = time.monotonic()
    bystander_ms = []
    with connect("127.0.0.1", port, timeout=10) as cli:
        while any(d.is_alive() for d in drippers) and time.monotonic() - started < 15:
            began = time.monotonic()
            assert cli.Host.ping() is True
            bystander_ms.append((time.monotonic() - began) * 1000)
            if all(c.closed for c in slow):
                break
    stop.set()
    for dripper in drippers:
        dripper.join(timeout=10)
    assert quick.drip(frame, 0.0005)
    assert quick.wait_answered(["drip"], timeout=10) == []
    outcome = {
        "slow_closed_with_error": sum(1 for c in slow if c.closed and c.errors),
        "slow_errors": sorted({e for c in slow for e in c.errors}),
        "bystander_max_ms": round(max(bystander_ms, default=0.0), 1),
    }
    for conn in [*slow, quick]:
        conn.close()
    return outcome


@pytest.mark.timeout(240)
def test_a_running_agent_survives_a_fuzz_campaign(
    agent: tuple[Agent, Daemon], tmp_path: Path, accelerator: Any
):
    serve, daemon = agent
    table = dict(offline_verb_table().verbs)
    vm_id, xml = Guests(tmp_path, accelerator.domain_type).xml("fuzzed")
    with connect("127.0.0.1", serve.port, timeout=60) as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "the guest up")
        known = real_storage(cli, serve.directory / "local-sd") | {"vmID": vm_id}
    guest_pid = qemu_pid(serve.embed_root, "fuzzed", vm_id)
    try:
        campaign = Campaign(serve.port)
        # Warm-up: every verb once, so lazily made threads and caches exist.
        campaign.run([("warm-up", m, {}) for m in sorted(table) if not destructive(m)])
        meter = Meter(daemon)
        first, last = verb_requests(table, known)
        creates = [(label, "VM.create", {"vmParams": p}) for label, p in vm_params_cases(vm_id)]
        meter.phase("verbs", lambda: campaign.run(first))
        special, special_codes = meter.phase(
            "special", lambda: special_bodies(serve.port, table, campaign.internal)
        )
        meter.phase("vm_create", lambda: campaign.run(creates, 2))
        meter.phase("destructive", lambda: campaign.run(last, 1))
        broken = meter.phase("broken", lambda: broken_streams(serve.port))
        generated = meter.phase("hypothesis", lambda: hypothesis_streams(serve.port))
        dripped = meter.phase("dripped", lambda: dripped_frames(serve.port))

        assert daemon.alive(), daemon.log_text()[-5000:]
        with connect("127.0.0.1", serve.port, timeout=30) as cli:  # a fresh client is served
            assert cli.Host.ping() is True
            assert "cpuCores" in cli.Host.getCapabilities()
            assert vm_id in cli.Host.getVMList() or not qemu_alive(guest_pid, vm_id)
        numbers, problems = meter.settle()
        numbers |= {
            "requests": campaign.sent + special,
            "codes": dict(sorted((campaign.codes + special_codes).items())),
            "slowest_window": campaign.slowest,
            "broken_streams": broken,
            "hypothesis_streams": dict(generated),
            "dripped": dripped,
        }
        log.warning("fuzz campaign: %s", numbers)
        print(f"\nfuzz campaign: {numbers}")
        problems += campaign_problems(campaign, broken, dripped, daemon.log_text())
        assert problems == []
    finally:
        kill_qemu(guest_pid, vm_id)
        (tmp_path / "agent.log").write_text(daemon.log_text())


def campaign_problems(
    campaign: Campaign, broken: dict[str, str], dripped: dict[str, Any], log_text: str
) -> list[str]:
    """Everything the campaign saw that is a bug, one line each."""
    problems = []
    if campaign.closed_with_error:  # the windows keep within the budget: no ERROR
        problems.append(f"{campaign.closed_with_error} connections closed with ERROR")
    silent = sorted(label for label, seen in broken.items() if seen == "open")
    if not set(silent) <= LENIENT:
        problems.append(f"broken frames left open without an ERROR: {silent}")
    if dripped["slow_closed_with_error"] != 3:
        problems.append(f"dripped frames not refused: {dripped}")
    if campaign.internal:
        problems.append(f"-32603 answers (bugs): {sorted(set(campaign.internal))}")
    bad_lines = log_problems(log_text)
    if bad_lines:
        problems.append(f"{len(bad_lines)} bad log lines, first: {bad_lines[:5]}")
    return problems


def test_an_error_frame_closes_its_connection(agent: tuple[Agent, Daemon]):
    """STOMP 1.2: a server that sends ERROR closes the connection right after.

    Past the request budget a request the agent drops must not wait forever: it is
    answered, or its connection closes after the ERROR frame.
    """
    serve, daemon = agent
    version = FuzzConnection(serve.port, handshake=False)
    version.send_raw(b"CONNECT\naccept-version:9.9\n\n\x00")
    over = FuzzConnection(serve.port)
    try:
        ids = [f"burst-{i}" for i in range(200)]
        for request_id in ids:
            over.send_json(request("Host.getStats", {}, request_id))
        missing = over.wait_answered(ids, timeout=10)
        if missing:
            assert over.errors
            assert over.wait_closed(timeout=5), over.errors[:2]
        assert version.wait_closed(timeout=5)
        assert version.errors
    finally:
        version.close()
        over.close()
    assert daemon.alive()
