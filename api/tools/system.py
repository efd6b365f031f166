"""The host under configuration: its file tree (a prefix), its users and its services.

`Host.prefix` is where the host's root is: `/` on a real host, a temporary tree in
tests and image builds. Every path the configurators touch goes through `Host.path`,
and paths written into configuration files are the prefixed ones, so a configured
tree works where it is (a test starts libvirtd and the agent from it).

Users and groups are read from `<prefix>/etc/passwd` and `<prefix>/etc/group` and
changed with shadow's `groupadd`, `useradd` and `usermod` (`--prefix` when the
prefix is not `/`). Services are systemd units, reached with `systemctl` only on a
real host whose PID 1 is systemd; otherwise `NoServices` reports what the operator
must restart. Everything runs on the caller's thread and blocks on the commands.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

COMMAND_TIMEOUT = 60.0


class Services(Protocol):
    """Starts, stops and asks about services (systemd units)."""

    def running(self, unit: str) -> bool:
        """Whether `unit` is active."""
        ...

    def restart(self, unit: str) -> str:
        """Restart `unit`; return what was done, for the operator."""
        ...

    def reload(self) -> None:
        """Reread unit files (after a change under /etc/systemd)."""
        ...


class Systemd:
    """systemctl on the running system."""

    def running(self, unit: str) -> bool:
        """`systemctl is-active --quiet UNIT`."""
        return _run(["systemctl", "is-active", "--quiet", unit], check=False) == 0

    def restart(self, unit: str) -> str:
        """`systemctl restart UNIT` (raises CalledProcessError when it fails)."""
        _run(["systemctl", "restart", unit])
        return f"restarted {unit}"

    def reload(self) -> None:
        """`systemctl daemon-reload`."""
        _run(["systemctl", "daemon-reload"])


@dataclass
class NoServices:
    """No service manager to talk to (a prefix, or no systemd): restarts are reported."""

    pending: list[str] = field(default_factory=list)

    def running(self, unit: str) -> bool:  # noqa: ARG002 - nothing to ask
        """Unknown, so not running: configuration never waits for it."""
        return False

    def restart(self, unit: str) -> str:
        """Record `unit` as to be restarted by the operator."""
        self.pending.append(unit)
        return f"{unit}: no service manager here; restart it to load the new configuration"

    def reload(self) -> None:
        """Nothing to reload."""


def _run(argv: list[str], *, check: bool = True) -> int:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, argv, result.stdout, result.stderr)
    return result.returncode


@dataclass(frozen=True)
class Host:
    """The host being configured: where its root is and how to reach its services."""

    prefix: Path = Path("/")
    services: Services = field(default_factory=NoServices)

    @classmethod
    def at(cls, prefix: Path | None) -> Host:
        """The host rooted at `prefix` (None: this machine, with systemd if it runs)."""
        if prefix is None or prefix == Path("/"):
            systemd = Path("/run/systemd/system").is_dir() and shutil.which("systemctl")
            return cls(Path("/"), Systemd() if systemd else NoServices())
        return cls(prefix.resolve(), NoServices())

    @property
    def real(self) -> bool:
        """Whether this is the machine's own root."""
        return self.prefix == Path("/")

    def path(self, absolute: str) -> Path:
        """`absolute` (a path such as /etc/libvirt) under the prefix."""
        return self.prefix / absolute.lstrip("/")

    # -- users and groups ----------------------------------------------------------------

    def groups(self) -> dict[str, set[str]]:
        """Every group and its (supplementary) members, from the prefix's /etc/group."""
        found: dict[str, set[str]] = {}
        for line in _lines(self.path("/etc/group")):
            name, _password, _gid, members = [*line.split(":"), "", "", ""][:4]
            found[name] = {member for member in members.split(",") if member}
        return found

    def users(self) -> set[str]:
        """Every user name in the prefix's /etc/passwd."""
        return {line.split(":", 1)[0] for line in _lines(self.path("/etc/passwd"))}

    def user_groups(self, user: str) -> set[str]:
        """The supplementary groups of `user`."""
        return {group for group, members in self.groups().items() if user in members}

    def _shadow(self, tool: str, *args: str) -> None:
        prefix = [] if self.real else ["--prefix", str(self.prefix)]
        _run([tool, *prefix, *args])

    def add_group(self, name: str) -> bool:
        """Create the system group `name` unless it exists; True if created."""
        if name in self.groups():
            return False
        self._shadow("groupadd", "--system", name)
        return True

    def add_user(self, name: str, *, group: str, groups: tuple[str, ...], home: str) -> bool:
        """Create the system user `name` unless it exists; True if created."""
        if name in self.users():
            return False
        self._shadow(
            "useradd", "--system", "--gid", group, "--groups", ",".join(groups),
            "--no-create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin", name,
        )  # fmt: skip
        return True

    def add_to_groups(self, user: str, groups: set[str]) -> set[str]:
        """Add `user` to the `groups` it is not in; return those it was added to."""
        missing = groups - self.user_groups(user)
        if missing:
            self._shadow("usermod", "--append", "--groups", ",".join(sorted(missing)), user)
        return missing


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line and not line.startswith("#")]
