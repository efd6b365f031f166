"""Measuring a running agent under a fuzz campaign: its answers, threads and RSS.

`Campaign` spreads requests over a few `FuzzConnection`s, each keeping at most
`WINDOW` unanswered (inside the agent's request budget), and remembers every
-32603 (a bug). `Meter` times each phase, reads the agent's RSS after it, and
waits for threads and RSS to settle back near where they were. Threads are read
from the agent's own SIGUSR1 thread dump (Python names them; /proc does not).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness.daemons import Daemon
from harness.fuzzclient import FuzzConnection, request

THREAD_SLACK = 4
"""Threads the agent may have more than after the warm-up (the work pool aside)."""
WORKERS = 64
"""The work facility's cap (`actors/work.py`): its idle workers leave after 30 s."""
RSS_SLACK_MIB = 48
"""MiB of RSS the agent may have more than after the warm-up."""
SETTLE_SECONDS = 15
"""How long threads and RSS get to come back after the campaign."""
CONNECTIONS = 4
"""Connections the verb matrix is spread over (each pipelines its requests)."""
WINDOW = 48
"""Requests one connection has unanswered at most (below the agent's 64)."""


def thread_names(daemon: Daemon) -> Counter[str]:
    """How many threads the agent has by name (digits dropped), from its SIGUSR1 dump."""
    end = "--- end of thread dump ---"
    dumps = daemon.log_text().count(end)
    os.kill(daemon.pid, signal.SIGUSR1)
    daemon.wait_ready(lambda: daemon.log_text().count(end) > dumps, timeout=10)
    dump = daemon.log_text().rsplit("--- thread dump:", 1)[1]
    names = re.findall(r"^Thread '([^']*)'", dump, flags=re.MULTILINE)
    actors = len(re.findall(r"^actor ", dump, flags=re.MULTILINE))
    return Counter([re.sub(r"\d+", "N", name) for name in names] + ["(actors)"] * actors)


def settled_near(baseline: Counter[str], now: Counter[str]) -> bool:
    """Whether the threads are back near `baseline`: at most `THREAD_SLACK` more, the
    work facility's idle workers aside (at most `WORKERS`; they leave after 30 s idle)."""
    grown = now - baseline
    others = sum(grown.values()) - grown["work-N"] - grown["(actors)"]
    return others <= THREAD_SLACK and now["work-N"] <= WORKERS


def proc_status(pid: int) -> dict[str, int]:
    """Threads and VmRSS (KiB) of `pid`, from /proc/<pid>/status."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {"threads": int(fields["Threads"]), "rss_kib": int(fields["VmRSS"].split()[0])}


class Campaign:
    """Sends requests over a few connections and remembers what each must answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ids = itertools.count()
        self.sent = 0
        self.codes: Counter[int] = Counter()
        self.closed_with_error = 0
        self.internal: list[str] = []
        """Requests answered -32603: each one a bug."""
        self.slowest: tuple[float, str] = (0.0, "")
        """The longest a window of requests took to be answered (seconds), and its first."""

    def run(self, requests: list[tuple[str, Any, Any]], connections: int = CONNECTIONS) -> None:
        """Send (label, method, params) requests spread over `connections`, windowed."""
        shares = [requests[i::connections] for i in range(connections)]
        threads = [threading.Thread(target=self._send_share, args=(s,)) for s in shares if s]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    def _send_share(self, share: list[tuple[str, Any, Any]]) -> None:
        conn = FuzzConnection(self.port)
        labels: dict[str, str] = {}
        try:
            for start in range(0, len(share), WINDOW):
                window = []
                for label, method, params in share[start : start + WINDOW]:
                    request_id = f"r{next(self.ids)}"
                    labels[request_id] = f"{method} {label}"
                    conn.send_json(request(method, params, request_id))
                    window.append(request_id)
                began = time.monotonic()
                missing = conn.wait_answered(window, timeout=90)
                took = round(time.monotonic() - began, 2)
                if took > self.slowest[0]:
                    self.slowest = (took, labels[window[0]])
                if missing:
                    assert conn.errors, f"closed without an ERROR frame: {missing[:3]}"
                    self.closed_with_error += 1
                    conn.close()
                    conn = FuzzConnection(self.port)
            self._tally(conn, labels)
        finally:
            conn.close()

    def _tally(self, conn: FuzzConnection, labels: dict[str, str]) -> None:
        self.sent += len(labels)
        self.codes.update(conn.codes)
        for request_id, label in labels.items():
            for response in conn.answered(request_id):
                if response.get("error", {}).get("code") == -32603:
                    self.internal.append(label)


def log_problems(text: str) -> list[str]:
    """Lines of the agent's log that mean a bug: tracebacks, crashes, restarts."""
    bad = re.compile(r"Traceback|crashed|unexpected error|supervisor report")
    return [line for line in text.splitlines() if bad.search(line)]


# -- the test -----------------------------------------------------------------------------


class Meter:
    """Runs the campaign's phases, timing each and reading the agent's RSS after it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.baseline = proc_status(daemon.pid)
        self.baseline_names = thread_names(daemon)
        self.seconds: dict[str, float] = {}
        self.rss_mib: dict[str, int] = {"warm": self.baseline["rss_kib"] // 1024}

    def phase(self, name: str, run: Any) -> Any:
        """Run one phase (blocking) and return what it returns."""
        began = time.monotonic()
        outcome = run()
        self.seconds[name] = round(time.monotonic() - began, 1)
        self.rss_mib[name] = proc_status(self.daemon.pid)["rss_kib"] // 1024
        return outcome

    def settle(self) -> tuple[dict[str, Any], list[str]]:
        """Wait (at most `SETTLE_SECONDS`) for threads and RSS to come back near the start.

        Returns the numbers and the problems (threads or RSS still up).
        """
        after = proc_status(self.daemon.pid)
        grown = thread_names(self.daemon) - self.baseline_names
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            now, names = proc_status(self.daemon.pid), thread_names(self.daemon)
            rss_ok = now["rss_kib"] <= self.baseline["rss_kib"] + RSS_SLACK_MIB * 1024
            threads_ok = settled_near(self.baseline_names, names)
            if (rss_ok and threads_ok) or time.monotonic() > deadline:
                break
            time.sleep(1.0)  # polling /proc: RSS and threads have no event to wait on
        problems = []
        if not threads_ok:
            problems.append(f"threads not back near the start: {dict(names - self.baseline_names)}")
        if not rss_ok:
            problems.append(f"RSS not back near the start: {self.baseline} -> {now}")
        numbers = {
            "baseline": self.baseline,
            "right_after": after,
            "settled": now,
            "new_threads_right_after": dict(grown),
            "phase_seconds": self.seconds,
            "rss_mib_after_each_phase": self.rss_mib,
        }
        return numbers, problems
