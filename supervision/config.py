"""The host's configuration: one frozen object, built once at start, passed down.

Read from an INI file in VDSM's style (`/etc/vdsm/vdsm.conf`: sections such as
`[vars]` and `[addresses]`). Keys Hostvisor does not know are logged and ignored,
so an existing vdsm.conf keeps working; a known key with a bad value is an error
that names the file, section and key. With no file at all, the result is the
embedded default: libvirt `qemu:///embed` rooted in the state directory, storage
under it, plain STOMP on 127.0.0.1 only.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostvisor.actors.errors import InvalidArgument

log = logging.getLogger(__name__)


def default_state_dir() -> Path:
    """Return /var/lib/hostvisor for root, else a directory under XDG_STATE_HOME."""
    if os.geteuid() == 0:
        return Path("/var/lib/hostvisor")
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "hostvisor"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a host needs to know at start. Immutable; built by `load_config`."""

    state_dir: Path = field(default_factory=default_state_dir)
    libvirt_uri: str = ""
    """Empty: an embedded QEMU driver rooted at `state_dir/libvirt`."""
    management_ip: str = "127.0.0.1"
    management_port: int = 54321
    ssl: bool = False
    key_file: Path = Path("/etc/pki/vdsm/keys/vdsmkey.pem")
    cert_file: Path = Path("/etc/pki/vdsm/certs/vdsmcert.pem")
    ca_file: Path = Path("/etc/pki/vdsm/certs/cacert.pem")
    vm_sample_interval: float = 15.0
    host_sample_interval: float = 15.0
    start_timeout: float = 60.0
    """Seconds the whole tree may take to start."""
    stop_timeout: float = 10.0
    """Seconds the whole tree may take to stop before it is abandoned."""
    log_level: str = "INFO"
    log_file: Path | None = None
    """Where the agent also writes its log (VDSM's /var/log/vdsm/vdsm.log); None: stderr only."""
    allow_plain_remote: bool = False
    """Plain STOMP on a non-loopback address: refused unless forced."""
    max_pending_requests: int = 64
    """Requests one API connection may have in flight."""
    max_frame_bytes: int = 16 * 1024 * 1024
    vm_powering_up_seconds: float = 60.0
    """Seconds a started VM reports "Powering up" before "Up" (no guest agent yet)."""
    detect_timeout: float = 10.0
    """Seconds a new API connection has to finish TLS and send its first frame."""
    frame_timeout: float = 60.0
    """Seconds a started API frame may take to arrive whole (a dripped frame is cut off)."""
    connection_memory_bytes: int = 32 * 1024 * 1024
    """Bytes one API connection may hold (partial frame, requests being answered, unsent
    replies) before it reads nothing more; at least one frame (`max_frame_bytes`)."""
    api_memory_bytes: int = 96 * 1024 * 1024
    """Bytes all API connections together may hold before busy ones are paused."""
    vm_operation_timeout: float = 30.0
    """Seconds VM.pause, cont, reset and shutdown wait for libvirt before "timed out"."""
    net_namespace: str = ""
    """The network namespace whose networks the host manages (a name under /run/netns);
    empty: the agent's own. Tests point an embedded host at a namespace they made."""
    docker_socket: str = "unix:///var/run/docker.sock"
    """The docker engine that runs container VMs (`containerType=docker`)."""
    container_network: str = "bridge"
    """The docker network container VMs join ("none": no network)."""
    repository: Path | None = None
    """VDSM's data-center root (`/rhev/data-center` in production); None: in state_dir."""
    storage_check_interval: float = 10.0
    """Seconds between two health checks of a storage domain (VDSM's 10 s)."""
    metrics_address: str = ""
    """Where Prometheus metrics are served (`host:port`, or a port on loopback); empty: off."""
    migration_libvirt_transport: str = ""
    """How the source's libvirtd reaches the destination's in a live migration: "tls"
    (`qemu+tls`) or "tcp" (`qemu+tcp`); empty: "tls" when `ssl`, as VDSM does."""
    max_outgoing_migrations: int = 2
    """Outgoing live migrations at once (VDSM's default; the Engine may send its own)."""
    max_incoming_migrations: int = 2
    """Incoming live migrations at once (VDSM's default; the Engine may send its own)."""
    migration_allow_unsafe: bool = False
    """Migrate even when libvirt cannot tell that the disks are shared (a local path both
    hosts see, as on test hosts); VDSM's storage always is, so it never asks this."""
    migration_monitor_interval: float = 1.0
    """Seconds between two looks at a migration's progress (and its schedule's steps)."""
    migration_destination_timeout: float = 21600.0
    """Seconds a destination VM waits for its guest to arrive (VDSM's default)."""
    hooks_dir: Path = Path("/usr/libexec/vdsm/hooks")
    """VDSM's hooks directory: one directory of executable scripts per hook point."""
    hook_timeout: float = 120.0
    """Seconds one hook script may run before it is killed (and counts as failed)."""
    sanlock_required: str = "auto"
    """`[sanlock] required`: "true", "false" or "auto" (required on a system libvirt);
    whether a shared storage domain is refused when no sanlock daemon answers
    (actors/storage/clusterlock.py)."""
    sanlock_io_timeout: int | None = None
    """`[sanlock] io_timeout` (VDSM's key): sanlock's I/O timeout in seconds for the
    lockspaces this host writes and joins; None: each domain's IOOPTIMEOUTSEC."""

    @property
    def requires_sanlock(self) -> bool:
        """Whether shared domains need a sanlock daemon here (`sanlock_required`'s rule)."""
        if self.sanlock_required != "auto":
            return self.sanlock_required == "true"
        return is_system_libvirt(self.libvirt_uri)

    @property
    def migration_over_tls(self) -> bool:
        """Whether live migrations reach the destination's libvirtd with TLS."""
        return self.migration_libvirt_transport == "tls" or (
            self.migration_libvirt_transport == "" and self.ssl
        )

    @property
    def embed_root(self) -> Path:
        """Where an embedded QEMU driver keeps its state."""
        return self.state_dir / "libvirt"

    @property
    def storage_root(self) -> Path:
        """VDSM's data-center root (`/rhev/data-center`) for this host."""
        return self.repository or self.state_dir / "data-center"

    @property
    def mount_root(self) -> Path:
        """Where storage connections are mounted or linked (`<root>/mnt`)."""
        return self.storage_root / "mnt"


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _positive(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = convert(text)
        if value <= 0:
            raise ValueError(f"must be > 0: {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:  # noqa: PLR2004
        raise ValueError(f"not a TCP port: {text!r}")
    return value


def _transport(text: str) -> str:
    transport = text.strip().lower()
    if transport not in {"", "tls", "tcp"}:
        raise ValueError(f"not a libvirt migration transport (tls or tcp): {text!r}")
    return transport


def _tristate(text: str) -> str:
    lowered = text.strip().lower()
    if lowered == "auto":
        return "auto"
    return "true" if _bool(lowered) else "false"


def is_system_libvirt(uri: str) -> bool:
    """Whether `uri` is a system libvirt (where `[sanlock] required = auto` requires it).

    Not one: an embedded driver ("" or qemu:///embed), the test driver (test:), a
    user's session daemon (qemu:///session).
    """
    if not uri or uri.startswith(("qemu:///embed", "test:")):
        return False
    return not uri.startswith("qemu:///session")


def _level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"not a log level: {text!r}")
    return level


# (section, key) -> (Config field, parser). VDSM's names where VDSM has the setting.
_KEYS: dict[tuple[str, str], tuple[str, Callable[[str], Any]]] = {
    ("vars", "ssl"): ("ssl", _bool),
    ("vars", "vm_sample_interval"): ("vm_sample_interval", _positive(float)),
    ("vars", "host_sample_stats_interval"): ("host_sample_interval", _positive(float)),
    ("addresses", "management_ip"): ("management_ip", str),
    ("addresses", "management_port"): ("management_port", _port),
    ("hostvisor", "state_dir"): ("state_dir", Path),
    ("hostvisor", "libvirt_uri"): ("libvirt_uri", str),
    ("hostvisor", "key_file"): ("key_file", Path),
    ("hostvisor", "cert_file"): ("cert_file", Path),
    ("hostvisor", "ca_file"): ("ca_file", Path),
    ("hostvisor", "start_timeout"): ("start_timeout", _positive(float)),
    ("hostvisor", "stop_timeout"): ("stop_timeout", _positive(float)),
    ("hostvisor", "log_level"): ("log_level", _level),
    ("hostvisor", "log_file"): ("log_file", Path),
    ("hostvisor", "allow_plain_remote"): ("allow_plain_remote", _bool),
    ("hostvisor", "max_pending_requests"): ("max_pending_requests", _positive(int)),
    ("hostvisor", "max_frame_bytes"): ("max_frame_bytes", _positive(int)),
    ("hostvisor", "detect_timeout"): ("detect_timeout", _positive(float)),
    ("hostvisor", "frame_timeout"): ("frame_timeout", _positive(float)),
    ("hostvisor", "connection_memory_bytes"): ("connection_memory_bytes", _positive(int)),
    ("hostvisor", "api_memory_bytes"): ("api_memory_bytes", _positive(int)),
    ("hostvisor", "vm_powering_up_seconds"): ("vm_powering_up_seconds", float),
    ("hostvisor", "vm_operation_timeout"): ("vm_operation_timeout", _positive(float)),
    ("hostvisor", "net_namespace"): ("net_namespace", str),
    ("hostvisor", "docker_socket"): ("docker_socket", str),
    ("hostvisor", "container_network"): ("container_network", str),
    ("hostvisor", "metrics_address"): ("metrics_address", str),
    ("hostvisor", "migration_libvirt_transport"): ("migration_libvirt_transport", _transport),
    ("hostvisor", "migration_allow_unsafe"): ("migration_allow_unsafe", _bool),
    ("vars", "max_outgoing_migrations"): ("max_outgoing_migrations", _positive(int)),
    ("vars", "max_incoming_migrations"): ("max_incoming_migrations", _positive(int)),
    ("vars", "migration_monitor_interval"): ("migration_monitor_interval", _positive(float)),
    ("vars", "migration_destination_timeout"): (
        "migration_destination_timeout",
        _positive(float),
    ),
    ("hostvisor", "hooks_dir"): ("hooks_dir", Path),
    ("hostvisor", "hook_timeout"): ("hook_timeout", _positive(float)),
    ("irs", "repository"): ("repository", Path),
    ("irs", "sd_health_check_delay"): ("storage_check_interval", _positive(float)),
    ("sanlock", "required"): ("sanlock_required", _tristate),
    ("sanlock", "io_timeout"): ("sanlock_io_timeout", _positive(int)),
}


_PATH_FIELDS = frozenset(
    {"state_dir", "key_file", "cert_file", "ca_file", "repository", "log_file", "hooks_dir"}
)


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Build the config from `path` (or the embedded default), then `overrides`.

    Raises:
        InvalidArgument: the file cannot be read or parsed, a known key has a bad
            value, or an override names no field.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_ini(path))
    fields = {f.name for f in dataclasses.fields(Config)}
    for name, value in overrides.items():
        if name not in fields:
            raise InvalidArgument(setting=name, reason="no such setting")
        if value is not None:
            values[name] = Path(value) if name in _PATH_FIELDS else value
    return Config(**values)


def _read_ini(path: Path) -> dict[str, Any]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as stream:
            parser.read_file(stream)
    except (OSError, configparser.Error) as error:
        raise InvalidArgument(config=str(path), reason=str(error)) from None
    values: dict[str, Any] = {}
    for section in parser.sections():
        for key, text in parser.items(section):
            known = _KEYS.get((section, key))
            if known is None:
                log.info("config %s: [%s] %s is not used by Hostvisor; ignored", path, section, key)
                continue
            name, parse = known
            try:
                values[name] = parse(text)
            except ValueError as error:
                raise InvalidArgument(
                    config=str(path), section=section, key=key, reason=str(error)
                ) from None
    return values


def is_loopback(address: str) -> bool:
    """Whether `address` (an IP literal or "localhost") is a loopback address."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def validate(config: Config) -> None:
    """Refuse a configuration the host must not start with (caller's thread; reads files).

    Checked before anything starts, so a bad config costs no tree start: plain
    STOMP on a non-loopback address (unless `allow_plain_remote`), and, with TLS,
    a key, cert or CA file that cannot be read. Whether the files hold a matching
    key and certificate is the TLS layer's check (`hostvisor.api.tls`).

    Raises:
        InvalidArgument: naming the setting, its value and what is wrong.
    """
    if not config.ssl and not config.allow_plain_remote and not is_loopback(config.management_ip):
        raise InvalidArgument(
            management_ip=config.management_ip,
            reason="plain STOMP only on loopback; set [vars] ssl=true or "
            "[hostvisor] allow_plain_remote=true",
        )
    if not config.ssl:
        return
    for name in ("key_file", "cert_file", "ca_file"):
        path: Path = getattr(config, name)
        try:
            with path.open("rb") as stream:
                stream.read(1)
        except OSError as error:
            raise InvalidArgument(
                setting=name, path=str(path), reason=f"cannot read: {error.strerror or error}"
            ) from None
