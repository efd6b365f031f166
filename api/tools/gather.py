"""The parts of a log collection: each gathers one kind of evidence into the staging area.

A part is a function of the `Context`. It returns a short detail for the progress
line, raises `Skipped` when there is nothing of its kind on this host (no journal,
no docker), and raises anything else when it failed; `collect` records each outcome
in the manifest and goes on with the next part. Parts that ask the agent share one
API connection (`Context.api`), made on first use: when the agent does not answer,
each of them fails at once with the same reason while the file-reading parts still
run.

Every part runs on the collector's (main) thread and blocks: on the API (each call
bounded by `API_TIMEOUT`), the admin socket, docker's socket, `ip`, `journalctl`
and file reads.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import platform
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

from hostvisor.actors.container.engine import API_VERSION as DOCKER_API_VERSION
from hostvisor.api.admin.channel import socket_path
from hostvisor.api.admin.client import AdminClient
from hostvisor.api.client import Client, connect
from hostvisor.api.tls import client_context
from hostvisor.api.tools.archive import Staging
from hostvisor.api.tools.redact import Redactor, secret_key
from hostvisor.supervision.config import Config

API_TIMEOUT = 30.0
"""Seconds one API call may take."""
COMMAND_TIMEOUT = 60.0
"""Seconds a command (ip, journalctl) may take."""
BLANK = "00000000-0000-0000-0000-000000000000"
VM_LABEL = "org.ovirt.hostvisor.vm-id"
_LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})")


class Skipped(Exception):
    """The part has nothing to gather on this host (the reason is the message)."""


@dataclass
class Context:
    """What every part may use. Built by `collect`; used on its thread only."""

    config: Config
    config_path: Path | None
    staging: Staging
    redactor: Redactor
    since: dt.datetime | None = None
    admin_socket: Path | None = None
    vm_names: dict[str, str] = field(default_factory=dict)
    """VM id -> libvirt name, learned by the `vms` part (for `libvirt-logs`)."""
    _client: Client | None = None
    _api_error: str = ""

    def api(self) -> Client:
        """The agent's API (connected on first use). Raises ConnectionError when down."""
        if self._client is not None:
            return self._client
        if self._api_error:
            raise ConnectionError(self._api_error)
        config = self.config
        host = config.management_ip
        if host in {"", "0.0.0.0", "::"}:  # noqa: S104 - a listening address, not a bind
            host = "127.0.0.1"
        tls = None
        if config.ssl:  # the host's own certificate, as vdsm-client on the host does
            tls = client_context(ca=config.ca_file, cert=config.cert_file, key=config.key_file)
        try:
            self._client = connect(host, config.management_port, tls=tls, timeout=API_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - any failure to connect is the reason
            self._api_error = f"the agent's API at {host}:{config.management_port}: {error}"
            raise ConnectionError(self._api_error) from None
        return self._client

    def call(self, method: str, **params: Any) -> Any:
        """One API call (blocking, at most API_TIMEOUT). Raises ServerError, OSError."""
        return self.api().call(method, params)

    def write_json(self, name: str, data: Any) -> str:
        """Stage `data` as JSON with its secrets masked; return `name`."""
        clean = self.redactor.structure(data)
        return self.staging.write_text(name, json.dumps(clean, indent=2, sort_keys=True) + "\n")

    def close(self) -> None:
        """Close the API connection, if any."""
        if self._client is not None:
            self._client.close()
            self._client = None


Part = Callable[[Context], str]


def run(argv: list[str]) -> str:
    """Run a command; return its stdout. Raises OSError, CalledProcessError, TimeoutExpired."""
    return subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT
    ).stdout


# -- files of the host -----------------------------------------------------------------------


def agent_logs(ctx: Context) -> str:
    """The agent's log file and its rotations (lines since `since`), and its journal."""
    copied = 0
    log_file = ctx.config.log_file
    if log_file is not None:
        for path in sorted(log_file.parent.glob(log_file.name + "*")):
            if path.is_file() and _recent(path, ctx.since):
                name = path.name.removesuffix(".gz")
                with ctx.staging.path(f"logs/{name}").open("w", encoding="utf-8") as out:
                    for line in _since_lines(_read_lines(path), ctx.since):
                        out.write(line)
                copied += 1
    journal = _journal(ctx)
    if log_file is None and not journal:
        raise Skipped("no [hostvisor] log_file and no journal of hostvisor.service")
    return f"{copied} log file(s)" + (", the journal" if journal else "")


def _journal(ctx: Context) -> bool:
    if shutil.which("journalctl") is None:
        return False
    argv = ["journalctl", "--no-pager", "-o", "short-iso", "-u", "hostvisor.service"]
    if ctx.since is not None:
        argv += ["--since", ctx.since.strftime("%Y-%m-%d %H:%M:%S")]
    try:
        text = run(argv)
    except (OSError, subprocess.SubprocessError):
        return False
    if not text.strip() or text.strip().startswith("-- No entries --"):
        return False
    ctx.staging.write_text("logs/journal-hostvisor.txt", text)
    return True


def _recent(path: Path, since: dt.datetime | None) -> bool:
    return since is None or dt.datetime.fromtimestamp(path.stat().st_mtime) >= since  # noqa: DTZ006 - local


def _read_lines(path: Path) -> Iterator[str]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
        yield from stream


def _since_lines(lines: Iterator[str], since: dt.datetime | None) -> Iterator[str]:
    """Lines logged at or after `since`; a line without a time follows the one before."""
    keep = since is None
    for line in lines:
        match = _LOG_TIME.match(line)
        if match and since is not None:
            stamp = match.group(1)
            keep = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S") >= since  # noqa: DTZ007
        if keep:
            yield line


def config_part(ctx: Context) -> str:
    """The INI file as written (secrets masked) and the effective configuration."""
    names = []
    if ctx.config_path is not None:
        names.append(ctx.staging.write_text("config/vdsm.conf", ctx.config_path.read_text()))
    effective = {key: str(value) for key, value in asdict(ctx.config).items()}
    names.append(ctx.write_json("config/effective.json", effective))
    return ", ".join(names)


def system(ctx: Context) -> str:
    """Who and when: host name, kernel, time of collection, the command's options."""
    info = {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "collected_at": dt.datetime.now(dt.UTC).isoformat(),
        "since": ctx.since.isoformat() if ctx.since else None,
    }
    return ctx.write_json("system.json", info)


def network(ctx: Context) -> str:
    """Links, addresses and routes (`ip -json`, in the agent's namespace) and netconf."""
    namespace = ["-n", ctx.config.net_namespace] if ctx.config.net_namespace else []
    for name, args in {
        "links": ["-details", "link", "show"],
        "addresses": ["address", "show"],
        "routes": ["route", "show", "table", "all"],
        "routes6": ["-6", "route", "show", "table", "all"],
        "rules": ["rule", "show"],
    }.items():
        text = run(["ip", "-json", *namespace, *args])
        ctx.write_json(f"network/{name}.json", json.loads(text or "[]"))
    persisted = ctx.config.state_dir / "netconf"
    copied = 0
    for path in sorted(persisted.glob("*.json")) if persisted.is_dir() else []:
        ctx.write_json(f"network/netconf/{path.name}", json.loads(path.read_text()))
        copied += 1
    return f"ip state, {copied} persisted config(s)"


def storage_files(ctx: Context) -> str:
    """The stored connections and pool, and every mounted domain's metadata file."""
    stored = ctx.config.state_dir / "storage"
    copied = 0
    for path in sorted(stored.glob("*.json")) if stored.is_dir() else []:
        ctx.write_json(f"storage/{path.name}", json.loads(path.read_text()))
        copied += 1
    domains = 0
    mounts = ctx.config.mount_root
    for metadata in sorted(mounts.glob("*/*/dom_md/metadata")) if mounts.is_dir() else []:
        sd_uuid = metadata.parent.parent.name
        text = metadata.read_bytes()[: 1024 * 1024].decode(errors="replace")
        ctx.staging.write_text(f"storage/domains/{sd_uuid}/metadata", text)
        domains += 1
    return f"{copied} stored file(s), {domains} domain metadata file(s)"


def libvirt_logs(ctx: Context) -> str:
    """The QEMU log (libvirt's) of each VM the `vms` part found (lines since `since`)."""
    if not ctx.vm_names:
        raise Skipped("no VM (or the VM list could not be read)")
    directory = qemu_log_dir(ctx.config)
    copied = []
    for vm_id, name in sorted(ctx.vm_names.items()):
        path = directory / f"{name}.log"
        if path.is_file():
            with ctx.staging.path(f"libvirt/qemu/{vm_id}.log").open("w") as out:
                out.writelines(_read_lines(path))
            copied.append(vm_id)
    return f"{len(copied)} of {len(ctx.vm_names)} VM log(s) in {directory}"


def qemu_log_dir(config: Config) -> Path:
    """Where libvirt writes the QEMU logs of the agent's libvirt."""
    uri = config.libvirt_uri
    if not uri:
        return config.embed_root / "log" / "qemu"
    parts = urlsplit(uri)
    if parts.path == "/embed":
        root = parse_qs(parts.query).get("root", [str(config.embed_root)])[0]
        return Path(root) / "log" / "qemu"
    return Path("/var/log/libvirt/qemu")


# -- the running agent -----------------------------------------------------------------------


def supervision(ctx: Context) -> str:
    """The supervision snapshot, from the admin socket."""
    path = ctx.admin_socket or socket_path(ctx.config.state_dir)
    try:
        admin = AdminClient(path, timeout=API_TIMEOUT)
    except OSError as error:
        raise ConnectionError(f"the admin socket {path}: {error.strerror or error}") from None
    with admin:
        snapshot = admin.snapshot()
    ctx.write_json("supervision.json", snapshot)
    lines = [
        f"{a['path']:<70} {a['state']:<9} mailbox={a['mailbox_depth']:<5} "
        f"handled={a['messages_handled']:<9} restarts={a['restarts']} "
        f"{a['last_restart_reason'] or ''}"
        for a in snapshot["actors"]
    ]
    ctx.staging.write_text("supervision.txt", "\n".join(lines) + "\n")
    return f"{len(snapshot['actors'])} actors"


def capabilities(ctx: Context) -> str:
    """Host.getCapabilities."""
    return ctx.write_json("capabilities.json", ctx.call("Host.getCapabilities"))


def stats(ctx: Context) -> str:
    """Host.getStats and Host.getAllVmStats."""
    ctx.write_json("stats/host.json", ctx.call("Host.getStats"))
    vms = ctx.call("Host.getAllVmStats")
    ctx.write_json("stats/vms.json", vms)
    return f"host and {len(vms)} VM(s)"


def vms(ctx: Context) -> str:
    """Every VM's definition (Host.getVMFullList) and live domain XML (Host.dumpxmls)."""
    full = ctx.call("Host.getVMFullList")
    ctx.write_json("vms/list.json", full)
    xmls: dict[str, str] = ctx.call("Host.dumpxmls", vmList=[])
    for vm_id, xml in sorted(xmls.items()):
        ctx.redactor.learn(_xml_secrets(xml))
        ctx.staging.write_text(f"vms/{vm_id}.xml", ctx.redactor.text(xml))
        name = _xml_name(xml)
        if name:
            ctx.vm_names[vm_id] = name
    return f"{len(xmls)} VM(s)"


def _xml_secrets(xml: str) -> list[str]:
    try:
        root = ET.fromstring(xml)  # noqa: S314 - the agent's own XML
    except ET.ParseError:
        return []
    found = [
        value
        for element in root.iter()
        for key, value in element.attrib.items()
        if secret_key(key.rsplit("}", 1)[-1])
    ]
    found += [
        element.text or ""
        for element in root.iter()
        if isinstance(element.tag, str) and secret_key(element.tag.rsplit("}", 1)[-1])
    ]
    return found


def _xml_name(xml: str) -> str:
    try:
        return (ET.fromstring(xml).findtext("name") or "").strip()  # noqa: S314
    except ET.ParseError:
        return ""


def containers(ctx: Context) -> str:
    """The docker inspect of every container VM (labelled with its VM id), Env masked."""
    try:
        import docker  # noqa: PLC0415 - only this part needs it
    except ImportError as error:
        raise Skipped(f"the docker SDK is missing: {error}") from None
    where = ctx.config.docker_socket
    if where.startswith("unix://") and not Path(where.removeprefix("unix://")).exists():
        raise Skipped(f"no docker engine at {where}")
    client = docker.APIClient(base_url=where, version=DOCKER_API_VERSION, timeout=API_TIMEOUT)
    try:
        found = client.containers(all=True, filters={"label": VM_LABEL})
        for summary in found:
            inspected = client.inspect_container(summary["Id"])
            vm_id = (inspected.get("Config", {}).get("Labels") or {}).get(VM_LABEL, summary["Id"])
            ctx.write_json(f"containers/{vm_id}.json", inspected)
    finally:
        client.close()
    return f"{len(found)} container VM(s)"


def storage_api(ctx: Context) -> str:
    """The connected storage domains (Host.getStorageDomains) and each one's info."""
    domains = ctx.call("Host.getStorageDomains", storagepoolID=BLANK)
    ctx.write_json("storage/domains.json", domains)
    for sd_uuid in domains:
        try:
            info = ctx.call("StorageDomain.getInfo", storagedomainID=sd_uuid)
        except Exception as error:  # noqa: BLE001 - one domain's failure is recorded, not fatal
            info = {"error": str(error)}
        ctx.write_json(f"storage/domains/{sd_uuid}/info.json", info)
    return f"{len(domains)} domain(s)"


PARTS: tuple[tuple[str, Part], ...] = (
    ("system", system),
    ("config", config_part),
    ("agent-logs", agent_logs),
    ("supervision", supervision),
    ("capabilities", capabilities),
    ("stats", stats),
    ("vms", vms),
    ("containers", containers),
    ("network", network),
    ("storage", storage_files),
    ("storage-domains", storage_api),
    ("libvirt-logs", libvirt_logs),
)
"""Every part, in the order it runs (`libvirt-logs` after `vms`: it needs their names)."""


def timed(part: Part, ctx: Context) -> tuple[str, str, float]:
    """Run one part; return (status, detail, seconds). Never raises (but BaseException)."""
    started = time.monotonic()
    try:
        detail = part(ctx)
        status = "ok"
    except Skipped as skipped:
        status, detail = "skipped", str(skipped)
    except Exception as error:  # noqa: BLE001 - a failed part is recorded; the rest go on
        status, detail = "failed", f"{type(error).__name__}: {error}"
    return status, ctx.redactor.text(detail), time.monotonic() - started
