"""What the storage verbs reach: the storage actors, through their typed clients.

Verb handlers bind params and make one ask; the actors own everything else
(actors/storage/: connections, pool, domains, tasks). Nothing here blocks the
API's loop: every answer is a future awaited with `settled`. `repo_stats` serves
both `Host.getStats.storageDomains` and `Host.getStorageRepoStats`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.errors import HostvisorError, NotFound
from hostvisor.actors.storage.domain_ops import VolumeData
from hostvisor.actors.storage.errors import StorageError
from hostvisor.actors.storage.leases import LeaseInfoRead
from hostvisor.actors.storage.proxy import StorageClient
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.api.rpc.bridge import settled
from hostvisor.supervision.registry import Registry

REPO_STATS_WAIT = 2.0
"""Seconds a domain's actor has to answer its repo stats before its last answer is used."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """A domain's last repo stats answer and when (loop time) it came."""

    entry: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class StorageApi:
    """The registry the storage actors are found in."""

    registry: Registry
    client: StorageClient = field(init=False)
    _seen: dict[str, _Seen] = field(init=False, default_factory=dict)
    """Each domain's last repo stats answer (touched only on the API loop)."""

    def __post_init__(self) -> None:
        """Make the client over the registry."""
        object.__setattr__(self, "client", StorageClient(self.registry.get, self._children))

    async def repo_stats(self, wanted: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """Every monitored domain's health, as VDSM's `repoStats` (the API loop; never blocks).

        One ask per domain actor, each answered from its monitor's last check (the
        actor never waits for a check). A domain whose actor does not answer within
        `REPO_STATS_WAIT` s (busy, restarting) is reported from its last answer, made
        invalid (code 200) with its lastCheck grown by the time since. No storage
        branch (a host without one): {}.
        """
        only = set(wanted)
        try:
            record = await settled(self.client.pool().connected(), timeout=REPO_STATS_WAIT)
        except (HostvisorError, TimeoutError):
            record = None
        members = set(record.domains) if record is not None else set()
        proxies = {
            sd: proxy
            for sd in self.client.running_domains()
            if (not only or sd in only) and (proxy := self.client.running_domain(sd))
        }
        answers = await asyncio.gather(
            *(
                settled(proxy.repo_stats(member=sd in members), timeout=REPO_STATS_WAIT)
                for sd, proxy in proxies.items()
            ),
            return_exceptions=True,
        )
        now = asyncio.get_running_loop().time()
        stats: dict[str, dict[str, Any]] = {}
        for sd, answer in zip(proxies, answers, strict=True):
            if isinstance(answer, dict):
                self._seen[sd] = _Seen(entry=answer, at=now)
                stats[sd] = answer
            elif (seen := self._seen.get(sd)) is not None:
                stats[sd] = _aged(seen, now)
        for gone in set(self._seen) - set(proxies) - only:
            del self._seen[gone]
        return stats

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

    async def lease_info(self, sd: str, lease_id: str) -> dict[str, Any]:
        """Lease.info of a VM lease: `{sd_id, lease_id, path, offset}` on this host.

        Raises NoSuchLease, StorageDomainDoesNotExist, ...
        """
        info: dict[str, Any] = await settled(self.client.read(sd, LeaseInfoRead(lease_id=lease_id)))
        return info


def _aged(seen: _Seen, now: float) -> dict[str, Any]:
    """A last answer served again: invalid, its lastCheck grown by its age."""
    entry = dict(seen.entry)
    try:
        last = float(entry.get("lastCheck", "0"))
    except ValueError:
        last = 0.0
    entry.update(
        code=entry.get("code") or StorageError.code,
        valid=False,
        acquired=False,
        actual=True,
        lastCheck=f"{last + now - seen.at:.1f}",
    )
    return entry
