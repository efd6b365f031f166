"""The thin blocking adapter to libvirt: roots, the event loop, and connections.

Plain blocking code with no actor in it. The one thread it owns is libvirt's
default event loop, which libvirt makes process-global: `ensure_event_loop` starts
it once per process, before any connection is opened, and it runs until exit.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

log = logging.getLogger(__name__)

_QEMU_CONF = """\
# Written by Hostvisor for an embedded QEMU driver (qemu:///embed) rooted here.
user = "root"
group = "root"
# swtpm (a VM's TPM) as root too: the embed root is 0700, `tss` could not enter it.
swtpm_user = "root"
swtpm_group = "root"
security_driver = "none"
# No virtlogd daemon runs beside an embedded driver: QEMU writes its log itself.
stdio_handler = "file"
"""

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None


class Accelerator(enum.Enum):
    """How guests run: KVM when /dev/kvm opens, TCG (software emulation) otherwise."""

    KVM = "kvm"
    TCG = "qemu"

    @property
    def domain_type(self) -> str:
        """The `<domain type=…>` value for this accelerator."""
        return self.value


def detect_accelerator(device: str = "/dev/kvm") -> Accelerator:
    """Return KVM if `device` can be opened read-write, else TCG."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return Accelerator.TCG
    os.close(fd)
    return Accelerator.KVM


def embed_uri(root: Path) -> str:
    """Return the URI of an embedded QEMU driver rooted at `root`."""
    return f"qemu:///embed?root={root}"


MAX_EMBED_ROOT = 44
"""Longer roots push QEMU's monitor socket (`<root>/run/libvirt/qemu/domain-N-name/
monitor.sock`) past the 107 bytes a UNIX socket path may have: guests fail to start."""


def prepare_embed_root(root: Path) -> str:
    """Create `root` with the qemu.conf an embedded driver needs; return its URI.

    Idempotent: an existing qemu.conf is rewritten with the same content.
    """
    if len(str(root)) > MAX_EMBED_ROOT:
        log.warning(
            "embedded libvirt root %s is %d characters long; over %d, guests may fail to "
            'start ("Monitor path too big"): use a shorter state directory',
            root,
            len(str(root)),
            MAX_EMBED_ROOT,
        )
    (root / "etc").mkdir(parents=True, exist_ok=True)
    conf = root / "etc" / "qemu.conf"
    if not conf.exists() or conf.read_text() != _QEMU_CONF:
        conf.write_text(_QEMU_CONF)
    return embed_uri(root)


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a daemon thread.

    Must run before the first connection is opened. Safe to call from any thread,
    any number of times; only the first call starts the loop.
    """
    global _event_loop_thread  # noqa: PLW0603 - libvirt's event loop is process-global
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        libvirt.registerErrorHandler(_libvirt_error, None)
        # owns a thread: libvirt's default event loop must be run by a thread of its own
        thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        thread.start()
        _event_loop_thread = thread


def _libvirt_error(_context: Any, error: Any) -> None:
    """Send libvirt's errors to our log at debug, not to stderr.

    By default libvirt prints every error to stderr, also those the caller expects and
    handles (a lookup of a domain that left, jobStats on a paused guest at recovery),
    which fills the journal with lines that look like failures. Each error still
    raises `libvirtError` where it happens, and the caller logs what matters.
    """
    log.debug("libvirt: %s", error)  # (code, domain, message, level, ...)


def _run_event_loop() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.error("libvirt event loop iteration failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class HypervisorInfo:
    """What a connection says about the hypervisor behind it."""

    uri: str
    driver: str
    hostname: str
    libvirt_version: str
    hypervisor_version: str
    accelerator: Accelerator


_embedded_lock = threading.Lock()
_embedded: dict[str, Any] = {}  # qemu:///embed URI -> the process's one connection


class ConnectionHandle:
    """One user's handle on a libvirt connection; closing it never frees a connection in use.

    Every `open_connection` answers one. Closing a handle closes only the handle:
    calls through it then raise `libvirt.libvirtError`, as on a closed connection,
    and running guests are untouched either way. The connection itself closes when
    nothing refers to it any more (libvirt-python closes it when it is collected):
    - A worker may be inside a libvirt call on it when its owner closes it (the
      recoverer listing domains while the hypervisor actor is killed). An explicit
      `virConnectClose` under that call frees the connection and crashes the process
      (a segfault, found by the random-kill drill); the call's own reference keeps it
      alive instead, and it closes when the call returns.
    - libvirt (9.0) registers its QEMU driver again on every `qemu:///embed` open, even
      while another connection is open, and refuses past about 16 opens in one
      process ("Too many drivers, cannot register QEMU"). A process has one embed root
      anyway, so that connection is opened once and kept for the life of the process.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        """Wrap `conn`, a `libvirt.virConnect`."""
        self._conn: Any = conn

    def __getattr__(self, name: str) -> Any:
        """Delegate to the connection while this handle is open."""
        if self._conn is None:
            raise libvirt.libvirtError(f"{name}: this connection handle is closed")
        return getattr(self._conn, name)

    def close(self) -> int:
        """Close this handle (the connection closes once nothing uses it); idempotent."""
        self._conn = None
        return 0


def open_connection(uri: str) -> Any:
    """Open a read-write libvirt connection to `uri` (blocking).

    Starts the event loop first. Answers a `ConnectionHandle`: on a new connection, or
    for a `qemu:///embed` URI on the process's one connection to it. Raises
    `libvirt.libvirtError` on failure.
    """
    ensure_event_loop()
    if not uri.startswith("qemu:///embed"):
        return ConnectionHandle(libvirt.open(uri))
    with _embedded_lock:
        conn = _embedded.get(uri)
        if conn is None or not conn.isAlive():
            conn = libvirt.open(uri)
            _embedded[uri] = conn
    return ConnectionHandle(conn)


def describe(conn: Any, accelerator: Accelerator) -> HypervisorInfo:
    """Return the facts of an open connection (blocking, fast)."""
    return HypervisorInfo(
        uri=conn.getURI(),
        driver=conn.getType(),
        hostname=conn.getHostname(),
        libvirt_version=_version(conn.getLibVersion()),
        hypervisor_version=_version(conn.getVersion()),
        accelerator=accelerator,
    )


def _version(number: int) -> str:
    major, rest = divmod(number, 1_000_000)
    minor, micro = divmod(rest, 1000)
    return f"{major}.{minor}.{micro}"
