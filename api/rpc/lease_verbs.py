"""Lease verbs: Lease.create/delete/info/status/fence/rebuild_leases, leases on `xleases`.

The Engine's calls (JsonRpcIIrsServer.addLease/removeLease/getLeaseInfo,
JsonRpcVdsServer.getLeaseStatus/fenceLeaseJob) send `lease: {lease_id, sd_id}` and,
for create and fence, `metadata` (a job's {type, generation, job_id, job_status}).
As VDSM's hsm: create and delete are SPM tasks of the connected pool (the answer is
the task id, which the Engine's LeaseTaskInfoReturn reads); info, status and fence
answer at once on any host connected to the pool. Lease.rebuild_leases (VDSM's
schema: `sd_id`, answers a task id) is an SPM task too; the Engine has no call for it
(an administrator's repair, through vdsm-client). The work is the domain's
(actors/storage/leases.py, actors/storage/xleases.py).
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from hostvisor.actors.storage.clusterlock import AcquireHostIdFailure
from hostvisor.actors.storage.errors import (
    AcquireLockFailure,
    NotSpm,
    StorageDomainNotInPool,
    StoragePoolNotConnected,
)
from hostvisor.actors.storage.leases import (
    CreateLease,
    DeleteLease,
    FenceLease,
    GenerationMismatch,
    JobMetadata,
    JobStatusMismatch,
    LeaseInfoRead,
    LeaseStatusRead,
    RebuildLeases,
    UnsupportedOperation,
)
from hostvisor.actors.storage.model import check_uuid
from hostvisor.actors.storage.pool_model import PoolRecord
from hostvisor.actors.storage.xleases import InvalidIndex, LeaseExists, NoSuchLease
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi

LeaseParam = Annotated[dict[str, Any], Arg("the lease: {sd_id, lease_id}")]


def _lease(value: dict[str, Any]) -> tuple[str, str]:
    """(sd_id, lease_id) of a `lease` param. Raises InvalidArgument (VDSM's 1000)."""
    return (
        check_uuid(cast("str", value.get("sd_id")), "lease.sd_id"),
        check_uuid(cast("str", value.get("lease_id")), "lease.lease_id"),
    )


def lease_verbs(vms: VmApi, storage: StorageApi) -> list[Verb]:
    """Return these verbs over the VM and storage APIs."""
    del vms
    return verbs_of(LeaseHandlers(storage))


class LeaseHandlers:
    """The handlers of the Lease verbs (each runs on the API loop)."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.client = api.client

    async def _pool(self) -> PoolRecord:
        record: PoolRecord | None = await settled(self.client.pool().connected())
        if record is None:
            raise StoragePoolNotConnected(reason="this host is connected to no pool")
        return record

    @verb(
        "Lease",
        "create",
        doc="Create an external lease (SPM; a task).",
        returns="task id",
        errors=(StoragePoolNotConnected, NotSpm, LeaseExists, StorageDomainNotInPool),
    )
    async def create(
        self,
        *,
        lease: LeaseParam,
        metadata: Annotated[
            dict[str, Any] | None, Arg("job metadata for the lease's value block")
        ] = None,
    ) -> str:
        """Lease.create: as JsonRpcIIrsServer.addLease sends it; answers the task id."""
        sd, lease_id = _lease(lease)
        job = JobMetadata.from_wire(metadata) if metadata is not None else None
        record = await self._pool()
        op = CreateLease(lease_id=lease_id, metadata=job, host_id=record.host_id)
        task_id: str = await settled(self.client.pool().member_task(record.sp_uuid, sd, op))
        return task_id

    @verb(
        "Lease",
        "delete",
        doc="Delete an external lease (SPM; a task).",
        returns="task id",
        errors=(StoragePoolNotConnected, NotSpm, NoSuchLease, StorageDomainNotInPool),
    )
    async def delete(self, *, lease: LeaseParam) -> str:
        """Lease.delete: as JsonRpcIIrsServer.removeLease sends it; answers the task id."""
        sd, lease_id = _lease(lease)
        record = await self._pool()
        op = DeleteLease(lease_id=lease_id)
        task_id: str = await settled(self.client.pool().member_task(record.sp_uuid, sd, op))
        return task_id

    @verb(
        "Lease",
        "rebuild_leases",
        doc="Rebuild the external leases index of a storage domain (SPM; a task).",
        returns="task id",
        errors=(StoragePoolNotConnected, NotSpm, StorageDomainNotInPool, InvalidIndex),
    )
    async def rebuild_leases(
        self,
        *,
        sd_id: Annotated[str, Arg("the domain whose xleases volume is rebuilt")],
    ) -> str:
        """Lease.rebuild_leases: VDSM's schema (`sd_id`); no Engine call sends it."""
        sd = check_uuid(sd_id, "sd_id")
        record = await self._pool()
        task_id: str = await settled(
            self.client.pool().member_task(record.sp_uuid, sd, RebuildLeases())
        )
        return task_id

    @verb(
        "Lease",
        "info",
        doc="Where an external lease lives.",
        returns="{sd_id, lease_id, path, offset}",
        errors=(StoragePoolNotConnected, NoSuchLease, StorageDomainNotInPool),
    )
    async def info(self, *, lease: LeaseParam) -> dict[str, Any]:
        """Lease.info: as JsonRpcIIrsServer.getLeaseInfo sends it."""
        sd, lease_id = _lease(lease)
        record = await self._pool()
        found: dict[str, Any] = await settled(
            self.client.pool().member_read(record.sp_uuid, sd, LeaseInfoRead(lease_id=lease_id))
        )
        return found

    @verb(
        "Lease",
        "status",
        doc="Who holds an external lease, as sanlock reports it.",
        returns="{owners, version[, metadata]}",
        errors=(StoragePoolNotConnected, NoSuchLease, StorageDomainNotInPool),
    )
    async def status(self, *, lease: LeaseParam) -> dict[str, Any]:
        """Lease.status: as JsonRpcVdsServer.getLeaseStatus sends it."""
        sd, lease_id = _lease(lease)
        record = await self._pool()
        op = LeaseStatusRead(lease_id=lease_id, host_id=record.host_id)
        found: dict[str, Any] = await settled(
            self.client.pool().member_read(record.sp_uuid, sd, op)
        )
        return found

    @verb(
        "Lease",
        "fence",
        doc="Fence a job's lease: a free PENDING job becomes FENCED.",
        errors=(
            StoragePoolNotConnected,
            NoSuchLease,
            AcquireLockFailure,
            AcquireHostIdFailure,
            UnsupportedOperation,
            JobStatusMismatch,
            GenerationMismatch,
        ),
    )
    async def fence(
        self,
        *,
        lease: LeaseParam,
        metadata: Annotated[dict[str, Any], Arg("the job metadata the lease must hold")],
    ) -> bool:
        """Lease.fence: as JsonRpcVdsServer.fenceLeaseJob sends it."""
        sd, lease_id = _lease(lease)
        job = JobMetadata.from_wire(metadata)
        record = await self._pool()
        if sd not in record.domains:
            raise StorageDomainNotInPool(sdUUID=sd, spUUID=record.sp_uuid)
        op = FenceLease(lease_id=lease_id, metadata=job, host_id=record.host_id)
        await settled(self.client.write(sd, op))
        return True
