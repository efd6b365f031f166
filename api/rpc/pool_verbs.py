"""Storage servers, the pool and the SPM (reference/vdsm-wire.md §3.1 Storage, §8).

`connectStorageServer` mounts (or links) what the Engine names and answers a status
per connection (the connections actor); `StoragePool.create` writes the pool into
its domains; `connect` makes this host a member (persisted, so a restarted agent is
still connected); `spmStart` returns a task that takes the pool's lock (the pool
actor). Each handler is declared from its typed signature, binds its params into
a typed request and makes one ask.
"""

from __future__ import annotations

from typing import Annotated, Any

import pykka

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.connections import ServerConnection
from hostvisor.actors.storage.errors import (
    CannotConnectMultiplePools,
    IsSpm,
    NotSpm,
    StorageDomainAlreadyAttached,
    StorageDomainNotActive,
    StoragePoolAlreadyExists,
    StoragePoolDestroyingError,
    StoragePoolMasterNotFound,
    StoragePoolUnknown,
    StoragePoolWrongMaster,
)
from hostvisor.actors.storage.model import BLANK_UUID, check_uuid
from hostvisor.actors.storage.pool_admin import Reconstruct
from hostvisor.actors.storage.pool_model import MAX_HOST_ID, ConnectPool, CreatePool
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Kind, Verb

SpId = Annotated[str, Arg("the pool's UUID", wire="storagepoolID")]
HostId = Annotated[int, Arg("this host's id in the pool (1..250)", wire="hostID")]
ScsiKey = Annotated[str, Arg("ignored", wire="scsiKey")]
AnySp = Annotated[str, Arg("the pool (may be BLANK)", wire="storagepoolID")]
ServerType = Annotated[int, Arg("1 NFS, 4 LOCALFS, 6 POSIXFS", wire="domainType")]
ServerParams = Annotated[
    list[Any], Arg("[{id, connection, ...}]", wire="connectionParams", kind=Kind.ARRAY)
]
MasterId = Annotated[str, Arg("the master domain", wire="masterSdUUID")]
MasterVersion = Annotated[int, Arg("the master version", wire="masterVersion")]


def _domain_list(value: Any) -> list[str]:
    """DomainList comes as a list of ids or as a comma-separated string of them.

    Raises:
        InvalidArgument: anything else (a number, an object, a list holding non-strings).
    """
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise InvalidArgument(
            param="domainList", expected="a list of UUIDs or a comma-separated string"
        )
    return [check_uuid(item.strip(), "domainList") for item in items if item.strip()]


def _ovfs(vms: list[Any]) -> list[tuple[str, str]]:
    """The OVFs of updateVMs' vmList [{vm, ovf, imglist}], as (vmId, OVF); empty ones skipped.

    Raises:
        InvalidArgument: an entry without `vm` or `ovf` (VDSM: InvalidParameterException).
    """
    found = []
    for entry in vms:
        if not entry:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("ovf"), str):
            raise InvalidArgument(param="vmList", reason="each entry needs vm and ovf")
        found.append((check_uuid(str(entry.get("vm", "")), "vmList.vm"), entry["ovf"]))
    return found


def _connections(domain_type: int, params: list[Any]) -> list[ServerConnection]:
    return [ServerConnection.from_wire(domain_type, p) for p in params]


def pool_verbs(api: StorageApi) -> list[Verb]:
    """Return the storage server and pool verbs."""
    return verbs_of(PoolHandlers(api))


class PoolHandlers:
    """The handlers of the pool verbs, over one `StorageApi`. Each runs on the API loop."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.client = api.client

    # -- storage servers --------------------------------------------------------------------

    @verb(
        "StoragePool",
        "connectStorageServer",
        doc="Mount or link storage servers.",
        returns="[{id, status}]",
        timeout=180.0,
    )
    def connect_server(
        self,
        *,
        pool: AnySp = BLANK_UUID,  # noqa: ARG002 - VDSM ignores it too
        domain_type: ServerType,
        params: ServerParams,
    ) -> pykka.Future[Any]:
        """StoragePool.connectStorageServer: [{id, status}] (0 = connected), in order."""
        return self.client.connections().connect(_connections(domain_type, params))

    @verb(
        "StoragePool",
        "disconnectStorageServer",
        doc="Unmount or unlink storage servers.",
        returns="[{id, status}]",
        timeout=180.0,
    )
    def disconnect_server(
        self,
        *,
        pool: AnySp = BLANK_UUID,  # noqa: ARG002 - VDSM ignores it too
        domain_type: ServerType,
        params: ServerParams,
    ) -> pykka.Future[Any]:
        """StoragePool.disconnectStorageServer: [{id, status}]."""
        return self.client.connections().disconnect(_connections(domain_type, params))

    # -- pool -------------------------------------------------------------------------------

    @verb(
        "StoragePool",
        "create",
        doc="Create a pool in its master domain.",
        errors=(StoragePoolAlreadyExists, StorageDomainAlreadyAttached),
        timeout=60.0,
    )
    async def create(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        sp: SpId,
        name: Annotated[str, Arg("the pool's name (the Engine's and VDSM's param)")],
        master: MasterId,
        version: MasterVersion,
        domains: Annotated[Any, Arg("the pool's domains", wire="domainList")],
        lock_renewal: Annotated[
            int, Arg("seconds between SPM lease renewals", wire="lockRenewalIntervalSec")
        ] = 5,
        lease_time: Annotated[int, Arg("seconds an SPM lease lasts", wire="leaseTimeSec")] = 60,
        io_timeout: Annotated[int, Arg("seconds an I/O may take", wire="ioOpTimeoutSec")] = 10,
        lease_retries: Annotated[int, Arg("lease renewal retries", wire="leaseRetries")] = 3,
    ) -> bool:
        """StoragePool.create: write the pool into its domains, all or none.

        The Engine (JsonRpcVdsServer.createStoragePool) sends `name`, as VDSM's schema
        names it.
        """
        if not name:
            raise InvalidArgument(param="name", reason="required")
        master = check_uuid(master, "masterSdUUID")
        listed = _domain_list(domains)
        if master not in listed:
            listed.append(master)
        request = CreatePool(
            sp_uuid=check_uuid(sp, "storagepoolID"),
            name=name,
            master_uuid=master,
            master_version=version,
            domains=tuple(listed),
            lock_renewal_interval=lock_renewal,
            lease_time=lease_time,
            io_op_timeout=io_timeout,
            lease_retries=lease_retries,
        )
        await settled(self.client.pool().create(request))
        return True

    @verb(
        "StoragePool",
        "connect",
        doc="Connect this host to the pool.",
        errors=(CannotConnectMultiplePools, StoragePoolWrongMaster, StoragePoolMasterNotFound),
        timeout=60.0,
    )
    async def connect(
        self,
        *,
        sp: SpId,
        host_id: HostId,
        scsi_key: ScsiKey = "",  # noqa: ARG002 - ignored, as VDSM does
        master: MasterId,
        version: MasterVersion,
        domains: Annotated[dict[str, Any], Arg("{sdUUID: status}", wire="domainDict", default={})],
    ) -> bool:
        """StoragePool.connect: this host becomes a member of the pool."""
        sp = check_uuid(sp, "storagepoolID")
        if not 1 <= host_id <= MAX_HOST_ID:
            raise InvalidArgument(hostID=host_id, reason=f"must be 1..{MAX_HOST_ID}")
        request = ConnectPool(
            sp_uuid=sp,
            host_id=host_id,
            master_uuid=check_uuid(master, "masterSdUUID"),
            master_version=version,
            domains=tuple((str(sd), str(status)) for sd, status in domains.items()),
        )
        await settled(self.client.pool().connect(request))
        return True

    @verb(
        "StoragePool",
        "disconnect",
        doc="Disconnect this host from the pool.",
        errors=(StoragePoolUnknown,),
    )
    async def disconnect(
        self,
        *,
        sp: SpId,
        host_id: HostId,  # noqa: ARG002 - ignored, as VDSM does
        scsi_key: ScsiKey = "",  # noqa: ARG002
        remove: Annotated[bool, Arg("ignored")] = False,  # noqa: ARG002
    ) -> bool:
        """StoragePool.disconnect."""
        await settled(self.client.pool().disconnect(sp))
        return True

    @verb(
        "StoragePool",
        "getInfo",
        doc="The pool and its domains.",
        returns="{info, dominfo}",
        errors=(StoragePoolUnknown,),
    )
    def get_info(self, *, sp: SpId) -> pykka.Future[Any]:
        """StoragePool.getInfo: {info, dominfo}."""
        return self.client.pool().info(sp)

    @verb(
        "StoragePool",
        "destroy",
        doc="Take every domain out of the pool and disconnect (SPM).",
        errors=(StoragePoolUnknown, NotSpm, StoragePoolDestroyingError),
        timeout=120.0,
    )
    async def destroy(
        self,
        *,
        sp: SpId,
        host_id: HostId,  # noqa: ARG002 - the SPM's id; the pool knows it
        scsi_key: ScsiKey = "",  # noqa: ARG002
    ) -> bool:
        """StoragePool.destroy: as JsonRpcIIrsServer.destroyStoragePool sends it."""
        await settled(self.client.pool().destroy(check_uuid(sp, "storagepoolID")))
        return True

    @verb(
        "StoragePool",
        "reconstructMaster",
        doc="Rebuild the pool's master on a domain, from the Engine's domainDict.",
        errors=(StoragePoolUnknown, StorageDomainAlreadyAttached, IsSpm),
        timeout=120.0,
    )
    async def reconstruct_master(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        sp: SpId,
        host_id: Annotated[int, Arg("this host's id (ignored)", wire="hostId")] = 0,  # noqa: ARG002
        name: Annotated[str, Arg("the pool's name")] = "",
        master: MasterId,
        version: MasterVersion,
        domains: Annotated[dict[str, Any], Arg("{sdUUID: status}", wire="domainDict")],
        lock_renewal: Annotated[
            int, Arg("seconds between SPM lease renewals", wire="lockRenewalIntervalSec")
        ] = 5,
        lease_time: Annotated[int, Arg("seconds an SPM lease lasts", wire="leaseTimeSec")] = 60,
        io_timeout: Annotated[int, Arg("seconds an I/O may take", wire="ioOpTimeoutSec")] = 10,
        lease_retries: Annotated[int, Arg("lease renewal retries", wire="leaseRetries")] = 3,
    ) -> bool:
        """StoragePool.reconstructMaster: as JsonRpcVdsServer.reconstructMaster sends it."""
        request = Reconstruct(
            sp_uuid=check_uuid(sp, "storagepoolID"),
            name=name,
            master_uuid=check_uuid(master, "masterSdUUID"),
            master_version=version,
            domains=tuple(
                (check_uuid(str(sd), "domainDict"), str(status).capitalize())
                for sd, status in domains.items()
            ),
            lock_renewal_interval=lock_renewal,
            lease_time=lease_time,
            io_op_timeout=io_timeout,
            lease_retries=lease_retries,
        )
        await settled(self.client.pool().reconstruct_master(request))
        return True

    @verb(
        "StoragePool",
        "switchMaster",
        doc="Move the master role to another active domain (SPM; a task).",
        returns="task id",
        errors=(StoragePoolUnknown, NotSpm, StoragePoolWrongMaster),
    )
    def switch_master(
        self,
        *,
        sp: SpId,
        old: Annotated[str, Arg("the current master", wire="oldMasterUUID")],
        new: Annotated[str, Arg("the new master", wire="newMasterUUID")],
        version: MasterVersion,
    ) -> pykka.Future[Any]:
        """StoragePool.switchMaster: as JsonRpcIIrsServer.switchMaster sends it."""
        return self.client.pool().switch_master(
            check_uuid(sp, "storagepoolID"),
            check_uuid(old, "oldMasterUUID"),
            check_uuid(new, "newMasterUUID"),
            version,
        )

    @verb(
        "StoragePool",
        "upgrade",
        doc="Upgrade the pool's domains to a format version (SPM).",
        returns='"started"',
        errors=(StoragePoolUnknown, NotSpm),
    )
    def upgrade(
        self,
        *,
        sp: SpId,
        target: Annotated[str | int, Arg('the version ("5")', wire="targetDomVersion")],
    ) -> pykka.Future[Any]:
        """StoragePool.upgrade: VDSM's `upgradeStatus`; Hostvisor's domains are v5 already."""
        text = str(target).strip()
        if not text.isdigit():
            raise InvalidArgument(targetDomVersion=target, reason="a version number")
        return self.client.pool().upgrade(check_uuid(sp, "storagepoolID"), int(text))

    # -- VM OVFs: the master's and export domains' --------------------------------------------

    @verb(
        "StoragePool",
        "getBackedUpVmsInfo",
        doc="The OVFs of VMs kept on an export domain (or the master).",
        returns="{vmID: ovf}",
        errors=(StoragePoolUnknown, NotSpm),
    )
    def vms_info(
        self,
        *,
        sp: SpId,
        sd: Annotated[str, Arg("the export domain (BLANK: master)", wire="storagedomainID")],
        vm_ids: Annotated[list[str], Arg("only these VMs", wire="vmList", default=[])],
    ) -> pykka.Future[Any]:
        """StoragePool.getBackedUpVmsInfo: as JsonRpcIIrsServer.getVmsInfo sends it."""
        return self.client.pool().vms_info(sp, sd, [check_uuid(vm, "vmList") for vm in vm_ids])

    @verb(
        "StoragePool",
        "updateVMs",
        doc="Write VMs' OVFs on an export domain (or the master).",
        errors=(StoragePoolUnknown, NotSpm, StorageDomainNotActive),
    )
    async def update_vms(
        self,
        *,
        sp: SpId,
        vms: Annotated[list[Any], Arg("[{vm, ovf, imglist}]", wire="vmList", kind=Kind.ARRAY)],
        sd: Annotated[str, Arg("the domain (BLANK: master)", wire="storagedomainID")] = "",
    ) -> bool:
        """StoragePool.updateVMs: as JsonRpcIIrsServer.updateVMInImportExport sends it."""
        await settled(self.client.pool().update_vms(sp, sd, _ovfs(vms)))
        return True

    @verb(
        "StoragePool",
        "removeVM",
        doc="Remove a VM's OVF from an export domain (or the master).",
        errors=(StoragePoolUnknown, NotSpm, StorageDomainNotActive),
    )
    async def remove_vm(
        self,
        *,
        sp: SpId,
        vm: Annotated[str, Arg("the VM", wire="vmUUID")],
        sd: Annotated[str, Arg("the domain (BLANK: master)", wire="storagedomainID")] = "",
    ) -> bool:
        """StoragePool.removeVM: as JsonRpcIIrsServer.removeVM sends it."""
        await settled(self.client.pool().remove_vm(sp, sd, check_uuid(vm, "vmUUID")))
        return True

    # -- SPM --------------------------------------------------------------------------------

    @verb(
        "StoragePool",
        "spmStart",
        doc="Become the pool's SPM (a task).",
        returns="task id",
        errors=(StoragePoolUnknown,),
    )
    def spm_start(
        self,
        *,
        sp: SpId,
        prev_id: Annotated[int, Arg("ignored", wire="prevID")] = -1,  # noqa: ARG002
        prev_lver: Annotated[str | int, Arg("ignored", wire="prevLver")] = "-1",  # noqa: ARG002
        fencing: Annotated[bool, Arg("ignored", wire="enableScsiFencing")] = False,  # noqa: ARG002
        max_host_id: Annotated[int, Arg("ignored", wire="maxHostID")] = MAX_HOST_ID,  # noqa: ARG002
        dom_version: Annotated[str | int, Arg("ignored", wire="domVersion")] = "5",  # noqa: ARG002
    ) -> pykka.Future[Any]:
        """StoragePool.spmStart (the Engine's SpmStartVDSCommand): a task taking the SDM lease.

        sanlock's `SDM` resource on a shared master (AcquireLockFailure, 651, in the
        task's status while another host holds it); a local lock on LOCALFS.
        """
        return self.client.pool().spm_start(sp)

    @verb(
        "StoragePool",
        "spmStop",
        doc="Give up the SPM role.",
        errors=(StoragePoolUnknown, NotSpm),
    )
    async def spm_stop(self, *, sp: SpId) -> bool:
        """StoragePool.spmStop."""
        await settled(self.client.pool().spm_stop(sp))
        return True

    @verb(
        "StoragePool",
        "getSpmStatus",
        doc="Who is the pool's SPM.",
        returns="{spmStatus, spmLver, spmId}",
        errors=(StoragePoolUnknown,),
    )
    def spm_status(self, *, sp: SpId) -> pykka.Future[Any]:
        """StoragePool.getSpmStatus (SpmStatusVDSCommand): {spmStatus, spmLver, spmId}.

        On a sanlock master, `spmId` and `spmLver` are the SDM lease's owner and
        version as sanlock reports them, on any host of the pool.
        """
        return self.client.pool().spm_status(sp)

    @verb(
        "Host",
        "getConnectedStoragePools",
        doc="The pools this host is connected to.",
        returns="[UUID]",
    )
    async def connected_pools(self) -> list[str]:
        """Host.getConnectedStoragePools."""
        record = await settled(self.client.pool().connected())
        return [] if record is None else [record.sp_uuid]
