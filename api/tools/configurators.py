"""What `vdsm-tool configure` configures: one configurator per module, as in VDSM.

- certificates: the host's PKI at /etc/pki/vdsm (the Engine's when present, else a
  standalone CA and host certificate) and the links libvirt, QEMU and SPICE read;
- libvirt (service libvirtd): a marked section in libvirtd.conf, qemu.conf and
  qemu-sanlock.conf, libvirtd's TLS socket unit, the directories, and the users and
  groups QEMU runs as; libvirt's default network is kept from starting;
- sanlock (service sanlock): sanlock.conf (`our_host_name`, `max_worker_threads`) and
  the sanlock user's groups;
- hostvisor (service hostvisor): the keys /etc/vdsm/vdsm.conf lacks (an operator's
  values stay) and the agent's directories.

Each configurator answers `issues()` (empty: configured — `is-configured`),
`configure(force)` (the paths it wrote; without `force` only what differs is
written, so a second run writes nothing) and `problems()` (`validate-config`).
Every method runs on the caller's thread and blocks on file I/O and shadow's tools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostvisor.actors.host.facts import host_uuid
from hostvisor.api.tools import conffiles, pki
from hostvisor.api.tools.system import Host

PKI_DIR = "/etc/pki/vdsm"
VDSM_CONF = "/etc/vdsm/vdsm.conf"
STATE_DIR = "/var/lib/hostvisor"
LOG_FILE = "/var/log/vdsm/vdsm.log"
REPOSITORY = "/rhev/data-center"
QEMU_USER, QEMU_GROUP = "libvirt-qemu", "kvm"
SANLOCK_USER = "sanlock"
SANLOCK_GROUPS = frozenset({QEMU_GROUP, "disk"})
SANLOCK_LOCK_DRIVER = Path("/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/sanlock.so")
SYSTEMD_UNITS = "/lib/systemd/system"


def _quoted(value: str | Path) -> str:
    return f'"{value}"'


@dataclass(frozen=True)
class Context:
    """What every configurator reads: the host and whether the agent uses TLS."""

    host: Host

    @property
    def pki(self) -> pki.PkiFiles:
        """The host's PKI files."""
        return pki.PkiFiles(self.host.path(PKI_DIR))

    @property
    def ssl(self) -> bool:
        """`[vars] ssl` of the agent's config (VDSM's default, true, when unset)."""
        values = _ini(conffiles.read(self.host.path(VDSM_CONF)))
        return values.get(("vars", "ssl"), "true").strip().lower() in {"1", "true", "yes", "on"}

    @property
    def host_id(self) -> str:
        """This host's id (kept in the agent's state directory; VDSM's hardware id)."""
        return host_uuid(self.host.path(STATE_DIR))

    def socket_dir(self) -> Path:
        """Where libvirtd's unix sockets live."""
        return self.host.path("/run/libvirt")

    def libvirt_uri(self) -> str:
        """How the agent reaches the system libvirtd."""
        if self.host.real:
            return "qemu:///system"
        return f"qemu+unix:///system?socket={self.socket_dir() / 'libvirt-sock'}"


def _ini(text: str) -> dict[tuple[str, str], str]:
    values: dict[tuple[str, str], str] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        elif "=" in stripped and not stripped.startswith(("#", ";")):
            key, _, value = stripped.partition("=")
            values[(section, key.strip())] = value.strip()
    return values


class Configurator:
    """One module of `vdsm-tool configure`."""

    name = ""
    requires: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def __init__(self, ctx: Context) -> None:
        """Configure the host of `ctx`."""
        self.ctx = ctx

    def issues(self) -> list[str]:
        """What keeps the module from being configured (empty: configured)."""
        raise NotImplementedError

    def configure(self, *, force: bool) -> list[Path]:
        """Configure the module; return the paths written."""
        raise NotImplementedError

    def problems(self) -> list[str]:
        """What is inconsistent in the module's configuration (empty: valid)."""
        return []


class Certificates(Configurator):
    """The host's PKI and the copies libvirt (TLS, migration) and SPICE read."""

    name = "certificates"

    def _links(self) -> dict[Path, Path]:
        files, path = self.ctx.pki, self.ctx.host.path
        links = {}
        for folder in ("libvirt-spice", "libvirt-migrate"):
            base = path(f"{PKI_DIR}/{folder}")
            links[base / "ca-cert.pem"] = files.ca_cert
            links[base / "server-cert.pem"] = files.cert
            links[base / "server-key.pem"] = files.key
        links[path(f"{PKI_DIR}/libvirt-migrate/client-cert.pem")] = files.cert
        links[path(f"{PKI_DIR}/libvirt-migrate/client-key.pem")] = files.key
        links[path("/etc/pki/libvirt/clientcert.pem")] = files.cert
        links[path("/etc/pki/libvirt/private/clientkey.pem")] = files.key
        links[path("/etc/pki/CA/cacert.pem")] = files.ca_cert
        return links

    def issues(self) -> list[str]:
        """PKI problems (only when the agent uses TLS) and missing links."""
        if not self.ctx.ssl:
            return []
        found = pki.problems(self.ctx.pki)
        found += [f"{link} is missing" for link in self._links() if not link.exists()]
        return found

    def configure(self, *, force: bool) -> list[Path]:
        """Make a standalone PKI where none is (keeping the Engine's), then the links."""
        written = pki.make_standalone(self.ctx.pki, reissue=force and pki.ours(self.ctx.pki))
        for link, target in self._links().items():
            if link.is_symlink() and (force or link.readlink() != target):
                link.unlink()
            if not link.exists() and not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(target)
                written.append(link)
        return written

    def problems(self) -> list[str]:
        """The PKI must be consistent when the agent uses TLS."""
        return pki.problems(self.ctx.pki) if self.ctx.ssl else []


class Libvirt(Configurator):
    """libvirtd and QEMU for the agent."""

    name = "libvirt"
    requires = ("certificates",)
    services = ("libvirtd",)

    def _files(self) -> dict[Path, dict[str, str]]:
        ctx, path = self.ctx, self.ctx.host.path
        files = ctx.pki
        daemon: dict[str, str] = {"host_uuid": _quoted(ctx.host_id)}
        qemu: dict[str, str] = {
            "dynamic_ownership": "1",
            "save_image_format": '"raw"',
            "user": _quoted(QEMU_USER),
            "group": _quoted(QEMU_GROUP),
            "remote_display_port_min": "5900",
            "remote_display_port_max": "6923",
            "max_core": '"unlimited"',
        }
        if ctx.ssl:
            daemon |= {
                "ca_file": _quoted(files.ca_cert),
                "cert_file": _quoted(files.cert),
                "key_file": _quoted(files.key),
            }
            qemu |= {
                "migrate_tls_x509_cert_dir": _quoted(path(f"{PKI_DIR}/libvirt-migrate")),
                "spice_tls": "1",
                "spice_tls_x509_cert_dir": _quoted(path(f"{PKI_DIR}/libvirt-spice")),
            }
        else:
            daemon["auth_tcp"] = '"none"'
            qemu["spice_tls"] = "0"
        if not ctx.host.real:
            daemon["unix_sock_dir"] = _quoted(ctx.socket_dir())
        if SANLOCK_LOCK_DRIVER.exists():
            qemu["lock_manager"] = '"sanlock"'
        return {
            path("/etc/libvirt/libvirtd.conf"): daemon,
            path("/etc/libvirt/qemu.conf"): qemu,
            path("/etc/libvirt/qemu-sanlock.conf"): {
                "auto_disk_leases": "0",
                "require_lease_for_disks": "0",
            },
        }

    def _directories(self) -> list[Path]:
        return [
            self.ctx.host.path(folder)
            for folder in (
                "/var/log/libvirt/qemu",
                "/var/lib/libvirt/qemu",
                "/var/cache/libvirt/qemu",
                "/run/libvirt",
                "/etc/libvirt/qemu",
            )
        ]

    def _socket_unit(self) -> tuple[Path, Path]:
        unit = "libvirtd-tls.socket" if self.ctx.ssl else "libvirtd-tcp.socket"
        requires = self.ctx.host.path("/etc/systemd/system/libvirtd.service.requires")
        return requires / unit, Path(SYSTEMD_UNITS) / unit

    def _default_network(self) -> Path:
        return self.ctx.host.path("/etc/libvirt/qemu/networks/autostart/default.xml")

    def issues(self) -> list[str]:
        """Files whose section differs, missing directories, users, groups, the unit link."""
        found = [
            f"{path} lacks Hostvisor's settings"
            for path, settings in self._files().items()
            if conffiles.section_values(conffiles.read(path)) != settings
        ]
        found += [f"{d} is missing" for d in self._directories() if not d.is_dir()]
        host = self.ctx.host
        found += [f"group {g} is missing" for g in ("kvm", QEMU_USER) if g not in host.groups()]
        if QEMU_USER not in host.users():
            found.append(f"user {QEMU_USER} is missing")
        link, _target = self._socket_unit()
        if not link.is_symlink():
            found.append(f"{link} is missing")
        if self._default_network().exists():
            found.append(f"{self._default_network()} would start libvirt's default network")
        return found

    def configure(self, *, force: bool) -> list[Path]:
        """Write the sections, make the directories, users and groups, link the unit."""
        host = self.ctx.host
        written = []
        for path, settings in self._files().items():
            text = conffiles.render_section(conffiles.read(path), settings)
            if conffiles.write_if_changed(path, text, force=force):
                written.append(path)
        for directory in self._directories():
            if not directory.is_dir():
                directory.mkdir(parents=True, mode=0o755)
                written.append(directory)
        host.add_group(QEMU_GROUP)
        host.add_group(QEMU_USER)
        host.add_user(QEMU_USER, group=QEMU_GROUP, groups=(QEMU_USER,), home="/var/lib/libvirt")
        link, target = self._socket_unit()
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
            written.append(link)
            host.services.reload()
        if self._default_network().exists():
            self._default_network().unlink()
            written.append(self._default_network())
        return written

    def problems(self) -> list[str]:
        """The TLS settings of libvirt must agree with the agent's `ssl` (as VDSM checks)."""
        path = self.ctx.host.path
        daemon = conffiles.effective(conffiles.read(path("/etc/libvirt/libvirtd.conf")))
        qemu = conffiles.effective(conffiles.read(path("/etc/libvirt/qemu.conf")))
        auth_tcp = daemon.get("auth_tcp", '"sasl"')
        spice_tls = qemu.get("spice_tls", "0")
        if self.ctx.ssl and (auth_tcp == '"none"' or spice_tls == "0"):
            return ['ssl = true needs libvirtd.conf auth_tcp != "none" and qemu.conf spice_tls=1']
        if not self.ctx.ssl and (auth_tcp != '"none"' or spice_tls != "0"):
            return ['ssl = false needs libvirtd.conf auth_tcp = "none" and qemu.conf spice_tls=0']
        return []


class Sanlock(Configurator):
    """sanlock for the agent's leases."""

    name = "sanlock"
    services = ("sanlock",)

    def _conf(self) -> tuple[Path, dict[str, str]]:
        settings = {"our_host_name": self.ctx.host_id, "max_worker_threads": "50"}
        return self.ctx.host.path("/etc/sanlock/sanlock.conf"), settings

    def issues(self) -> list[str]:
        """The config file's settings and the sanlock user's groups."""
        path, settings = self._conf()
        values = conffiles.effective(conffiles.read(path))
        found = [f"{path}: {key} is not {value}" for key, value in settings.items()
                 if values.get(key) != value]  # fmt: skip
        host = self.ctx.host
        if SANLOCK_USER not in host.users():
            return [*found, f"user {SANLOCK_USER} is missing"]
        missing = SANLOCK_GROUPS - host.user_groups(SANLOCK_USER)
        return found + [f"user {SANLOCK_USER} is not in {', '.join(sorted(missing))}"] * bool(
            missing
        )

    def configure(self, *, force: bool) -> list[Path]:
        """Write the settings; create the user or add it to the groups it lacks."""
        path, settings = self._conf()
        text = conffiles.render_section(conffiles.read(path), settings)
        written = [path] if conffiles.write_if_changed(path, text, force=force) else []
        host = self.ctx.host
        for group in sorted(SANLOCK_GROUPS):
            host.add_group(group)
        host.add_group(SANLOCK_USER)
        if not host.add_user(
            SANLOCK_USER, group=SANLOCK_USER, groups=tuple(sorted(SANLOCK_GROUPS)),
            home="/run/sanlock",
        ):  # fmt: skip
            host.add_to_groups(SANLOCK_USER, set(SANLOCK_GROUPS))
        return written


class Agent(Configurator):
    """The agent's own configuration file and directories."""

    name = "hostvisor"
    requires = ("certificates",)
    services = ("hostvisor",)

    def _wanted(self) -> dict[str, dict[str, str]]:
        ctx, path = self.ctx, self.ctx.host.path
        files = ctx.pki
        return {
            "vars": {"ssl": "true"},
            "addresses": {"management_ip": "0.0.0.0", "management_port": "54321"},  # noqa: S104
            "hostvisor": {
                "state_dir": str(path(STATE_DIR)),
                "libvirt_uri": ctx.libvirt_uri(),
                "log_file": str(path(LOG_FILE)),
                "key_file": str(files.key),
                "cert_file": str(files.cert),
                "ca_file": str(files.ca_cert),
            },
            "irs": {"repository": str(path(REPOSITORY))},
        }

    def _directories(self) -> list[Path]:
        path = self.ctx.host.path
        return [path(STATE_DIR), path(LOG_FILE).parent, path(REPOSITORY)]

    def issues(self) -> list[str]:
        """Keys the config lacks and missing directories."""
        conf = self.ctx.host.path(VDSM_CONF)
        present = _ini(conffiles.read(conf))
        found = [
            f"{conf} lacks [{section}] {key}"
            for section, keys in self._wanted().items()
            for key in keys
            if (section, key) not in present
        ]
        return found + [f"{d} is missing" for d in self._directories() if not d.is_dir()]

    def configure(self, *, force: bool) -> list[Path]:
        """Add the missing keys (never changing an operator's value); make the directories."""
        conf = self.ctx.host.path(VDSM_CONF)
        text = conffiles.render_missing(conffiles.read(conf), self._wanted())
        written = [conf] if conffiles.write_if_changed(conf, text, force=force) else []
        for directory in self._directories():
            if not directory.is_dir():
                directory.mkdir(parents=True, mode=0o755)
                written.append(directory)
        return written

    def problems(self) -> list[str]:
        """The agent must accept its configuration (the checks `hostvisor serve` makes)."""
        from hostvisor.actors.errors import InvalidArgument  # noqa: PLC0415
        from hostvisor.api.tls import check_server_files  # noqa: PLC0415
        from hostvisor.supervision.config import load_config, validate  # noqa: PLC0415

        try:
            config = load_config(self.ctx.host.path(VDSM_CONF))
            validate(config)
            if config.ssl:
                check_server_files(cert=config.cert_file, key=config.key_file, ca=config.ca_file)
        except InvalidArgument as error:
            return [str(error)]
        return []


MODULES: dict[str, Callable[[Context], Configurator]] = {
    "certificates": Certificates,
    "libvirt": Libvirt,
    "sanlock": Sanlock,
    "hostvisor": Agent,
}
"""Every module by name, in an order that satisfies `requires`."""
