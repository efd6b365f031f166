"""The domain actor's sanlock messages and reads (host ids, the SDM lease).

    pool ──JoinLockspace(host_id)──▶ domain actor ──run_off──▶ worker: add_lockspace (async)
                                                   ◀──Lockspace(state)── inq_lockspace;
                                                   joining: asked again a second later
    pool ──LeaveLockspace()────────▶ domain actor ──run_off──▶ worker: rem_lockspace (async)

The domain actor's periodic check inquires again (and joins again a lockspace sanlock
lost), so `acquired` in the repo stats is what sanlock says, at most one check old.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hostvisor.actors.storage import clusterlock
from hostvisor.actors.storage.domain_ops import DomainRead

if TYPE_CHECKING:
    from hostvisor.actors.storage.filedomain import FileDomain

LOCAL = "local"
"""A worker's answer for a domain a local lock protects: there is no lockspace."""


@dataclass(frozen=True, slots=True)
class JoinLockspace:
    """Tell (pool, at connect or activate): join the domain's lockspace with `host_id`."""

    host_id: int


@dataclass(frozen=True, slots=True)
class LeaveLockspace:
    """Tell (pool, at disconnect or deactivate): leave the domain's lockspace."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lockspace:
    """A worker's answer (handled on the actor's thread): what sanlock says of the host id.

    `state`: True joined, None joining or leaving, False not joined, LOCAL no lockspace,
    or the error joining raised.
    """

    host_id: int | None
    state: bool | str | BaseException | None


@dataclass(frozen=True, slots=True)
class PollLockspace:
    """Tell (timer): inquire the lockspace again."""

    host_id: int


def ensure_joined(domain: FileDomain, host_id: int, *, join: bool) -> bool | str | None:
    """Inquire the lockspace; when `join` and not joined, start joining (a worker; blocks).

    Raises AcquireHostIdFailure (sanlock refused) or the domain's metadata errors.
    """
    areas = domain.lock_areas()
    if areas is None:
        return LOCAL
    state = areas.joined(host_id)
    if state is False and join:
        areas.join(host_id)
        state = areas.joined(host_id)
    return state


def leave(domain: FileDomain, host_id: int) -> bool | str | None:
    """Start leaving the lockspace (a worker; blocks). Raises ReleaseHostIdFailure."""
    areas = domain.lock_areas()
    if areas is None:
        return LOCAL
    areas.leave(host_id)
    return areas.joined(host_id)


def discover(domain: FileDomain) -> Lockspace:
    """The host id sanlock holds for this domain now (an agent restarted keeps it)."""
    areas = domain.lock_areas()
    if areas is None:
        return Lockspace(host_id=None, state=LOCAL)
    host_id = clusterlock.lockspaces().get(domain.sd_uuid)
    if host_id is None:
        return Lockspace(host_id=None, state=False)
    return Lockspace(host_id=host_id, state=areas.joined(host_id))


@dataclass(frozen=True, slots=True, kw_only=True)
class LockAreas(DomainRead["clusterlock.Areas | None"]):
    """The domain's sanlock areas (None: a local lock protects it)."""

    op = "lock areas"

    def apply(self, domain: FileDomain) -> clusterlock.Areas | None:
        """Read the metadata and check for a sanlock daemon."""
        return domain.lock_areas()


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectSdm(DomainRead["tuple[int, int] | None"]):
    """The SDM lease as sanlock reports it: (lver, owner host id), (-1, -1) when free.

    None when a local lock protects the domain.
    """

    op = "inspect SDM lease"

    def apply(self, domain: FileDomain) -> tuple[int, int] | None:
        """Read the lease and its owners through the sanlock daemon."""
        areas = domain.lock_areas()
        return None if areas is None else areas.inspect_sdm()
