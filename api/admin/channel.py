"""The local admin channel: a root-only unix socket that serves the console and scripts.

Why a unix socket and not an introspection namespace on the JSON-RPC API:
- who may call is decided by the kernel, not by us: the socket is created mode 0600
  in the state directory (owned by the agent's user, root in production) and every
  connection's peer credentials (SO_PEERCRED) must be root or the agent's own user.
  The API, in contrast, is reachable from the network by the Engine's identity;
  putting "kill an actor" behind it would make the Engine (or anyone holding its
  certificate) able to drill a production host, and every new verb there is part of
  VDSM's wire contract, which has no such namespace;
- it keeps working when the API does not: while the gate answers code 99
  (recovering), when the front is wedged or restarting, when TLS is misconfigured.
  That is when an operator opens the console;
- it costs the edge nothing: no new verbs to declare, fuzz and schema-check.

Protocol: newline-delimited JSON. A request is `{"op": NAME, ...params}`; the answer
is `{"ok": true, "result": ...}` or `{"ok": false, "error": {"code": N, "message":
TEXT}}` with VDSM's codes (1 no such actor, 91 bad request, 40 conflict). Operations
(`hostvisor.api.admin.ops`): `snapshot {since?}` (with `since`, the version of an
earlier answer: only what changed after it, `hostvisor.api.console.snapshots`),
`detail {path}`, `kill {path, reason?}`, `restart {path}`.

Threads: `AdminChannel` is an actor of the api branch; its turn only opens and
closes the socket. Requests are served on the channel's own threads (an accept loop
and one thread per connection, at most `MAX_CONNECTIONS`), which read the registry
(thread-safe, never waits for an actor) and send the drills as messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.api.admin import ops
from hostvisor.api.console.snapshots import SnapshotCache
from hostvisor.supervision.registry import Registry

log = logging.getLogger(__name__)

ADMIN_ID = "admin"
"""The channel's child id in the api branch (its path: `api/admin`)."""
SOCKET_NAME = "admin.sock"
"""The socket's file name in the state directory."""
MAX_CONNECTIONS = 8
"""Connections served at once; more are closed at once."""
MAX_REQUEST_BYTES = 64 * 1024


def socket_path(state_dir: Path) -> Path:
    """Where the admin socket of the agent with `state_dir` lives."""
    return state_dir / SOCKET_NAME


def peer_allowed(conn: socket.socket) -> bool:
    """Whether the peer of `conn` is root or this process's own user (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


class AdminChannel(Actor):
    """Listens on the admin socket while it runs.

    Args:
        registry: the tree's registry (read for snapshots, drills find actors there).
        path: the socket's path (`socket_path(config.state_dir)`).
    """

    def __init__(self, *, registry: Registry, path: Path) -> None:
        """Prepare the channel; the socket opens in `on_start`."""
        super().__init__()
        self._registry = registry
        self._path = path
        self._server: _Server | None = None
        self._snapshots = SnapshotCache()

    def on_start(self) -> None:
        """Bind the socket (mode 0600) and start serving (actor's turn; raises OSError)."""
        self._server = _Server(self._path, self._answer)
        log.info("admin channel on %s", self._path)

    def on_stop(self) -> None:
        """Close the socket and remove its file (actor's turn; never raises)."""
        self._close()

    def on_failure(self, *_exc_info: Any) -> None:
        """Close the socket as the actor crashes."""
        self._close()

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def _answer(self, request: dict[str, Any]) -> Any:
        """Run one request (a connection's thread). Raises HostvisorError for the caller."""
        op = request.get("op")
        path = request.get("path")
        if op == "snapshot":
            since = request.get("since")
            return self._snapshots.snapshot(self._registry, self.runtime, since=since)
        if not isinstance(path, str):
            raise InvalidArgument(op=op, reason="needs a string 'path'")
        if op == "detail":
            return ops.detail(self._registry, path)
        if op == "kill":
            reason = request.get("reason") or "killed from the console"
            return ops.kill(self._registry, path, str(reason))
        if op == "restart":
            return ops.restart(self._registry, path)
        raise InvalidArgument(op=op, reason="unknown operation")


Answer = Callable[[dict[str, Any]], Any]


class _Server:
    """The socket and its threads; `close` ends them."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self._path = path
        self._answer = answer
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closed = threading.Event()
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of an earlier run
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old_mask)
        path.chmod(0o600)
        self._sock.listen(MAX_CONNECTIONS)
        # owns a thread: the admin socket's accept loop (blocking accept)
        threading.Thread(target=self._accept, name="admin-accept", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not peer_allowed(conn):
                log.warning("admin channel: refused a peer that is neither root nor us")
                conn.close()
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()
                continue
            # owns a thread: one admin connection (blocking reads of a local peer)
            threading.Thread(
                target=self._serve, args=(conn,), name="admin-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rwb") as stream:
                while not self._closed.is_set():
                    line = stream.readline(MAX_REQUEST_BYTES)
                    if not line:
                        return
                    stream.write(self._respond(line))
                    stream.flush()
        except OSError:
            return
        finally:
            self._slots.release()

    def _respond(self, line: bytes) -> bytes:
        try:
            reply: dict[str, Any] = {"ok": True, "result": self._answer(_request(line))}
        except json.JSONDecodeError as error:
            reply = {"ok": False, "error": {"code": InvalidArgument.code, "message": str(error)}}
        except HostvisorError as error:
            reply = {"ok": False, "error": {"code": error.code, "message": str(error)}}
        except Exception:
            log.exception("admin channel: request %r failed", line[:200])
            reply = {"ok": False, "error": {"code": 100, "message": "internal error"}}
        return json.dumps(reply, default=str).encode() + b"\n"


def _request(line: bytes) -> dict[str, Any]:
    """Decode one request line. Raises JSONDecodeError, InvalidArgument (not an object)."""
    request = json.loads(line)
    if not isinstance(request, dict):
        raise InvalidArgument(reason="a request is a JSON object")
    return request
