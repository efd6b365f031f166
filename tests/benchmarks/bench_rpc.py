"""Host.ping over STOMP through our client: Hostvisor's edge against a bare echo server.

    .venv/bin/python tests/benchmarks/bench_rpc.py [--calls N] [--seconds S] [--rounds R]

Every server runs in a process of its own (so the client's threads do not share
their interpreter lock) on loopback, and the same client library drives them all:
- baseline: a bare asyncio STOMP server on asyncio's stock loop that reads a SEND,
  takes the id out of the JSON body and answers a MESSAGE with `result: true` — the
  least a STOMP JSON-RPC server can do — with the same frame parser, ujson and
  TCP_NODELAY;
- the same bare server on uvloop, when the agent runs on uvloop: a second baseline,
  so that what the faster loop gives and what the edge's own code gives can be told
  apart;
- a floor, on uvloop: a Protocol that answers each SEND with one prebuilt MESSAGE,
  finding the request id by a byte search, with no frame parser, no JSON and no
  dispatch: what any Python server on that loop spends per call before doing any
  work. It is not a STOMP server (it routes nothing and answers nothing else); it
  shows how much of the CPU target is within reach of Python code at all;
- hostvisor: the RpcFront actor with the real Host verb table, on the loop the
  agent picks (`hostvisor.api.front.new_event_loop`).
Prints sequential latency (p50, p99), throughput with 1, 8 and 32 clients, and the
server's CPU time (user + system, all its threads, from /proc) per 1,000 calls while
8 clients call, with the ratio to each baseline. CPU is measured in `--rounds`
rounds that alternate between the servers (the machine may be shared); the median
is shown. Targets: p50 <= 1.5x; 8 clients >= 0.7x; server CPU per call <= 0.67x
the stock-loop baseline (issue 12).
With `--compare DIR`, a second Hostvisor runs from the tree at DIR (a `hostvisor/`
package there, e.g. `git archive` of an older commit's api, actors and supervision
put under DIR/hostvisor/) in the same rounds: before and after in one run.
With `HOSTVISOR_BENCH_PROFILE=FILE`, `--serve front` writes cProfile statistics of
its API loop to FILE every 5 s (`python -m pstats FILE`), to see where its CPU goes.
Not a test: it never gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ujson

from hostvisor.api.client import Client, connect
from hostvisor.api.stomp.frames import FrameParser, encode, encode_head

# -- the two servers (each runs in its own process) ---------------------------------------


async def _echo_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the real server does
    parser = FrameParser()
    subscriptions: dict[str, str] = {}
    while chunk := await reader.read(65536):
        parser.feed(chunk)
        for frame in parser.frames():
            if frame.command == "CONNECT":
                writer.write(encode("CONNECTED", {"version": "1.2", "heart-beat": "0,0"}))
            elif frame.command == "SUBSCRIBE":
                subscriptions[frame.headers["destination"]] = frame.headers["id"]
            elif frame.command == "SEND":
                request_id = ujson.loads(frame.body)["id"]
                reply_to = frame.headers["reply-to"]
                body = ujson.dumps({"jsonrpc": "2.0", "id": request_id, "result": True}).encode()
                headers = {
                    "destination": reply_to,
                    "subscription": subscriptions.get(reply_to, ""),
                    "content-type": "application/json",
                }
                writer.write(encode("MESSAGE", headers, body))
    writer.close()


def serve_echo(port: int, *, uvloop: bool = False) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_echo_connection, "127.0.0.1", port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    if uvloop:
        import uvloop as fast  # noqa: PLC0415 - only in this server's process

        fast.run(main())
    else:
        asyncio.run(main())


class _Floor(asyncio.Protocol):
    """The floor server: a prebuilt answer per SEND, nothing parsed (see the module doc)."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transport is no asyncio.Transport
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        *frames, self.pending = (self.pending + data).split(b"\0")
        out = []
        for raw in frames:
            frame = raw.lstrip(b"\n")  # heart-beats
            if frame.startswith(b"SEND"):
                start = frame.index(b'"id":') + 5
                end = min(i for i in (frame.find(b",", start), frame.find(b"}", start)) if i > 0)
                out.append(_FLOOR_HEAD + frame[start:end].strip() + b"}\0")
            elif frame.startswith(b"CONNECT"):
                out.append(encode("CONNECTED", {"version": "1.2", "heart-beat": "0,0"}))
        if out:
            self.transport.write(b"".join(out))


# The answer up to its id, without content-length: the body runs to the NUL.
_FLOOR_HEAD = (
    encode_head("MESSAGE", {"destination": "jms.topic.vdsm_responses"})
    + b'\n{"jsonrpc": "2.0", "result": true, "id": '
)


def serve_floor(port: int) -> None:
    import uvloop as fast  # noqa: PLC0415 - only in this server's process

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Floor, "127.0.0.1", port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    fast.run(main())


def agent_loop() -> str:
    """The loop the agent would run: `uvloop` or `asyncio`."""
    from hostvisor.api.front import new_event_loop  # noqa: PLC0415

    loop = new_event_loop()
    try:
        return "asyncio" if type(loop).__module__.startswith("asyncio") else "uvloop"
    finally:
        loop.close()


def serve_front(port: int) -> None:
    from hostvisor.actors.actor import Link  # noqa: PLC0415 - only in the server process
    from hostvisor.api.embedded import offline_verb_table  # noqa: PLC0415
    from hostvisor.api.front import RpcFront  # noqa: PLC0415
    from hostvisor.supervision.config import load_config  # noqa: PLC0415

    config = load_config(state_dir=Path(tempfile.mkdtemp()), management_port=port)
    link = Link(path="api/front")
    RpcFront.spawn(link, config=config, table=offline_verb_table(), is_ready=lambda: True)
    link.started.get(timeout=10)
    profile = os.environ.get(PROFILE_VARIABLE)
    if profile:
        _profile_loop(profile)
    print("ready", flush=True)
    threading.Event().wait()


PROFILE_VARIABLE = "HOSTVISOR_BENCH_PROFILE"
"""With `--serve front`: a file to which the API loop's cProfile statistics are written
(every 5 s), to see where the edge's CPU goes under load."""


def _profile_loop(path: str) -> None:
    """Profile the API loop's thread; dump the statistics to `path` every 5 s."""
    import cProfile  # noqa: PLC0415 - only when asked
    import gc  # noqa: PLC0415

    profiler = cProfile.Profile()
    loop = next(  # the front's loop, running in its thread: the one loop of this process
        o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()
    )

    def dump() -> None:
        profiler.dump_stats(path)
        loop.call_later(5.0, dump)

    def start() -> None:
        profiler.enable()
        loop.call_later(5.0, dump)

    loop.call_soon_threadsafe(start)


# -- the client side ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, role: str, tree: str | None = None) -> None:
        self.port = _free_port()
        env = dict(os.environ)
        if tree is not None:  # its hostvisor package comes first
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", role, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{role} server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(port: int, calls: int) -> tuple[float, float]:
    with connect("127.0.0.1", port) as cli:
        for _ in range(200):
            cli.Host.ping()
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            cli.Host.ping()
            samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def throughput(port: int, clients: int, seconds: float) -> float:
    return load(port, clients, seconds)[0] / seconds


def load(port: int, clients: int, seconds: float, pid: int | None = None) -> tuple[int, float]:
    """Call for `seconds` from `clients` threads: (calls made, CPU seconds of `pid`)."""
    connections: list[Client] = [connect("127.0.0.1", port) for _ in range(clients)]
    counts = [0] * clients
    start = threading.Barrier(clients + 1)
    deadline = 0.0

    def run(index: int) -> None:
        cli = connections[index]
        start.wait()
        while time.perf_counter() < deadline:
            cli.Host.ping()
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    deadline = time.perf_counter() + seconds
    start.wait()
    for thread in threads:
        thread.join()
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    for cli in connections:
        cli.close()
    return sum(counts), cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["echo", "echo-uvloop", "floor", "front"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--compare", metavar="DIR", help="also run the front from DIR's tree")
    args = parser.parse_args()
    if args.serve in ("echo", "echo-uvloop"):
        serve_echo(args.port, uvloop=args.serve == "echo-uvloop")
        return
    if args.serve == "front":
        serve_front(args.port)
        return
    if args.serve == "floor":
        serve_floor(args.port)
        return

    loop = agent_loop()
    roles = ["echo", "echo-uvloop", "floor", "front"] if loop == "uvloop" else ["echo", "front"]
    servers = {role: Server(role) for role in roles}
    if args.compare:
        roles.append("before")
        servers["before"] = Server("front", args.compare)
    try:
        results, cpu = measure(servers, args.calls, args.seconds, args.rounds)
    finally:
        for server in servers.values():
            server.stop()
    report(loop, results, cpu)


def measure(
    servers: dict[str, Server], calls: int, seconds: float, rounds: int
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Latency and throughput of each server, then its CPU per call in alternating rounds."""
    results: dict[str, dict[str, float]] = {}
    for role, server in servers.items():
        p50, p99 = latency(server.port, calls)
        figures = {"p50": p50, "p99": p99}
        for clients in (1, 8, 32):
            figures[f"x{clients}"] = throughput(server.port, clients, seconds)
        results[role] = figures
    cpu: dict[str, list[float]] = {role: [] for role in servers}
    for _ in range(rounds):
        for role, server in servers.items():
            made, spent = load(server.port, 8, seconds, server.process.pid)
            cpu[role].append(spent / made * 1e6)  # ms per 1,000 calls
    for role in servers:
        results[role]["cpu"] = statistics.median(cpu[role])
    return results, cpu


def report(loop: str, results: dict[str, dict[str, float]], cpu: dict[str, list[float]]) -> None:
    rows = [
        ("Host.ping p50, sequential (us)", "p50", "<= 1.5x"),
        ("Host.ping p99, sequential (us)", "p99", ""),
        ("calls/s, 1 client", "x1", ""),
        ("calls/s, 8 clients", "x8", ">= 0.7x"),
        ("calls/s, 32 clients", "x32", ""),
        ("server CPU ms / 1,000 calls, 8 clients", "cpu", "<= 0.67x"),
    ]
    ours = results["front"]
    baselines = [("echo", "bare echo", "bare asyncio STOMP server, stock loop")]
    if "echo-uvloop" in results:
        baselines.append(("echo-uvloop", "echo uvloop", "the same bare server on uvloop"))
    if "floor" in results:
        floor = results["floor"]["cpu"]
        print(
            f"floor (prebuilt answers on uvloop): {floor:.1f} ms / 1,000 calls,"
            f" {floor / results['echo']['cpu']:.2f}x the stock-loop baseline: the least a"
            " Python server on this loop spends; a CPU target below it is out of reach"
        )
    print(f"hostvisor's API loop: {loop}")
    for role, title, what in baselines:
        base = results[role]
        print(f"baseline: {what}")
        print(f"{'measure':<40} {title:>11} {'hostvisor':>11} {'ratio':>7}  target")
        for name, key, target in rows:
            ratio = ours[key] / base[key]
            aim = target if role == "echo" else ""
            print(f"{name:<40} {base[key]:>11.1f} {ours[key]:>11.1f} {ratio:>6.2f}x  {aim}")
    if "before" in results:
        before, echo = results["before"], results["echo"]
        print(
            f"hostvisor from the --compare tree: {before['cpu']:.1f} ms / 1,000 calls,"
            f" {before['cpu'] / echo['cpu']:.2f}x the stock-loop baseline"
            f" (this tree: {ours['cpu'] / echo['cpu']:.2f}x); p50 {before['p50']:.1f} us,"
            f" 8 clients {before['x8']:.0f} calls/s"
        )
    paired = sorted(f / e for f, e in zip(cpu["front"], cpu["echo"], strict=True))
    print(
        "server CPU ratio to the stock-loop baseline, round by round (the load on a shared"
        f" machine changes between rounds): median {statistics.median(paired):.2f}x,"
        f" {paired[0]:.2f}x to {paired[-1]:.2f}x"
    )
    rounds = "; ".join(f"{role} " + " ".join(f"{v:.1f}" for v in cpu[role]) for role in cpu)
    print(f"server CPU per round (ms / 1,000 calls): {rounds}")


if __name__ == "__main__":
    main()
