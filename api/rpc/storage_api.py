"""What the storage verbs reach: the storage actors, through their typed clients.

Verb handlers bind params and make one ask; the actors own everything else
(actors/storage/: connections, pool, domains, tasks). Nothing here blocks the
API's loop: every answer is a future awaited with `settled`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hostvisor.actors.errors import NotFound
from hostvisor.actors.storage.domain_ops import VolumeData
from hostvisor.actors.storage.proxy import StorageClient
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.api.rpc.bridge import settled
from hostvisor.supervision.registry import Registry


@dataclass(frozen=True, slots=True)
class StorageApi:
    """The registry the storage actors are found in."""

    registry: Registry
    client: StorageClient = field(init=False)

    def __post_init__(self) -> None:
        """Make the client over the registry."""
        object.__setattr__(self, "client", StorageClient(self.registry.get, self._children))

    def _children(self, path: str) -> tuple[str, ...]:
        try:
            return self.registry.status(path).children
        except NotFound:
            return ()

    async def prepare_disk(self, disk: DiskVolume) -> PreparedDisk:
        """Prepare a VM disk named by storage ids: its path and format on this host.

        Raises StoragePoolUnknown, StorageDomainNotInPool, VolumeDoesNotExist, ...
        """
        op = VolumeData(img=disk.image_id, vol=disk.volume_id)
        pool = self.client.pool()
        path, fmt, _capacity = await settled(pool.member_read(disk.pool_id, disk.domain_id, op))
        return PreparedDisk(path=path, format=fmt)
