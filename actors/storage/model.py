"""The storage model's names and numbers, as the wire and the disk spell them.

reference/vdsm-wire.md §8: the wire sends these enums as ints (even where VDSM's
schema says strings); the metadata files spell them as words.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path

from hostvisor.actors.errors import InvalidArgument

BLANK_UUID = "00000000-0000-0000-0000-000000000000"
"""The parent of a base volume; the pool id of an unattached domain."""

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class DomainType(enum.IntEnum):
    """Storage domain (and storage server) types."""

    UNKNOWN = 0
    NFS = 1
    FCP = 2
    ISCSI = 3
    LOCALFS = 4
    CIFS = 5
    POSIXFS = 6
    GLUSTERFS = 7

    @property
    def is_file(self) -> bool:
        """A file domain: a directory tree on a mounted (or local) file system."""
        return self in FILE_DOMAIN_TYPES


FILE_DOMAIN_TYPES = frozenset(
    {DomainType.NFS, DomainType.LOCALFS, DomainType.POSIXFS, DomainType.GLUSTERFS}
)
"""The domain types this host implements."""


class DomainClass(enum.IntEnum):
    """What a domain holds. Metadata spells it "Data", "Iso", "Backup"."""

    DATA = 1
    ISO = 2
    BACKUP = 3

    @property
    def word(self) -> str:
        """The metadata's spelling."""
        return self.name.capitalize()


class VolumeFormat(enum.IntEnum):
    """A volume's data format. Metadata spells it "COW" or "RAW"."""

    COW = 4
    RAW = 5

    @property
    def qemu_format(self) -> str:
        """qemu-img's name of the format."""
        return "qcow2" if self is VolumeFormat.COW else "raw"


class Preallocation(enum.IntEnum):
    """How a volume's space is allocated. Metadata spells it as the name."""

    PREALLOCATED = 1
    SPARSE = 2


class VolumeRole(enum.StrEnum):
    """A volume's place in its chain (metadata VOLTYPE)."""

    LEAF = "LEAF"
    INTERNAL = "INTERNAL"
    SHARED = "SHARED"


class Legality(enum.StrEnum):
    """Whether a volume's data is complete (metadata LEGALITY)."""

    LEGAL = "LEGAL"
    ILLEGAL = "ILLEGAL"
    FAKE = "FAKE"


class DomainStatus(enum.StrEnum):
    """A domain's status in a pool, as getInfo and domainDict spell it."""

    ACTIVE = "Active"
    ATTACHED = "Attached"
    UNATTACHED = "Unattached"
    UNKNOWN = "Unknown"


def check_uuid(value: str, name: str) -> str:
    """Return `value` if it is a lower-case UUID; raise InvalidArgument naming `name`."""
    if not isinstance(value, str) or not _UUID.match(value):
        raise InvalidArgument(reason=f"{name} must be a UUID", value=value)
    return value


def connection_dir_name(connection: str) -> str:
    """The directory name a connection is mounted (or linked) under, VDSM's way.

    Underscores double and slashes become underscores, so `/data/sd_1` is
    `_data_sd__1` and `server:/export` is `server:_export`.
    """
    return connection.replace("_", "__").replace("/", "_")


def mount_point(mount_root: Path, connection: str) -> Path:
    """Where `connection` appears under the data-center mount root."""
    return mount_root / connection_dir_name(connection)
