"""Storage servers, the pool and the SPM (reference/vdsm-wire.md §3.1 Storage, §8).

`connectStorageServer` mounts (or links) what the Engine names and answers a status
per connection. `StoragePool.create` writes the pool into its master domain's
metadata; `connect` makes this host a member (persisted, so a restarted agent is
still connected); `spmStart` returns a task that takes the pool's lock.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from hostvisor.actors.actor import call
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.connections import ServerConnection, connect, disconnect
from hostvisor.actors.storage.errors import (
    CannotConnectMultiplePools,
    NotSpm,
    StorageDomainAlreadyAttached,
    StorageDomainDoesNotExist,
    StoragePoolAlreadyExists,
    StoragePoolMasterNotFound,
    StoragePoolUnknown,
    StoragePoolWrongMaster,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import BLANK_UUID, DomainStatus, check_uuid
from hostvisor.actors.storage.pool_actor import PoolRecord, take_spm_lock
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb
from hostvisor.supervision.storage_recovery import connection_store

SP = Param(name="storagepoolID", kind=Kind.STR, doc="the pool's UUID")
HOST_ID = Param(name="hostID", kind=Kind.INT, doc="this host's id in the pool (1..250)")
SCSI_KEY = Param(name="scsiKey", kind=Kind.STR, doc="ignored", default="")
MAX_HOST_ID = 250


def _domain_list(value: Any) -> list[str]:
    """DomainList comes as a list or as a comma-separated string."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [check_uuid(str(item).strip(), "domainList") for item in items if str(item).strip()]


class PoolHandlers:
    """The handlers of the pool verbs, over one `StorageApi`."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.api = api
        self.connections = connection_store(api.config)

    # -- storage servers --------------------------------------------------------------------

    async def connect_server(self, request: Call) -> list[dict[str, Any]]:
        """StoragePool.connectStorageServer: [{id, status}] (0 = connected)."""
        return await self._each_connection(request, connecting=True)

    async def disconnect_server(self, request: Call) -> list[dict[str, Any]]:
        """StoragePool.disconnectStorageServer: [{id, status}]."""
        return await self._each_connection(request, connecting=False)

    async def _each_connection(self, request: Call, *, connecting: bool) -> list[dict[str, Any]]:
        args = request.args
        conns = [
            ServerConnection.from_wire(args["domainType"], params)
            for params in args["connectionParams"]
        ]
        mount_root = self.api.config.mount_root
        statuses = []
        for conn in conns:
            if connecting:
                status = await asyncio.to_thread(connect, conn, mount_root)
                if status == 0:
                    await asyncio.to_thread(self.connections.add, conn)
            else:
                await self._forget_domains_under(conn)
                status = await asyncio.to_thread(disconnect, conn, mount_root)
                await asyncio.to_thread(self.connections.remove, conn.id)
            statuses.append({"id": conn.id, "status": status})
        return statuses

    async def _forget_domains_under(self, conn: ServerConnection) -> None:
        """Stop the actors of domains on a connection about to go away."""
        root = conn.mount_point(self.api.config.mount_root)
        for sd_uuid in self.api.domain_ids():
            path = await self.api.domain_path(sd_uuid)
            if path.parent == root:
                await self.api.forget_domain(sd_uuid)

    # -- pool -------------------------------------------------------------------------------

    async def create(self, request: Call) -> bool:
        """StoragePool.create: write the pool into its master domain."""
        args = request.args
        sp = check_uuid(args["storagepoolID"], "storagepoolID")
        master = check_uuid(args["masterSdUUID"], "masterSdUUID")
        domains = _domain_list(args["domainList"])
        if master not in domains:
            domains.append(master)
        version = int(args["masterVersion"])
        for sd in domains:
            pool = await self.api.read(sd, "pool of", lambda d: d.metadata().get("POOL_UUID", ""))
            if pool == sp:
                raise StoragePoolAlreadyExists(spUUID=sp, sdUUID=sd)
            if pool:
                raise StorageDomainAlreadyAttached(sdUUID=sd, spUUID=pool)
        listed = ",".join(f"{sd}:{DomainStatus.ACTIVE.value}" for sd in domains)
        for sd in domains:
            changes: dict[str, str] = {"POOL_UUID": sp}
            if sd == master:
                changes.update(
                    ROLE="Master",
                    POOL_DESCRIPTION=args["poolName"],
                    MASTER_VERSION=str(version),
                    POOL_DOMAINS=listed,
                    POOL_SPM_ID="-1",
                    POOL_SPM_LVER="-1",
                    LOCKRENEWALINTERVALSEC=str(args["lockRenewalIntervalSec"]),
                    LEASETIMESEC=str(args["leaseTimeSec"]),
                    IOOPTIMEOUTSEC=str(args["ioOpTimeoutSec"]),
                    LEASERETRIES=str(args["leaseRetries"]),
                )
            await self.api.write(sd, "join pool", _updater(changes))
        return True

    async def connect(self, request: Call) -> bool:
        """StoragePool.connect: this host becomes a member of the pool."""
        args = request.args
        sp = check_uuid(args["storagepoolID"], "storagepoolID")
        host_id = args["hostID"]
        if not 1 <= host_id <= MAX_HOST_ID:
            raise InvalidArgument(hostID=host_id, reason=f"must be 1..{MAX_HOST_ID}")
        master = check_uuid(args["masterSdUUID"], "masterSdUUID")
        version = int(args["masterVersion"])
        current = self.api.connected_record()
        if current is not None:
            if current.sp_uuid == sp:
                return True
            raise CannotConnectMultiplePools(connected=current.sp_uuid, spUUID=sp)
        try:
            meta = await self.api.read(master, "master", lambda d: d.metadata())
        except StorageDomainDoesNotExist:
            raise StoragePoolMasterNotFound(spUUID=sp, msdUUID=master) from None
        if meta.get("POOL_UUID") != sp or meta.get("ROLE") != "Master":
            raise StoragePoolWrongMaster(spUUID=sp, msdUUID=master)
        if int(meta.get("MASTER_VERSION", "-1")) != version:
            raise StoragePoolWrongMaster(
                spUUID=sp, msdUUID=master, masterVersion=version, found=meta["MASTER_VERSION"]
            )
        domains = args["domainDict"] or _pool_domains(meta.get("POOL_DOMAINS", ""))
        record = PoolRecord(
            sp_uuid=sp,
            host_id=host_id,
            master_uuid=master,
            master_version=version,
            domains={
                check_uuid(sd, "domainDict"): str(status).capitalize()
                for sd, status in domains.items()
            },
            lver=int(meta.get("POOL_SPM_LVER", "-1")),
        )
        await self.api.connect_pool(record)
        return True

    async def disconnect(self, request: Call) -> bool:
        """StoragePool.disconnect."""
        ref, _record = await self.api.pool(request.args["storagepoolID"])
        await self.api.disconnect_pool(ref)
        return True

    async def get_info(self, request: Call) -> dict[str, Any]:
        """StoragePool.getInfo: {info, dominfo}."""
        ref, record = await self.api.pool(request.args["storagepoolID"])
        spm = await settled(call(ref, "spm_status"))
        meta = await self.api.read(record.master_uuid, "master", lambda d: d.metadata())
        dominfo: dict[str, dict[str, Any]] = {}
        for sd, status in record.domains.items():
            try:
                stats = await self.api.read(sd, "stats", lambda d: d.stats())
            except StorageDomainDoesNotExist:
                dominfo[sd] = {"status": DomainStatus.UNKNOWN.value, "alerts": [], "isoprefix": ""}
                continue
            dominfo[sd] = {
                "status": status,
                "alerts": [],
                "isoprefix": "",
                "version": int(meta.get("VERSION", "5")),
                "disktotal": stats["disktotal"],
                "diskfree": stats["diskfree"],
            }
        info = {
            "name": meta.get("POOL_DESCRIPTION", ""),
            "type": meta.get("TYPE", ""),
            "master_uuid": record.master_uuid,
            "master_ver": record.master_version,
            "lver": record.lver,
            "spm_id": spm["spmId"],
            "domains": ",".join(f"{sd}:{status}" for sd, status in record.domains.items()),
            "isoprefix": "",
            "pool_status": "connected",
            "version": meta.get("VERSION", "5"),
        }
        return {"info": info, "dominfo": dominfo}

    # -- SPM --------------------------------------------------------------------------------

    async def spm_start(self, request: Call) -> str:
        """StoragePool.spmStart: a task that takes the pool's lock."""
        ref, record = await self.api.pool(request.args["storagepoolID"])
        lease = await self.api.domain_path(record.master_uuid) / "dom_md" / "leases"

        def become_spm(_context: Any) -> None:
            fd = take_spm_lock(lease)
            try:
                call(ref, "became_spm", fd).get(timeout=30)
            except BaseException:
                os.close(fd)
                raise

        return await self.api.submit("spmStart", become_spm)

    async def spm_stop(self, request: Call) -> bool:
        """StoragePool.spmStop."""
        ref, _record = await self.api.pool(request.args["storagepoolID"])
        await settled(call(ref, "spm_stop"))
        return True

    async def spm_status(self, request: Call) -> dict[str, Any]:
        """StoragePool.getSpmStatus: {spmStatus, spmLver, spmId}."""
        ref, _record = await self.api.pool(request.args["storagepoolID"])
        status: dict[str, Any] = await settled(call(ref, "spm_status"))
        return status

    async def connected_pools(self, _request: Call) -> list[str]:
        """Host.getConnectedStoragePools."""
        record = await asyncio.to_thread(self.api.connected_record)
        return [] if record is None else [record.sp_uuid]


def _updater(changes: Mapping[str, str]) -> Callable[[FileDomain], None]:
    """A domain write that sets these metadata keys."""

    def update(domain: FileDomain) -> None:
        domain.update_metadata(**changes)

    return update


def _pool_domains(text: str) -> Mapping[str, str]:
    return dict(item.split(":", 1) for item in text.split(",") if ":" in item)


def pool_verbs(api: StorageApi) -> list[Verb]:
    """Return the storage server and pool verbs."""
    h = PoolHandlers(api)
    conn_params = (
        Param(
            name="storagepoolID", kind=Kind.STR, doc="the pool (may be BLANK)", default=BLANK_UUID
        ),
        Param(name="domainType", kind=Kind.INT, doc="1 NFS, 4 LOCALFS, 6 POSIXFS"),
        Param(name="connectionParams", kind=Kind.ARRAY, doc="[{id, connection, ...}]"),
    )
    return [
        Verb(
            namespace="StoragePool",
            name="connectStorageServer",
            doc="Mount or link storage servers.",
            params=conn_params,
            handler=h.connect_server,
            returns="[{id, status}]",
            timeout=180.0,
        ),
        Verb(
            namespace="StoragePool",
            name="disconnectStorageServer",
            doc="Unmount or unlink storage servers.",
            params=conn_params,
            handler=h.disconnect_server,
            returns="[{id, status}]",
            timeout=180.0,
        ),
        Verb(
            namespace="StoragePool",
            name="create",
            doc="Create a pool in its master domain.",
            params=(
                SP,
                Param(name="poolName", kind=Kind.STR, doc="the pool's name"),
                Param(name="masterSdUUID", kind=Kind.STR, doc="the master domain"),
                Param(name="masterVersion", kind=Kind.INT, doc="the master version"),
                Param(name="domainList", kind=Kind.ANY, doc="the pool's domains"),
                Param(name="lockRenewalIntervalSec", kind=Kind.INT, doc="", default=5),
                Param(name="leaseTimeSec", kind=Kind.INT, doc="", default=60),
                Param(name="ioOpTimeoutSec", kind=Kind.INT, doc="", default=10),
                Param(name="leaseRetries", kind=Kind.INT, doc="", default=3),
            ),
            handler=h.create,
            errors=(StoragePoolAlreadyExists, StorageDomainAlreadyAttached),
            timeout=60.0,
        ),
        Verb(
            namespace="StoragePool",
            name="connect",
            doc="Connect this host to the pool.",
            params=(
                SP,
                HOST_ID,
                SCSI_KEY,
                Param(name="masterSdUUID", kind=Kind.STR, doc="the master domain"),
                Param(name="masterVersion", kind=Kind.INT, doc="the master version"),
                Param(name="domainDict", kind=Kind.OBJECT, doc="{sdUUID: status}", default={}),
            ),
            handler=h.connect,
            errors=(CannotConnectMultiplePools, StoragePoolWrongMaster, StoragePoolMasterNotFound),
            timeout=60.0,
        ),
        Verb(
            namespace="StoragePool",
            name="disconnect",
            doc="Disconnect this host from the pool.",
            params=(
                SP,
                HOST_ID,
                SCSI_KEY,
                Param(name="remove", kind=Kind.BOOL, doc="ignored", default=False),
            ),
            handler=h.disconnect,
            errors=(StoragePoolUnknown,),
        ),
        Verb(
            namespace="StoragePool",
            name="getInfo",
            doc="The pool and its domains.",
            params=(SP,),
            handler=h.get_info,
            returns="{info, dominfo}",
            errors=(StoragePoolUnknown,),
        ),
        Verb(
            namespace="StoragePool",
            name="spmStart",
            doc="Become the pool's SPM (a task).",
            params=(
                SP,
                Param(name="prevID", kind=Kind.INT, doc="ignored", default=-1),
                Param(name="prevLver", kind=Kind.STR_OR_INT, doc="ignored", default="-1"),
                Param(name="enableScsiFencing", kind=Kind.BOOL, doc="ignored", default=False),
                Param(name="maxHostID", kind=Kind.INT, doc="ignored", default=MAX_HOST_ID),
                Param(name="domVersion", kind=Kind.STR_OR_INT, doc="ignored", default="5"),
            ),
            handler=h.spm_start,
            returns="task id",
            errors=(StoragePoolUnknown,),
        ),
        Verb(
            namespace="StoragePool",
            name="spmStop",
            doc="Give up the SPM role.",
            params=(SP,),
            handler=h.spm_stop,
            errors=(StoragePoolUnknown, NotSpm),
        ),
        Verb(
            namespace="StoragePool",
            name="getSpmStatus",
            doc="Who is the pool's SPM.",
            params=(SP,),
            handler=h.spm_status,
            returns="{spmStatus, spmLver, spmId}",
            errors=(StoragePoolUnknown,),
        ),
        Verb(
            namespace="Host",
            name="getConnectedStoragePools",
            doc="The pools this host is connected to.",
            handler=h.connected_pools,
            returns="[UUID]",
        ),
    ]
