"""`hostvisor serve`: the whole main of the agent.

Start the tree, tell systemd, wait for a signal or a failure, stop in reverse
order within a bounded time. SIGTERM and SIGINT stop cleanly (guests keep
running); SIGUSR1 writes every thread's name and stack, then every actor's state, to
stderr. Exit status: 0 after a
requested stop, 1 when the tree failed (a start failure or an escalation at the
root), 2 for a bad configuration — found by `check_config` before anything starts
(no actor, no libvirt root, no state directory).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import traceback
from types import FrameType
from typing import TextIO

from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.api import sdnotify
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.tls import check_server_files
from hostvisor.supervision.config import Config, validate
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


def check_config(config: Config) -> None:
    """Refuse a configuration the agent cannot serve with (caller's thread; reads files).

    Plain STOMP off loopback, an unreadable key, cert or CA file, a file that is not
    PEM, a key that does not match its certificate.

    Raises:
        InvalidArgument: naming the setting and the problem.
    """
    validate(config)
    if config.ssl:
        check_server_files(cert=config.cert_file, key=config.key_file, ca=config.ca_file)


def serve(config: Config) -> int:
    """Run the host until SIGTERM/SIGINT or a failure of the tree; return the exit status.

    Blocks the calling (main) thread. The configuration is checked first: a bad one
    returns EXIT_BAD_CONFIG before the tree is built.
    """
    try:
        check_config(config)
    except InvalidArgument as error:
        log.error("bad configuration: %s", error)  # noqa: TRY400 - no traceback: not a bug
        return EXIT_BAD_CONFIG
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    host = EmbeddedHost(config)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: dump_threads(registry=host.registry))
    started = time.monotonic()
    try:
        host.start()
    except HostvisorError as error:
        log.error("the tree failed to start: %s", error)  # noqa: TRY400 - logged where raised
        host.stop()
        return EXIT_FAILED
    actors = len(host.registry.paths())
    log.info(
        "hostvisor is up: %d actors in %.2f s; state in %s",
        actors,
        time.monotonic() - started,
        config.state_dir,
    )
    sdnotify.notify(f"READY=1\nSTATUS=serving, {actors} actors")
    failure = _wait(host, stop_requested)
    sdnotify.notify("STOPPING=1")
    stopping = time.monotonic()
    clean = host.stop()
    log.info(
        "hostvisor stopped in %.2f s%s",
        time.monotonic() - stopping,
        "" if clean else " (some actors abandoned)",
    )
    return EXIT_FAILED if failure else EXIT_OK


def dump_threads(stream: TextIO | None = None, *, registry: Registry | None = None) -> None:
    """Write every thread's name and stack, then every actor's state (SIGUSR1).

    Actors own no thread: a worker running one is named `actor:<path>` meanwhile, so
    a stuck handler shows with its stack; the actor list below says which actors are
    busy (and for how long) and how deep each mailbox is.
    """
    out = stream or sys.stderr
    frames = sys._current_frames()  # noqa: SLF001 - the documented way to read all stacks
    lines = [f"--- thread dump: {len(frames)} threads ---\n"]
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        lines.append(f"Thread {thread.name!r} (ident={thread.ident}, daemon={thread.daemon}):\n")
        if frame is not None:
            lines.extend(traceback.format_stack(frame))
    if registry is not None:
        statuses = registry.snapshot()
        lines.append(f"--- actors: {len(statuses)} ---\n")
        for status in statuses:
            busy = "idle" if status.busy_seconds is None else f"busy {status.busy_seconds:.3f} s"
            lines.append(
                f"actor {status.path} ({status.actor_class}): {status.state}, {busy}, "
                f"mailbox {status.mailbox_depth}, handled {status.messages_handled}, "
                f"restarts {status.restarts}\n"
            )
    lines.append("--- end of thread dump ---\n")
    out.write("".join(lines))
    out.flush()


def _wait(host: EmbeddedHost, stop_requested: threading.Event) -> bool:
    """Wait for a stop request or a root failure; return True on failure.

    Wakes at the watchdog interval (or every second) to pet systemd's watchdog,
    and only while the root is alive.
    """
    interval = sdnotify.watchdog_interval() or 1.0
    while not stop_requested.wait(interval):
        if host.runner.failed() is not None:
            log.error("the supervision tree gave up; exiting")
            return True
        sdnotify.notify("WATCHDOG=1")
    return host.runner.failed() is not None
