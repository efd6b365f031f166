"""Storage server connections: LOCALFS links, POSIXFS, NFS and GLUSTERFS mounts (blocking).

reference/vdsm-wire.md §3.1 (connectStorageServer) and §8. A connection makes a
storage server's file system appear under the data-center mount root, at
`mount_point(mount_root, connection)`, where the storage domains are looked for:

- LOCALFS mounts nothing: the local directory is symlinked there;
- POSIXFS runs `mount [-t vfs_type] [-o mnt_options] <connection> <mount point>`;
- NFS does the same with `-t nfs` and VDSM's options (soft, nosharecache, timeo,
  retrans, nfsvers/minorversion, and nolock for NFSv3 or auto);
- GLUSTERFS mounts `server:/volume` with `-t glusterfs` (the FUSE client) under
  `<mount root>/glusterSD/`, as VDSM's GlusterFSConnection does, adding
  `backup-volfile-servers=` for the volume's other brick hosts, which the gluster CLI
  reports (`gluster --remote-host=server volume info volume --xml`), unless the
  Engine's `mnt_options` name some already. No gluster CLI, or a server that does
  not answer: mounted without backups, with a warning (VDSM's behaviour too).

`connect` and `disconnect` answer VDSM's per-connection status, an int: 0 when it
worked, else the code of the storage error (477 mount failed, 469 permission
denied, 1000 not a directory, ...). They never raise for a storage failure, because
the verb answers one `{id, status}` per connection. They block (mount(8) can hang on
a dead server): call them from a worker thread, never from an actor's loop.

Differences from VDSM, on purpose:
- disconnecting a mount connection that is not mounted answers 0 (VDSM runs
  `umount -f -l` anyway, which fails, and answers 477 although its own connection
  contract says "if already disconnected fail silently"; LOCALFS answers 0 in both);
- connecting where a *different* source is already mounted answers 477 instead of
  stacking a second mount over the first;
- a GLUSTERFS connection without `vfs_type` mounts with `-t glusterfs` (the Engine
  always sends it; VDSM would let mount(8) guess, which fails for a gluster spec).

The FUSE client of a GLUSTERFS mount (`glusterfs`) runs on as a daemon of its own
after mount(8) returns and ends when the mount is unmounted. VDSM starts it in a
systemd scope of its own (`vdsm-glusterfs.slice`) so that stopping the agent's unit
does not kill it; Hostvisor's unit (contrib/hostvisor.service, `KillMode=process`)
stops only the agent's own process, so the client, like the guests, outlives it.

`ConnectionStore` persists what is connected so that an agent restart reconnects it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.storage.errors import (
    MountError,
    StorageDomainTypeError,
    StorageServerConnectionError,
)
from hostvisor.actors.storage.model import DomainType, mount_point

log = logging.getLogger(__name__)

CONNECTABLE_TYPES = frozenset(
    {DomainType.LOCALFS, DomainType.POSIXFS, DomainType.NFS, DomainType.GLUSTERFS}
)
"""The connection types this host implements."""

MOUNT_TIMEOUT = 180.0
"""Seconds mount(8) or umount(8) may take before the connection is given up."""

NFS_DEFAULT_TIMEOUT = 100
"""NFS `timeo` in deciseconds when the Engine sends none (VDSM's default)."""
NFS_DEFAULT_RETRANS = 3
"""NFS `retrans` when the Engine sends none (VDSM's default)."""
GLUSTER_DIR = "glusterSD"
"""Where GLUSTERFS connections are mounted under the mount root (VDSM's DIR)."""
GLUSTER_CLI_TIMEOUT = 30.0
"""Seconds `gluster volume info` may take before the mount goes on without backups."""

OK = 0


class StorageServerAccessPermissionError(HostvisorError):
    """The connected directory cannot be read, written and searched by the agent."""

    code = 469
    message = (
        "Permission settings on the specified path do not allow access to the storage. "
        "Verify permission settings on the specified storage path."
    )


class InvalidStorageParameter(HostvisorError):
    """A storage parameter's value is wrong (VDSM's InvalidParameterException)."""

    code = 1000
    message = "Invalid parameter"


# -- the connection -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConnection:
    """One storage server connection, as connectStorageServer names it.

    Attributes:
        id: the Engine's id of the connection (a UUID string).
        connection: the local directory (LOCALFS), device or remote spec (POSIXFS),
            or `server:/export` (NFS); mount specs are normalized.
        domain_type: LOCALFS, POSIXFS, NFS or GLUSTERFS.
        vfs_type: the file system type for POSIXFS ("" lets mount(8) detect it) and
            GLUSTERFS ("" is "glusterfs").
        mnt_options: extra mount options, comma separated.
        protocol_version: NFS version ("3", "4", "4.1", ...; "" or "auto": negotiate).
        retrans: NFS retransmissions (None: VDSM's default).
        timeout: NFS timeout in deciseconds (None: VDSM's default).
    """

    id: str
    connection: str
    domain_type: DomainType
    vfs_type: str = ""
    mnt_options: str = ""
    protocol_version: str = ""
    retrans: int | None = None
    timeout: int | None = None

    @classmethod
    def from_wire(cls, domain_type: int, params: Mapping[str, Any]) -> ServerConnection:
        """Build a connection from the verb's `domainType` and one `connectionParams` entry.

        Raises:
            InvalidArgument: `id` or `connection` is missing or not a string, or a
                numeric field is not a number.
            StorageDomainTypeError: the type is not LOCALFS, POSIXFS, NFS or GLUSTERFS.
        """
        kind = _domain_type(domain_type)
        if not isinstance(params, Mapping):
            raise InvalidArgument(reason="a connection must be an object", value=params)
        conn_id = params.get("id")
        spec = params.get("connection")
        if not isinstance(conn_id, str) or not conn_id:
            raise InvalidArgument(param="id", reason="missing or not a string")
        if not isinstance(spec, str) or not spec.strip():
            raise InvalidArgument(param="connection", reason="missing or empty", id=conn_id)
        if kind is not DomainType.LOCALFS:
            spec = normalize_spec(spec)
        if kind is DomainType.GLUSTERFS:
            gluster_volume(spec)  # `server:/volume` or refused
        conn = cls(
            id=conn_id,
            connection=spec,
            domain_type=kind,
            vfs_type=_text(params, "vfs_type"),
            mnt_options=_text(params, "mnt_options"),
            protocol_version=_text(params, "protocol_version"),
            retrans=_number(params, "retrans"),
            timeout=_number(params, "timeout"),
        )
        conn.mount_options()  # an NFS version that is not one is refused here, not at mount
        return conn

    def mount_point(self, mount_root: Path) -> Path:
        """Where this connection appears under `mount_root` (GLUSTERFS: in `glusterSD/`)."""
        if self.domain_type is DomainType.GLUSTERFS:
            return mount_point(mount_root / GLUSTER_DIR, self.connection)
        return mount_point(mount_root, self.connection)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the store's record)."""
        record = asdict(self)
        record["domain_type"] = int(self.domain_type)
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> ServerConnection:
        """Rebuild a connection from `to_json`'s dict."""
        fields = dict(record)
        fields["domain_type"] = DomainType(fields["domain_type"])
        return cls(**fields)

    def mount_options(self) -> str:
        """The `-o` argument mount(8) gets ("" for none)."""
        if self.domain_type is not DomainType.NFS:
            return self.mnt_options
        return ",".join(_nfs_options(self))

    def mount_type(self) -> str:
        """The `-t` argument mount(8) gets ("" for none)."""
        if self.domain_type is DomainType.NFS:
            return "nfs"
        if self.domain_type is DomainType.GLUSTERFS:
            return self.vfs_type or "glusterfs"
        return self.vfs_type


def _domain_type(value: Any) -> DomainType:
    try:
        kind = DomainType(int(value))
    except (TypeError, ValueError):
        raise StorageDomainTypeError(domainType=value) from None
    if kind not in CONNECTABLE_TYPES:
        raise StorageDomainTypeError(domainType=value)
    return kind


def _text(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None:
        return ""
    return str(value).strip()


def _number(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(param=name, reason="not a number", value=value) from None


def normalize_spec(spec: str) -> str:
    """Normalize a mount spec's path part: `server:/a//b/` -> `server:/a/b`, `/dev//x` -> `/dev/x`.

    The mount point's name is built from the spec, so the same export written two
    ways must give one mount point.
    """
    spec = spec.strip()
    host, sep, path = spec.partition(":/")
    if sep:
        return f"{host}:{_normpath(path)}"
    if spec.startswith("/"):
        return _normpath(spec)
    return spec


def _normpath(path: str) -> str:
    # normpath keeps a leading "//" (POSIX leaves its meaning open); Linux does not care.
    return os.path.normpath("/" + path.lstrip("/"))


def _nfs_options(conn: ServerConnection) -> list[str]:
    timeout = NFS_DEFAULT_TIMEOUT if conn.timeout is None else conn.timeout
    retrans = NFS_DEFAULT_RETRANS if conn.retrans is None else conn.retrans
    options = ["soft", "nosharecache", f"timeo={timeout}", f"retrans={retrans}"]
    version = "" if conn.protocol_version in ("", "auto") else conn.protocol_version
    if version:
        parts = version.split(".")
        if len(parts) > 2 or not all(p.isdigit() for p in parts):  # noqa: PLR2004
            raise InvalidArgument(param="protocol_version", value=version)
        options.append(f"nfsvers={parts[0]}")
        if len(parts) == 2:  # noqa: PLR2004
            options.append(f"minorversion={parts[1]}")
    extra = [option for option in conn.mnt_options.split(",") if option]
    if version in ("", "3") and "lock" not in extra and "nolock" not in extra:
        extra.append("nolock")  # NFSv3 remote locks break HA VM fail-over (VDSM's choice)
    return options + extra


# -- GlusterFS ----------------------------------------------------------------------------


def gluster_volume(spec: str) -> tuple[str, str]:
    """(server, volume) of a GLUSTERFS spec `server:/volume` (VDSM's split).

    Raises:
        InvalidArgument: the spec names no server or no volume.
    """
    server, sep, volume = spec.partition(":")
    volume = volume.strip("/")
    if not sep or not server or not volume or "/" in volume:
        raise InvalidArgument(param="connection", value=spec, reason="not server:/volume")
    return server, volume


def gluster_brick_hosts(server: str, volume: str) -> list[str] | None:
    """The hosts of `volume`'s bricks, in brick order, as `server`'s glusterd reports them.

    None when the gluster CLI is missing or the server cannot tell (logged). Blocks up
    to GLUSTER_CLI_TIMEOUT s (the CLI asks glusterd on `server` over TCP 24007).
    """
    cli = shutil.which("gluster")
    if cli is None:
        log.warning("no gluster CLI (Debian glusterfs-server): no backup volfile servers")
        return None
    argv = [cli, "--mode=script", f"--remote-host={server}", "--log-file=/dev/null"]
    argv += ["volume", "info", volume, "--xml"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=GLUSTER_CLI_TIMEOUT, check=False
        )
        root = ET.fromstring(done.stdout)  # noqa: S314 - written by the local CLI (libxml2)
    except (OSError, subprocess.TimeoutExpired, ET.ParseError) as error:
        log.warning("gluster volume info %s from %s failed: %s", volume, server, error)
        return None
    if done.returncode != 0 or root.findtext("opRet") != "0":
        reason = root.findtext("opErrstr") or done.stderr.strip()[-200:]
        log.warning("gluster volume info %s from %s: %s", volume, server, reason)
        return None
    hosts = []
    for brick in root.iterfind("volInfo/volumes/volume/bricks/brick"):
        name = brick.findtext("name") or (brick.text or "")
        host = name.rpartition(":")[0]
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def gluster_options(conn: ServerConnection) -> str:
    """A GLUSTERFS mount's `-o`: the Engine's options plus `backup-volfile-servers=`.

    VDSM's GlusterFSConnection.options: the volume's other brick hosts become backup
    volfile servers, so the mount works while the named server is down; options that
    already name backups are kept as they are. Blocks (the gluster CLI).
    """
    if "backup-volfile-servers" in conn.mnt_options:
        log.warning("%s: using the backup-volfile-servers the Engine sent", conn.connection)
        return conn.mnt_options
    server, volume = gluster_volume(conn.connection)
    hosts = gluster_brick_hosts(server, volume) or []
    if hosts and server not in hosts:
        log.warning("gluster server %s is not among the bricks' hosts %s", server, hosts)
    backups = [host for host in hosts if host != server]
    extra = f"backup-volfile-servers={':'.join(backups)}" if backups else ""
    return ",".join(option for option in (conn.mnt_options, extra) if option)


# -- mounts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MountRecord:
    """One line of /proc/self/mountinfo: what is mounted where."""

    source: str
    target: str
    fs_type: str


def _unescape(field: str) -> str:
    r"""Undo mountinfo's octal escapes (`\040` is a space)."""
    if "\\" not in field:
        return field
    raw = field.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="surrogateescape")


def mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountRecord]:
    """Return every mount this process sees, in mount order."""
    records = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        records.append(
            MountRecord(
                source=_unescape(fields[dash + 2]),
                target=_unescape(fields[4]),
                fs_type=fields[dash + 1],
            )
        )
    return records


def mounted_at(target: Path) -> MountRecord | None:
    """Return the topmost mount at `target`, or None."""
    wanted = os.path.normpath(target)
    found = None
    for record in mounts():
        if record.target == wanted:
            found = record
    return found


def _same_source(record: MountRecord, spec: str) -> bool:
    if record.source == spec:
        return True
    return spec.startswith("/") and os.path.realpath(spec) == os.path.realpath(record.source)


def _run(argv: list[str]) -> None:
    """Run mount(8) or umount(8); raise MountError with its message when it fails."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise MountError(
            command=" ".join(argv), reason=f"timed out after {MOUNT_TIMEOUT} s"
        ) from None
    except OSError as error:
        raise MountError(command=" ".join(argv), reason=str(error)) from None
    if done.returncode != 0:
        raise MountError(
            command=" ".join(argv), rc=done.returncode, stderr=done.stderr.strip()[-500:]
        )


def _check_access(path: Path) -> None:
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StorageServerAccessPermissionError(path=str(path))


# -- connect / disconnect -----------------------------------------------------------------


def connect(conn: ServerConnection, mount_root: Path) -> int:
    """Make `conn` appear under `mount_root`; return VDSM's status (0 = connected).

    Idempotent: a link already pointing at the directory, or the same source
    already mounted at the mount point, is left as it is and answers 0. Blocks
    (mount(8)); never raises for a storage failure, which is logged and answered
    as its code.
    """
    try:
        mount_root.mkdir(parents=True, exist_ok=True)
        if conn.domain_type is DomainType.LOCALFS:
            _link(conn, mount_root)
        else:
            _mount(conn, mount_root)
    except HostvisorError as error:
        log.warning("connecting %s (%s) failed: %s", conn.id, conn.connection, error)
        return error.code
    except OSError as error:
        log.warning("connecting %s (%s) failed: %s", conn.id, conn.connection, error)
        return StorageServerConnectionError.code
    log.info("connected %s: %s at %s", conn.id, conn.connection, conn.mount_point(mount_root))
    return OK


def disconnect(conn: ServerConnection, mount_root: Path) -> int:
    """Remove `conn`'s link or unmount it; return VDSM's status (0 = disconnected).

    Disconnecting what is not connected answers 0 (see the module docstring). Blocks
    (umount(8)); never raises for a storage failure.
    """
    target = conn.mount_point(mount_root)
    try:
        if conn.domain_type is DomainType.LOCALFS:
            with contextlib.suppress(FileNotFoundError):
                if target.is_symlink():
                    target.unlink()
        else:
            _unmount(conn, target)
    except HostvisorError as error:
        log.warning("disconnecting %s (%s) failed: %s", conn.id, conn.connection, error)
        return error.code
    except OSError as error:
        log.warning("disconnecting %s (%s) failed: %s", conn.id, conn.connection, error)
        return StorageServerConnectionError.code
    log.info("disconnected %s: %s", conn.id, conn.connection)
    return OK


def _link(conn: ServerConnection, mount_root: Path) -> None:
    directory = Path(conn.connection)
    if not directory.is_dir():
        raise InvalidStorageParameter(path=conn.connection, reason="not a directory")
    _check_access(directory)
    link = conn.mount_point(mount_root)
    if link.is_symlink():
        if os.path.normpath(link.readlink()) == os.path.normpath(conn.connection):
            return
        link.unlink()  # a stale link to somewhere else: VDSM replaces it too
    elif link.exists():
        raise StorageServerConnectionError(
            path=str(link), reason="exists and is not a link to the directory"
        )
    link.symlink_to(conn.connection)


def _mount(conn: ServerConnection, mount_root: Path) -> None:
    target = conn.mount_point(mount_root)
    current = mounted_at(target)
    if current is not None:
        if _same_source(current, conn.connection):
            return
        raise MountError(
            mount_point=str(target), reason=f"{current.source} is already mounted there"
        )
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    argv = ["mount"]
    if conn.mount_type():
        argv += ["-t", conn.mount_type()]
    if conn.domain_type is DomainType.GLUSTERFS:
        options = gluster_options(conn)
    else:
        options = conn.mount_options()
    if options:
        argv += ["-o", options]
    argv += [conn.connection, str(target)]
    try:
        _run(argv)
    except MountError:
        if created:
            _remove_dir(target)
        raise
    try:
        _check_access(target)
    except StorageServerAccessPermissionError:
        _unmount(conn, target)
        raise


def _unmount(conn: ServerConnection, target: Path) -> None:
    current = mounted_at(target)
    if current is not None:
        if not _same_source(current, conn.connection):
            raise MountError(
                mount_point=str(target), reason=f"{current.source} is mounted there, not ours"
            )
        _run(["umount", "-f", "-l", str(target)])
    _remove_dir(target)


def _remove_dir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EBUSY):
            raise
        log.warning("mount point %s left in place: %s", path, error.strerror)


def connected_roots(mount_root: Path) -> list[Path]:
    """Return the links and mount points under `mount_root` that hold a file system.

    A link counts when it points at an existing directory; a directory counts when
    something is mounted on it. Leftover empty mount points do not count. GLUSTERFS
    mounts are looked for in `glusterSD/` too.
    """
    if not mount_root.is_dir():
        return []
    mounted = {record.target for record in mounts()}
    roots = []
    for entry in sorted(mount_root.iterdir()):
        if entry.is_symlink():
            if entry.is_dir():
                roots.append(entry)
        elif os.path.normpath(entry) in mounted:
            roots.append(entry)
    gluster = mount_root / GLUSTER_DIR
    if gluster.is_dir() and not gluster.is_symlink():
        roots += [e for e in sorted(gluster.iterdir()) if os.path.normpath(e) in mounted]
    return roots


# -- persistence --------------------------------------------------------------------------


class ConnectionStore:
    """The connections this host keeps connected, in one JSON file.

    Every change rewrites the file atomically (temporary file, fsync, rename, fsync
    of the directory), so a crash leaves either the old or the new list. A plain
    blocking object with no lock: one owner (the actor that connects) uses it.
    """

    VERSION = 1

    def __init__(self, path: Path) -> None:
        """Use the store at `path` (created on the first `add`)."""
        self.path = path

    def all(self) -> list[ServerConnection]:
        """Return the stored connections, in the order they were added.

        A missing file is an empty store. An unreadable one is logged and treated as
        empty (the Engine reconnects what it needs), never a crash at start.
        """
        try:
            document = json.loads(self.path.read_text())
            return [ServerConnection.from_json(item) for item in document["connections"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring unreadable connection store %s: %s", self.path, error)
            return []

    def add(self, conn: ServerConnection) -> None:
        """Store `conn`, replacing the stored connection with the same id."""
        kept = [c for c in self.all() if c.id != conn.id]
        self._write([*kept, conn])

    def remove(self, conn_id: str) -> bool:
        """Forget the connection with id `conn_id`; return whether it was stored."""
        stored = self.all()
        kept = [c for c in stored if c.id != conn_id]
        if len(kept) == len(stored):
            return False
        self._write(kept)
        return True

    def __iter__(self) -> Iterator[ServerConnection]:
        """Iterate over the stored connections."""
        return iter(self.all())

    def _write(self, connections: list[ServerConnection]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "version": self.VERSION,
            "connections": [c.to_json() for c in connections],
        }
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(document, file, indent=1, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            Path(temp).replace(self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(temp).unlink()
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
