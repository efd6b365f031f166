"""External (VM and job) leases as domain operations: Lease.create/delete/info/status/fence.

VDSM's hsm `create_lease`/`delete_lease` (SPM tasks), `lease_info`/`lease_status`
(any host), `fence_lease` (any host holding its host id), over the domain's
`xleases` volume (actors/storage/xleases.py):

- `CreateLease` / `DeleteLease`: `DomainTask`s, run through the pool's
  `member_task` (SPM only); their check answers the verb (NoSuchLease, LeaseExists)
  before the task id is given. A create with job metadata writes it into the new
  lease's value block, holding the lease for that moment.
- `LeaseInfoRead` / `LeaseStatusRead`: `DomainRead`s.
- `FenceLease`: a `DomainWrite`: holds the lease, checks the job metadata the
  Engine expects, then marks the job FENCED with the next generation.
- `RebuildLeases`: Lease.rebuild_leases, a `DomainTask` (SPM only, VDSM's
  `rebuild_external_leases`): the index and the sanlock resources made to agree
  (`xleases.Volume.rebuild`). It runs in the domain's write order, so no lease is
  created or deleted on this host while it runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final, cast

from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.storage import xleases
from hostvisor.actors.storage.domain_ops import DomainRead, DomainTask, DomainWrite
from hostvisor.actors.storage.errors import StorageError
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import check_uuid
from hostvisor.actors.storage.tasks import TaskContext

log = logging.getLogger(__name__)

JOB_STATUSES: Final = ("PENDING", "FAILED", "SUCCEEDED", "FENCED")
MAX_GENERATION: Final = 255
"""VDSM's sc.MAX_GENERATION: generations wrap after it."""


class GenerationMismatch(StorageError):
    """The lease's job generation is not the one the Engine expects (VDSM's code)."""

    code = 911
    message = "Generation mismatch"


class JobStatusMismatch(StorageError):
    """The lease's job status is not the one the Engine expects (VDSM's code)."""

    code = 912
    message = "Job status mismatch"


class UnsupportedOperation(StorageError):
    """The lease's job type or id is not the one the Engine names (VDSM's code)."""

    code = 2009
    message = "Unsupported operation"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMetadata:
    """VDSM's validators.JobMetadata: what a job lease's value block says."""

    type: str
    generation: int
    job_id: str
    job_status: str

    @classmethod
    def from_wire(cls, value: Any) -> JobMetadata:
        """Check `metadata` as VDSM does. Raises InvalidArgument (VDSM's code 1000)."""
        if not isinstance(value, dict):
            raise InvalidArgument(param="metadata", reason="an object")
        kind, generation = value.get("type"), value.get("generation")
        status = value.get("job_status")
        if kind != "JOB":
            raise InvalidArgument(param="metadata.type", value=kind, reason="must be JOB")
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise InvalidArgument(param="metadata.generation", value=generation)
        if not 0 <= generation <= MAX_GENERATION:
            raise InvalidArgument(param="metadata.generation", value=generation)
        if status not in JOB_STATUSES:
            raise InvalidArgument(param="metadata.job_status", value=status)
        job_id = check_uuid(cast("str", value.get("job_id")), "metadata.job_id")
        return cls(type=kind, generation=generation, job_id=job_id, job_status=status)


def volume(domain: FileDomain) -> xleases.Volume:
    """The domain's xleases volume (reads its metadata; blocking)."""
    meta = domain.metadata()
    return xleases.Volume(
        domain.path / "dom_md" / "xleases",
        domain.sd_uuid,
        int(meta.get("ALIGNMENT", str(1024 * 1024))),
        int(meta.get("BLOCK_SIZE", "512")),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseInfoRead(DomainRead[dict[str, Any]]):
    """Lease.info: {sd_id, lease_id, path, offset}. Raises NoSuchLease."""

    lease_id: str
    op = "lease info"

    def apply(self, domain: FileDomain) -> dict[str, Any]:
        """Look the lease up in the index."""
        return volume(domain).lookup(self.lease_id).wire()


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseStatusRead(DomainRead[dict[str, Any]]):
    """Lease.status: {owners, version[, metadata]} as sanlock reports them."""

    lease_id: str
    host_id: int
    op = "lease status"

    def apply(self, domain: FileDomain) -> dict[str, Any]:
        """Look the lease up, then ask sanlock who holds it."""
        leases = volume(domain)
        info = leases.lookup(self.lease_id)
        return xleases.status(info, leases.alignment, leases.block_size, self.host_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateLease(DomainTask):
    """Lease.create (SPM task): the lease's sanlock resource and its index record."""

    lease_id: str
    metadata: JobMetadata | None = None
    host_id: int = 0
    host_uuid: str = ""
    op = "create lease"
    verb = "create_lease"

    @property
    def claim(self) -> str:
        """The lease: two tasks on one lease never run together."""
        return f"lease {self.lease_id}"

    def busy(self) -> HostvisorError:
        """Another task of this lease runs: it exists, as far as this one knows."""
        return xleases.LeaseExists(lease_id=self.lease_id)

    def check(self, domain: FileDomain) -> None:
        """Raise LeaseExists if the index names it."""
        if self.lease_id in volume(domain).leases():
            raise xleases.LeaseExists(lease_id=self.lease_id)

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:
        """Add it; write the job's metadata into its value block if given."""
        info = volume(domain).add(self.lease_id)
        ctx.progress(0.5)
        if self.metadata is not None:
            now = int(time.time())
            values = {
                "type": self.metadata.type,
                "generation": self.metadata.generation,
                "job_id": self.metadata.job_id,
                "job_status": self.metadata.job_status,
                "created": now,
                "modified": now,
                "host_hardware_id": self.host_uuid,
            }
            with xleases.acquired(info, self.host_id):
                xleases.set_lvb(info, values)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteLease(DomainTask):
    """Lease.delete (SPM task): the record, then the resource."""

    lease_id: str
    op = "delete lease"
    verb = "delete_lease"

    @property
    def claim(self) -> str:
        """The lease."""
        return f"lease {self.lease_id}"

    def check(self, domain: FileDomain) -> None:
        """Raise NoSuchLease unless the index names it."""
        volume(domain).lookup(self.lease_id)

    def apply(self, domain: FileDomain, ctx: TaskContext) -> None:  # noqa: ARG002
        """Remove it."""
        volume(domain).remove(self.lease_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class RebuildLeases(DomainTask):
    """Lease.rebuild_leases (SPM task): mend the xleases index from the volume's contents.

    Its check reads the index, so an index that is not VDSM's (InvalidIndex) answers
    the verb rather than failing the task.
    """

    op = "rebuild leases"
    verb = "rebuild_leases"

    @property
    def claim(self) -> str:
        """The domain's xleases volume: one rebuild at a time."""
        return "xleases"

    def busy(self) -> HostvisorError:
        """Another rebuild of this domain runs."""
        return xleases.InvalidIndex(reason="a rebuild of this index is running")

    def check(self, domain: FileDomain) -> None:
        """Raise InvalidIndex if the index cannot be rebuilt (a worker; blocks)."""
        volume(domain).leases()

    def apply(self, domain: FileDomain, ctx: TaskContext) -> dict[str, int]:
        """Rebuild (a worker, the domain's turn; blocks); return and log what changed.

        Raises InvalidIndex or StorageError (sanlock refused): the task fails.
        """
        counts = volume(domain).rebuild()
        ctx.progress(1.0)
        log.info("domain %s: xleases rebuilt: %s", domain.sd_uuid, counts)
        return counts


@dataclass(frozen=True, slots=True, kw_only=True)
class FenceLease(DomainWrite[None]):
    """Lease.fence: a PENDING job whose lease is free becomes FENCED, generation + 1.

    Raises NoSuchLease, AcquireLockFailure (the job still runs: its host holds the
    lease), UnsupportedOperation (type or job id differ), JobStatusMismatch,
    GenerationMismatch.
    """

    lease_id: str
    metadata: JobMetadata
    host_id: int
    host_uuid: str = ""
    op = "fence lease"

    def apply(self, domain: FileDomain) -> None:
        """Hold the lease, compare its metadata, write the fenced one."""
        info = volume(domain).lookup(self.lease_id)
        expected = self.metadata
        with xleases.acquired(info, self.host_id) as fd:
            current = xleases.get_lvb(info, fd)
            if current.get("type") != expected.type:
                raise UnsupportedOperation(expected=expected.type, actual=current.get("type"))
            if current.get("job_id") != expected.job_id:
                raise UnsupportedOperation(expected=expected.job_id, actual=current.get("job_id"))
            if current.get("job_status") != expected.job_status:
                raise JobStatusMismatch(
                    expected=expected.job_status, actual=current.get("job_status")
                )
            if current.get("generation") != expected.generation:
                raise GenerationMismatch(
                    expected=expected.generation, actual=current.get("generation")
                )
            updated = {
                **current,
                "modified": int(time.time()),
                "host_hardware_id": self.host_uuid,
                "generation": (expected.generation + 1) % (MAX_GENERATION + 1),
                "job_status": "FENCED",
            }
            xleases.set_lvb(info, updated)
