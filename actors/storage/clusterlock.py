"""sanlock for shared storage domains: host ids, the SDM lease (a blocking adapter).

VDSM's `clusterlock.SANLock`, over Debian's `python3-sanlock`. A shared file domain
(NFS, POSIXFS, GLUSTERFS) keeps its sanlock areas in `dom_md`:

    dom_md/ids      the lockspace named after the domain: one delta lease per host id
    dom_md/leases   the SDM resource (the SPM's lease) at 1 x ALIGNMENT (VDSM's slot 1)
    dom_md/xleases  external leases (VM leases), see actors/storage/xleases.py

A LOCALFS domain needs none of this (VDSM's `LocalLock`): its SPM lock is a local
`flock`.

Whether a shared domain may go without sanlock is the host's `SanlockPolicy`
(`configure`, from the config's `[sanlock]` section; one policy per process, set when
the host's storage branch is built):

- `[sanlock] required = true`: a shared domain needs a sanlock daemon. With none
  answering, everything that would lock it is refused with `SanlockRequired` (VDSM's
  AcquireHostIdFailure, 661, saying which socket did not answer and how to fix it):
  creating a shared domain, joining its lockspace (StoragePool.connect, activation),
  spmStart on it, creating its volumes. A shared domain whose lockspace was never
  written (made without sanlock) is refused likewise.
- `[sanlock] required = false`: a shared domain falls back to the local lock when
  no daemon answers, with a warning: nothing then protects it from a second host.
- `[sanlock] required = auto` (the default): required when the host manages the
  system's libvirt (`libvirt_uri` such as `qemu:///system`, which production
  `hostvisor serve` uses), not for an embedded (`qemu:///embed`, the embedded default),
  test-driver (`test:///`) or session (`qemu:///session`) libvirt, the test hosts'.

`[sanlock] io_timeout` (VDSM's key, default 10 s; every sanlock timeout derives from
it) is the I/O timeout given to sanlock when a lockspace is written and when it is
joined. It is the host's alone, as in VDSM: the pool's `ioOpTimeoutSec` (a domain's
IOOPTIMEOUTSEC) is kept in the metadata and never reaches sanlock. A lockspace joined
with another timeout than it was written with makes sanlock wait for the writer's
("other_io_timeout 10 our 1") and drop the host's id lease after its first renewal
check, so every host of a data center must use the same key.

Every function here blocks (sanlock talks to its daemon over a unix socket and the
daemon does direct I/O on the domain's mount): call them from a worker, never from
an actor's thread. The daemon is found through `SANLOCK_RUN_DIR` (default
/run/sanlock), as libsanlock finds it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hostvisor.actors.storage.errors import AcquireLockFailure, StorageError

log = logging.getLogger(__name__)

try:  # Debian's python3-sanlock: the venv sees it through --system-site-packages
    import sanlock
except ImportError:  # pragma: no cover - a machine without python3-sanlock
    sanlock = None

SDM_LEASE: Final = "SDM"
SDM_SLOT: Final = 1
"""The SDM lease's offset in `leases`, in alignments (VDSM's v5 domains)."""
SHARED_TYPES: Final = frozenset({"NFS", "POSIXFS", "GLUSTERFS"})
"""The domain types VDSM protects with sanlock (LOCALFS uses a local lock)."""
DEFAULT_IO_TIMEOUT: Final = 10
"""VDSM's `sanlock io_timeout`, when the host's config does not set it."""
LEADER_MAGIC: Final = -223
"""sanlock's error for an area that holds no lease (never written, or cleared)."""
HELD_ELSEWHERE: Final = -243
"""sanlock's SANLK_ACQUIRE_IDLIVE: the lease is held by another (live) host."""


class AcquireHostIdFailure(StorageError):
    """Joining the domain's lockspace failed (VDSM's AcquireHostIdFailure)."""

    code = 661
    message = "Cannot acquire host id"


class ReleaseHostIdFailure(StorageError):
    """Leaving the domain's lockspace failed (VDSM's ReleaseHostIdFailure)."""

    code = 662
    message = "Cannot release host id"


class ClusterLockInitError(StorageError):
    """Writing the domain's lockspace or leases failed (VDSM's ClusterLockInitError)."""

    code = 701
    message = "Could not initialize cluster lock"


class SanlockRequired(AcquireHostIdFailure):
    """A shared domain cannot be locked: this host requires sanlock and none answers.

    VDSM's code for a host id that cannot be acquired (661); the fields say which
    daemon socket did not answer and which setting decides.
    """


# -- the host's policy ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SanlockPolicy:
    """How this host treats shared domains (see the module docstring).

    Attributes:
        required: a shared domain with no sanlock daemon is refused (else locked locally).
        io_timeout: sanlock's I/O timeout in seconds; None: VDSM's default (10).
    """

    required: bool = False
    io_timeout: int | None = None


_policy: dict[str, SanlockPolicy] = {"current": SanlockPolicy()}


def configure(policy: SanlockPolicy) -> None:
    """Set this process's policy (the storage branch, when it is built; any thread)."""
    _policy["current"] = policy


def policy() -> SanlockPolicy:
    """This process's policy (any thread)."""
    return _policy["current"]


def configured_io_timeout() -> int:
    """The I/O timeout for a lockspace written now: the policy's, else VDSM's default."""
    return policy().io_timeout or DEFAULT_IO_TIMEOUT


def run_dir() -> Path:
    """Where the sanlock daemon listens (`SANLOCK_RUN_DIR`, as libsanlock reads it)."""
    return Path(os.environ.get("SANLOCK_RUN_DIR") or "/run/sanlock")


def available() -> bool:
    """Whether python3-sanlock imports and a sanlock daemon accepts a connection.

    Blocks for at most a second (a local unix socket).
    """
    if sanlock is None:
        return False
    path = run_dir() / "sanlock.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def uses_sanlock(domain_type: str, sd_uuid: str = "") -> bool:
    """Whether a domain of `domain_type` is protected by sanlock here (else a local lock).

    Blocks for at most a second (`available`).

    Raises:
        SanlockRequired: a shared type, no daemon answers and the policy requires one.
    """
    if domain_type not in SHARED_TYPES:
        return False
    if available():
        return True
    if policy().required:
        raise SanlockRequired(
            sdUUID=sd_uuid or None,
            domainType=domain_type,
            reason=f"no sanlock daemon answers on {run_dir() / 'sanlock.sock'}; this host "
            "protects shared domains with sanlock ([sanlock] required): start the sanlock "
            "service, or set [sanlock] required = false to use them unprotected",
        )
    if sd_uuid not in _warned:
        _warned.add(sd_uuid)
        log.warning(
            "no sanlock daemon: shared domain %s of type %s is under a local lock only",
            sd_uuid or "(new)",
            domain_type,
        )
    return False


_warned: set[str] = set()
"""The domains already warned about (once each; a set's add is atomic)."""


def refuse_unformatted(domain_type: str, sd_uuid: str) -> None:
    """Refuse a shared domain whose lockspace was never written, if sanlock is required.

    Such a domain was made without sanlock and cannot be locked between hosts; when
    the policy does not require sanlock it keeps its local lock.

    Raises:
        SanlockRequired: the policy requires sanlock and the domain is shared.
    """
    if domain_type in SHARED_TYPES and policy().required:
        raise SanlockRequired(
            sdUUID=sd_uuid,
            domainType=domain_type,
            reason="its lockspace (dom_md/ids) was never written: it was made without "
            "sanlock and cannot be locked between hosts ([sanlock] required)",
        )


def _b(text: str) -> bytes:
    return text.encode("utf-8")


def _module() -> Any:
    """The sanlock module. Raises StorageError when python3-sanlock is missing."""
    if sanlock is None:
        raise StorageError(reason="python3-sanlock is not installed")
    return sanlock


# -- areas on disk ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Areas:
    """A shared domain's sanlock areas: its lockspace and where its leases live."""

    sd_uuid: str
    md_dir: Path
    alignment: int
    block_size: int
    io_timeout: int = field(default_factory=configured_io_timeout)

    @property
    def ids(self) -> Path:
        """`dom_md/ids`: the lockspace."""
        return self.md_dir / "ids"

    @property
    def leases(self) -> Path:
        """`dom_md/leases`: the SDM lease."""
        return self.md_dir / "leases"

    @property
    def sdm(self) -> tuple[str, int]:
        """The SDM lease's (path, offset)."""
        return str(self.leases), self.alignment * SDM_SLOT

    def format(self) -> None:
        """Write an empty lockspace on `ids` and a free SDM lease on `leases` (VDSM's initLock).

        Raises:
            ClusterLockInitError: sanlock refused.
        """
        api = _module()
        self.leases.parent.mkdir(parents=True, exist_ok=True)
        with self.leases.open("r+b") as leases:  # room for slot 0 and the SDM slot
            leases.truncate(max(os.fstat(leases.fileno()).st_size, 2 * self.alignment))
        try:
            api.write_lockspace(
                _b(self.sd_uuid),
                str(self.ids),
                iotimeout=self.io_timeout,
                align=self.alignment,
                sector=self.block_size,
            )
            api.write_resource(
                _b(self.sd_uuid),
                _b(SDM_LEASE),
                [self.sdm],
                align=self.alignment,
                sector=self.block_size,
            )
        except api.SanlockException as error:
            raise ClusterLockInitError(sdUUID=self.sd_uuid, reason=str(error)) from None

    # -- the lockspace (host ids) ------------------------------------------------------------

    def join(self, host_id: int) -> None:
        """Start joining the lockspace with `host_id`; return at once (sanlock's async add).

        Already joined, or joining, with that id: nothing to do.

        Raises:
            AcquireHostIdFailure: sanlock refused (another id of this lockspace, bad area).
        """
        api = _module()
        try:
            api.add_lockspace(
                _b(self.sd_uuid), host_id, str(self.ids), iotimeout=self.io_timeout, wait=False
            )
        except api.SanlockException as error:
            if error.errno != errno.EEXIST:
                raise AcquireHostIdFailure(
                    sdUUID=self.sd_uuid, hostId=host_id, reason=str(error)
                ) from None

    def joined(self, host_id: int) -> bool | None:
        """Whether this host holds `host_id` in the lockspace (None: joining or leaving).

        False also when the daemon does not answer.
        """
        api = _module()
        try:
            state: bool | None = api.inq_lockspace(
                _b(self.sd_uuid), host_id, str(self.ids), wait=False
            )
        except api.SanlockException as error:
            log.warning("domain %s: inq_lockspace failed: %s", self.sd_uuid, error)
            return False
        return state

    def leave(self, host_id: int, *, wait: bool = False) -> None:
        """Leave the lockspace (sanlock's async remove unless `wait`); not joined: nothing.

        Raises:
            ReleaseHostIdFailure: sanlock refused.
        """
        api = _module()
        try:
            api.rem_lockspace(_b(self.sd_uuid), host_id, str(self.ids), wait=wait)
        except api.SanlockException as error:
            if error.errno not in (errno.ENOENT, errno.EINPROGRESS):
                raise ReleaseHostIdFailure(
                    sdUUID=self.sd_uuid, hostId=host_id, reason=str(error)
                ) from None

    # -- the SDM lease ---------------------------------------------------------------------

    def acquire_sdm(self) -> int:
        """Take the SDM lease for this process; return the sanlock registration holding it.

        Closing the returned descriptor releases the lease (sanlock sees its client go),
        and so does the death of this process.

        Raises:
            AcquireLockFailure: another host holds it, or this host has not joined.
        """
        api = _module()
        fd: int = api.register()
        try:
            api.acquire(_b(self.sd_uuid), _b(SDM_LEASE), [self.sdm], slkfd=fd)
        except api.SanlockException as error:
            os.close(fd)
            raise AcquireLockFailure(
                lease=f"{self.sd_uuid}:{SDM_LEASE}", reason=error.args[-1], errno=error.errno
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- volume leases (`<volUUID>.lease`, offset 0: VDSM's file volumes) -------------------

    def format_volume_lease(self, vol_uuid: str, lease_path: Path) -> None:
        """Write a free sanlock resource named `vol_uuid` at offset 0 of `lease_path`.

        VDSM's `newVolumeLease` on a shared file domain; call it where the volume's
        `.lease` file is made. Raises ClusterLockInitError.
        """
        api = _module()
        with lease_path.open("r+b") as lease:
            lease.truncate(max(os.fstat(lease.fileno()).st_size, self.alignment))
        try:
            api.write_resource(
                _b(self.sd_uuid),
                _b(vol_uuid),
                [(str(lease_path), 0)],
                align=self.alignment,
                sector=self.block_size,
            )
        except api.SanlockException as error:
            raise ClusterLockInitError(volUUID=vol_uuid, reason=str(error)) from None

    def volume_lease(self, vol_uuid: str, lease_path: Path) -> dict[str, Any]:
        """Volume.getInfo's `lease`: {path, offset, owners, version}, as sanlock reports it.

        Raises StorageError: sanlock cannot read it.
        """
        version, owner = inspect(
            self.sd_uuid, vol_uuid, (str(lease_path), 0), self.alignment, self.block_size
        )
        return {
            "path": str(lease_path),
            "offset": 0,
            "owners": [owner] if owner != -1 else [],
            "version": version if version != -1 else None,
        }

    def release_sdm(self, fd: int) -> None:
        """Release the SDM lease that registration `fd` holds; the caller closes `fd`.

        A sanlock refusal is only logged: closing the registration releases it anyway.
        """
        api = _module()
        try:
            api.release(_b(self.sd_uuid), _b(SDM_LEASE), [self.sdm], slkfd=fd)
        except api.SanlockException as error:
            log.warning("domain %s: releasing the SDM lease: %s", self.sd_uuid, error)

    def inspect_sdm(self) -> tuple[int, int]:
        """VDSM's `inspect` of the SDM lease: (lver, owner host id); (-1, -1) when free.

        Raises:
            StorageError: the lease cannot be read.
        """
        return inspect(self.sd_uuid, SDM_LEASE, self.sdm, self.alignment, self.block_size)


def held(fd: int) -> bool:
    """Whether the registration `fd` still holds a lease (sanlock's inquire)."""
    api = _module()
    try:
        return bool(api.inquire(slkfd=fd))
    except api.SanlockException:
        return False


def inspect(
    lockspace: str, resource: str, disk: tuple[str, int], alignment: int, block_size: int
) -> tuple[int, int]:
    """A resource's (version, owner host id) as sanlock reports them; (-1, -1) when free.

    Raises:
        StorageError: sanlock cannot read it (no such lease, no daemon).
    """
    api = _module()
    try:
        res = api.read_resource(disk[0], disk[1], align=alignment, sector=block_size)
        owners = api.read_resource_owners(
            _b(lockspace), _b(resource), [disk], align=alignment, sector=block_size
        )
    except api.SanlockException as error:
        raise StorageError(lease=f"{lockspace}:{resource}", reason=str(error)) from None
    if not owners:
        return -1, -1
    return int(res["version"]), int(owners[0]["host_id"])


def lockspaces() -> dict[str, int]:
    """The lockspaces the daemon holds now: {lockspace name: host id}; {} without a daemon."""
    if not available():
        return {}
    api = _module()
    try:
        found = api.get_lockspaces()
    except api.SanlockException:
        return {}
    return {entry["lockspace"].decode(): int(entry["host_id"]) for entry in found}


def module() -> Any:
    """The sanlock module (for the leases' code). Raises StorageError when it is missing."""
    return _module()
