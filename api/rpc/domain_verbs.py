"""The StorageDomain namespace and the Host verbs that list domains (§3.1, §8).

Reads (getInfo, getStats, getImages, getVolumes, validate) run on a thread of the
domain's actor; changes (create, format, attach, activate, deactivate, detach,
setDescription) run on its writer, in order. Changes to a domain in a pool need
this host to be the pool's SPM (code 654 otherwise).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hostvisor.actors.actor import call
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.connections import normalize_spec
from hostvisor.actors.storage.errors import (
    StorageDomainAlreadyAttached,
    StorageDomainDoesNotExist,
    StorageDomainFSNotMounted,
    StorageDomainNotInPool,
    StorageDomainTypeError,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import (
    FILE_DOMAIN_TYPES,
    DomainClass,
    DomainStatus,
    DomainType,
    check_uuid,
    mount_point,
)
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb

SD = Param(name="storagedomainID", kind=Kind.STR, doc="the domain's UUID")
SP = Param(name="storagepoolID", kind=Kind.STR, doc="the pool's UUID")


class DomainHandlers:
    """The handlers of the StorageDomain verbs, over one `StorageApi`."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.api = api

    async def create(self, request: Call) -> bool:
        """StorageDomain.create: a v5 file domain on a connected server."""
        args = request.args
        sd = check_uuid(args["storagedomainID"], "storagedomainID")
        try:
            kind = DomainType(args["domainType"])
            domain_class = DomainClass(args["domainClass"])
        except ValueError:
            raise StorageDomainTypeError(
                domainType=args["domainType"], domainClass=args["domainClass"]
            ) from None
        if kind not in FILE_DOMAIN_TYPES:
            raise StorageDomainTypeError(domainType=kind.name, reason="only file domains here")
        where = args["typeArgs"]
        root = mount_point(
            self.api.config.mount_root,
            where if kind is DomainType.LOCALFS else normalize_spec(where),
        )
        if not await asyncio.to_thread(root.is_dir):
            raise StorageDomainFSNotMounted(path=str(root), typeArgs=args["typeArgs"])
        domain = await asyncio.to_thread(
            lambda: FileDomain.create(
                root,
                sd,
                name=args["name"],
                domain_type=kind,
                domain_class=domain_class,
                remote_path=args["typeArgs"],
                version=int(args["version"]),
                block_size=args["blockSize"] or 512,
                max_hosts=args["maxHosts"],
            )
        )
        await self.api.adopt(domain)
        return True

    async def format(self, request: Call) -> bool:
        """StorageDomain.format: remove the domain (not while in a pool)."""
        sd = request.args["storagedomainID"]
        pool = await self.api.read(sd, "pool of", lambda d: d.metadata().get("POOL_UUID", ""))
        if pool and not request.args["autoDetach"]:
            raise StorageDomainAlreadyAttached(sdUUID=sd, spUUID=pool)
        await self.api.write(sd, "format", lambda d: d.format())
        await self.api.forget_domain(sd)
        return True

    async def get_info(self, request: Call) -> dict[str, Any]:
        """StorageDomain.getInfo."""
        info: dict[str, Any] = await self.api.read(
            request.args["storagedomainID"], "info", lambda d: d.info()
        )
        return info

    async def get_stats(self, request: Call) -> dict[str, Any]:
        """StorageDomain.getStats."""
        stats: dict[str, Any] = await self.api.read(
            request.args["storagedomainID"], "stats", lambda d: d.stats()
        )
        return stats

    async def get_images(self, request: Call) -> list[str]:
        """StorageDomain.getImages."""
        images: list[str] = await self.api.read(
            request.args["storagedomainID"], "images", lambda d: d.images()
        )
        return images

    async def get_volumes(self, request: Call) -> list[str]:
        """StorageDomain.getVolumes: the volumes of one image."""
        img = request.args["imageID"] or None
        volumes: list[str] = await self.api.read(
            request.args["storagedomainID"], "volumes", lambda d: d.volumes(img)
        )
        return volumes

    async def validate(self, request: Call) -> bool:
        """StorageDomain.validate: raises when the domain is unusable."""
        await self.api.read(request.args["storagedomainID"], "validate", lambda d: d.validate())
        return True

    async def set_description(self, request: Call) -> bool:
        """StorageDomain.setDescription."""
        text = request.args["description"]
        await self.api.write(
            request.args["storagedomainID"],
            "set description",
            lambda d: d.update_metadata(DESCRIPTION=text),
        )
        return True

    # -- membership of the pool (SPM) ----------------------------------------------------------

    async def attach(self, request: Call) -> bool:
        """StorageDomain.attach: the domain joins the pool (Attached)."""
        sd, sp = request.args["storagedomainID"], request.args["storagepoolID"]
        pool_ref, record = await self.api.spm(sp)
        current = await self.api.read(sd, "pool of", lambda d: d.metadata().get("POOL_UUID", ""))
        if current and current != sp:
            raise StorageDomainAlreadyAttached(sdUUID=sd, spUUID=current)
        if current != sp:
            await self.api.write(sd, "attach", lambda d: d.update_metadata(POOL_UUID=sp))
        if sd not in record.domains:
            await settled(call(pool_ref, "set_domain", sd, DomainStatus.ATTACHED))
        return True

    async def activate(self, request: Call) -> bool:
        """StorageDomain.activate: an attached domain becomes Active."""
        return await self._set_status(request, DomainStatus.ACTIVE)

    async def deactivate(self, request: Call) -> bool:
        """StorageDomain.deactivate: an active domain goes back to Attached."""
        return await self._set_status(request, DomainStatus.ATTACHED)

    async def _set_status(self, request: Call, status: DomainStatus) -> bool:
        sd, sp = request.args["storagedomainID"], request.args["storagepoolID"]
        pool_ref, record = await self.api.spm(sp)
        if sd not in record.domains:
            raise StorageDomainNotInPool(sdUUID=sd, spUUID=sp)
        await self.api.domain(sd)  # it must still be there
        await settled(call(pool_ref, "set_domain", sd, status))
        return True

    async def detach(self, request: Call) -> bool:
        """StorageDomain.detach: the domain leaves the pool."""
        sd, sp = request.args["storagedomainID"], request.args["storagepoolID"]
        pool_ref, record = await self.api.spm(sp)
        if sd == record.master_uuid:
            raise InvalidArgument(sdUUID=sd, reason="the master domain cannot be detached")
        if sd not in record.domains:
            raise StorageDomainNotInPool(sdUUID=sd, spUUID=sp)
        await self.api.write(sd, "detach", lambda d: d.update_metadata(POOL_UUID=""))
        await settled(call(pool_ref, "set_domain", sd, None))
        return True

    # -- Host listings -------------------------------------------------------------------------

    async def host_domains(self, request: Call) -> list[str]:
        """Host.getStorageDomains: the domains visible on the connected servers."""
        sp = request.args["storagepoolID"]
        domains = await asyncio.to_thread(lambda: FileDomain.scan(self.api.roots()))
        if not sp:
            return [d.sd_uuid for d in domains]
        pools = await asyncio.gather(
            *(self.api.read(d.sd_uuid, "pool of", _pool_of) for d in domains)
        )
        return [d.sd_uuid for d, pool in zip(domains, pools, strict=True) if pool == sp]

    async def repo_stats(self, request: Call) -> dict[str, Any]:
        """Host.getStorageRepoStats: each monitored domain's last health check."""
        wanted = set(request.args["domains"] or ())
        record = await asyncio.to_thread(self.api.connected_record)
        acquired = set(record.domains) if record else set()
        stats = {}
        for sd in self.api.domain_ids():
            if wanted and sd not in wanted:
                continue
            ref = self.api.registry.get(f"storage/domains/{sd}")
            if ref is None:
                continue
            entry: dict[str, Any] = await settled(call(ref, "repo_stats"))
            entry["acquired"] = entry["valid"] and sd in acquired
            stats[sd] = entry
        return stats


def _pool_of(domain: FileDomain) -> str:
    return domain.metadata().get("POOL_UUID", "")


def domain_verbs(api: StorageApi) -> list[Verb]:
    """Return the StorageDomain verbs and the Host verbs that list domains."""
    h = DomainHandlers(api)
    not_found = (StorageDomainDoesNotExist,)

    def verb(name: str, doc: str, handler: Any, *params: Param, **extra: Any) -> Verb:
        return Verb(
            namespace="StorageDomain",
            name=name,
            doc=doc,
            params=params,
            handler=handler,
            errors=extra.pop("errors", not_found),
            **extra,
        )

    pool_params = (
        SD,
        SP,
        Param(name="masterSdUUID", kind=Kind.STR, doc="ignored", default=""),
        Param(name="masterVersion", kind=Kind.INT, doc="ignored", default=0),
    )
    return [
        verb(
            "create",
            "Create a file storage domain.",
            h.create,
            SD,
            Param(name="domainType", kind=Kind.INT, doc="1 NFS, 4 LOCALFS, 6 POSIXFS"),
            Param(name="typeArgs", kind=Kind.STR, doc="the connection (path or server:/export)"),
            Param(name="name", kind=Kind.STR, doc="the domain's name"),
            Param(name="domainClass", kind=Kind.INT, doc="1 Data, 2 Iso, 3 Backup"),
            Param(name="version", kind=Kind.STR_OR_INT, doc="the format version (5)", default=5),
            Param(name="blockSize", kind=Kind.INT, doc="512 (0: detect)", default=512),
            Param(name="maxHosts", kind=Kind.INT, doc="hosts the leases allow", default=2000),
            errors=(StorageDomainTypeError, StorageDomainFSNotMounted),
            timeout=120.0,
        ),
        verb(
            "format",
            "Remove a storage domain.",
            h.format,
            SD,
            Param(name="autoDetach", kind=Kind.BOOL, doc="even if attached", default=False),
            timeout=120.0,
        ),
        verb("getInfo", "The domain's metadata.", h.get_info, SD, returns="StorageDomainInfo"),
        verb("getStats", "The domain's space.", h.get_stats, SD, returns="StorageDomainStats"),
        verb("getImages", "The domain's images.", h.get_images, SD, returns="[UUID]"),
        verb(
            "getVolumes",
            "The volumes of an image.",
            h.get_volumes,
            SD,
            SP,
            Param(name="imageID", kind=Kind.STR, doc="the image", default=""),
            returns="[UUID]",
        ),
        verb("validate", "Check the domain is usable.", h.validate, SD),
        verb(
            "setDescription",
            "Rename the domain.",
            h.set_description,
            SD,
            Param(name="description", kind=Kind.STR, doc="the new description"),
        ),
        verb("attach", "Attach the domain to the pool (SPM).", h.attach, SD, SP),
        verb("activate", "Activate an attached domain (SPM).", h.activate, SD, SP),
        verb("deactivate", "Deactivate an active domain (SPM).", h.deactivate, *pool_params),
        verb(
            "detach",
            "Detach the domain from the pool (SPM).",
            h.detach,
            *pool_params,
            Param(name="force", kind=Kind.BOOL, doc="ignored", default=False),
        ),
        Verb(
            namespace="Host",
            name="getStorageDomains",
            doc="The storage domains this host sees.",
            params=(
                Param(name="storagepoolID", kind=Kind.STR, doc="only this pool's", default=""),
                Param(name="domainClass", kind=Kind.STR_OR_INT, doc="ignored", default=""),
                Param(name="storageType", kind=Kind.STR_OR_INT, doc="ignored", default=""),
                Param(name="remotePath", kind=Kind.STR, doc="ignored", default=""),
            ),
            handler=h.host_domains,
            returns="[UUID]",
        ),
        Verb(
            namespace="Host",
            name="getStorageRepoStats",
            doc="Health of the monitored domains.",
            params=(Param(name="domains", kind=Kind.ARRAY, doc="only these", default=[]),),
            handler=h.repo_stats,
            returns="{sdUUID: RepoStats}",
        ),
    ]
