"""The persisted network configuration: running, safe, and the boot it belongs to.

Under `<state_dir>/netconf/`:
- `running.json`: the configuration in force, written after every change that
  stays (VDSM keeps it in /var/lib/vdsm/staging/netconf);
- `safe.json`: the configuration known to keep the host reachable, copied from the
  running one by `Host.setSafeNetworkConfig` or `commitOnSuccess` (VDSM's
  /var/lib/vdsm/persistence/netconf); `netConfigDirty` is "True" while they differ;
- `pending.json`: a change being applied or waiting for its connectivity
  check: the running configuration it started from and the image of the devices
  it touches (`rollback.Image`). Written before the first kernel step, removed
  once the change is committed or undone. Found at start while the running
  configuration is still the one it started from, it is a change that was never
  confirmed (the configurator crashed, the agent was killed): it is rolled back;
- `boot`: which boot of the managed namespace the running configuration was
  applied in. The kernel's boot id plus the namespace's inode: a host reboot
  changes the first, a namespace made anew (a test's simulated boot) the second.
  When it no longer matches at start, the kernel has lost the running
  configuration and the safe one is restored.

Writes are atomic (a temporary file, then a rename) so that a crash never leaves
half a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hostvisor.actors.network.model import NetConfig
from hostvisor.actors.network.netns import namespace_identity
from hostvisor.actors.network.rollback import Image

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_identity(netns: str | None) -> str:
    """Return the identity of the current boot of the managed namespace."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = ""
    return f"{boot}/{namespace_identity(netns)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """A change that is in the kernel (or on its way there) but not committed."""

    before: NetConfig
    """The running configuration the change started from."""
    image: Image
    """The devices it touches as they were: what a rollback restores."""


@dataclass(frozen=True, slots=True)
class NetStore:
    """Reads and writes the files of one host's network configuration. Blocking, fast."""

    directory: Path

    @classmethod
    def under(cls, state_dir: Path) -> NetStore:
        """The store of a host whose state lives in `state_dir`."""
        return cls(state_dir / "netconf")

    def running(self) -> NetConfig:
        """The running configuration (empty if none was ever written)."""
        return self._read("running.json")

    def safe(self) -> NetConfig:
        """The safe configuration (empty if none was ever marked safe)."""
        return self._read("safe.json")

    def write_running(self, config: NetConfig) -> None:
        """Persist `config` as the running configuration."""
        self._write("running.json", json.dumps(config.to_json(), indent=1, sort_keys=True))

    def mark_safe(self) -> None:
        """Copy the running configuration to the safe one."""
        self._write("safe.json", json.dumps(self.running().to_json(), indent=1, sort_keys=True))

    def dirty(self) -> bool:
        """Whether the running configuration differs from the safe one."""
        return self.running().to_json() != self.safe().to_json()

    def write_pending(self, pending: Pending) -> None:
        """Record (durably) a change about to be applied."""
        text = json.dumps({"before": pending.before.to_json(), "image": pending.image.to_json()})
        self._write("pending.json", text)

    def pending(self) -> Pending | None:
        """The change recorded by `write_pending` and not cleared since, if any.

        Raises:
            NetworkError, KeyError, TypeError, ValueError: the record does not parse.
        """
        try:
            data = json.loads((self.directory / "pending.json").read_text())
        except FileNotFoundError:
            return None
        return Pending(
            before=NetConfig.from_json(data["before"]), image=Image.from_json(data["image"])
        )

    def clear_pending(self) -> None:
        """Forget the pending change (committed, undone, or obsolete)."""
        (self.directory / "pending.json").unlink(missing_ok=True)

    def boot(self) -> str:
        """The boot identity recorded with the running configuration ("" if none)."""
        try:
            return (self.directory / "boot").read_text().strip()
        except FileNotFoundError:
            return ""

    def write_boot(self, identity: str) -> None:
        """Record that the running configuration is in force in boot `identity`."""
        self._write("boot", identity + "\n")

    def _read(self, name: str) -> NetConfig:
        try:
            text = (self.directory / name).read_text()
        except FileNotFoundError:
            return NetConfig()
        return NetConfig.from_json(json.loads(text))

    def _write(self, name: str, text: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / name
        temporary = target.with_suffix(".tmp")
        with temporary.open("w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(target)
