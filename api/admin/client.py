"""A client of the local admin channel (`hostvisor console`, scripts, tests)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Self


class AdminError(Exception):
    """The channel refused a request; `code` is VDSM's (1 no such actor, 91, 40...)."""

    def __init__(self, code: int, message: str) -> None:
        """Record the channel's code and message."""
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class AdminClient:
    """One connection to the admin socket; requests go one at a time.

    Not thread-safe: use one client per thread. Every call blocks the calling thread
    for at most `timeout` seconds.
    """

    def __init__(self, path: Path, *, timeout: float = 15.0) -> None:
        """Connect to the socket at `path`. Raises OSError when nobody listens there."""
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError:
            self._sock.close()
            raise
        self._stream = self._sock.makefile("rwb")

    def request(self, op: str, **params: Any) -> Any:
        """Send one request and return its result.

        Raises:
            AdminError: the channel answered an error.
            OSError: the connection broke or timed out.
        """
        self._stream.write(json.dumps({"op": op, **params}).encode() + b"\n")
        self._stream.flush()
        line = self._stream.readline()
        if not line:
            raise ConnectionError("the admin channel closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise AdminError(int(error.get("code", 100)), str(error.get("message", "")))
        return reply["result"]

    def snapshot(self) -> dict[str, Any]:
        """The supervision snapshot with the scheduler's and work pool's statistics."""
        result: dict[str, Any] = self.request("snapshot")
        return result

    def detail(self, path: str) -> dict[str, Any]:
        """One actor's status (for a VM, also its status and operation in flight)."""
        result: dict[str, Any] = self.request("detail", path=path)
        return result

    def kill(self, path: str, reason: str = "killed from the console") -> dict[str, Any]:
        """Crash the actor at `path`; its supervisor restarts it."""
        result: dict[str, Any] = self.request("kill", path=path, reason=reason)
        return result

    def restart(self, path: str) -> dict[str, Any]:
        """Terminate and start again the child at `path` through its supervisor."""
        result: dict[str, Any] = self.request("restart", path=path)
        return result

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._stream.close()
        self._sock.close()

    def __enter__(self) -> Self:
        """Use the client in a `with` block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the connection."""
        self.close()
