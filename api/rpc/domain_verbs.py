"""The StorageDomain namespace and the Host verbs that list domains (§3.1, §8).

Each handler is declared from its typed signature, binds its params into a typed
message and makes one ask: reads (getInfo, getStats, getImages, getVolumes,
validate) and writes (format, setDescription) go to the domain's actor, which
checks and acts inside its writer; create goes to the connections actor (it owns
the mounts); attach, activate, deactivate and detach go to the pool actor, which
needs this host to be the pool's SPM (code 654 otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any

import pykka

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage.connections import normalize_spec
from hostvisor.actors.storage.domain_ops import (
    Format,
    Images,
    Info,
    SetDescription,
    Stats,
    Validate,
    Volumes,
)
from hostvisor.actors.storage.errors import (
    GetFileStatsError,
    StorageDomainDoesNotExist,
    StorageDomainFSNotMounted,
    StorageDomainTypeError,
)
from hostvisor.actors.storage.master import FileStats
from hostvisor.actors.storage.model import (
    BLANK_UUID,
    DomainClass,
    DomainStatus,
    DomainType,
    check_uuid,
)
from hostvisor.actors.storage.pool_model import CreateDomain
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb

SdId = Annotated[str, Arg("the domain's UUID", wire="storagedomainID")]
SpId = Annotated[str, Arg("the pool's UUID", wire="storagepoolID")]
IgnoredMaster = Annotated[str, Arg("ignored", wire="masterSdUUID")]
IgnoredVersion = Annotated[int, Arg("ignored", wire="masterVersion")]
NOT_FOUND = (StorageDomainDoesNotExist,)


def domain_verbs(api: StorageApi) -> list[Verb]:
    """Return the StorageDomain verbs and the Host verbs that list domains."""
    return verbs_of(DomainHandlers(api))


class DomainHandlers:
    """The handlers of the StorageDomain verbs, over one `StorageApi` (the API loop)."""

    def __init__(self, api: StorageApi) -> None:
        """Serve through `api`."""
        self.api = api
        self.client = api.client

    @verb(
        "StorageDomain",
        "create",
        doc="Create a file storage domain.",
        errors=(StorageDomainTypeError, StorageDomainFSNotMounted),
        timeout=120.0,
    )
    async def create(  # noqa: PLR0913 - the verb's own params
        self,
        *,
        sd: SdId,
        domain_type: Annotated[int, Arg("1 NFS, 4 LOCALFS, 6 POSIXFS", wire="domainType")],
        type_args: Annotated[str, Arg("the connection (path or server:/export)", wire="typeArgs")],
        name: Annotated[str, Arg("the domain's name")],
        domain_class: Annotated[int, Arg("1 Data, 2 Iso, 3 Backup", wire="domainClass")],
        version: Annotated[str | int, Arg("the format version (5)")] = 5,
        block_size: Annotated[int, Arg("512 (0: detect)", wire="blockSize")] = 512,
        max_hosts: Annotated[int, Arg("hosts the leases allow", wire="maxHosts")] = 2000,
    ) -> bool:
        """StorageDomain.create: a v5 file domain on a connected server."""
        try:
            kind, klass = DomainType(domain_type), DomainClass(domain_class)
        except ValueError:
            raise StorageDomainTypeError(domainType=domain_type, domainClass=domain_class) from None
        request = CreateDomain(
            sd_uuid=check_uuid(sd, "storagedomainID"),
            name=name,
            domain_type=kind,
            domain_class=klass,
            type_args=plain_text(type_args, "typeArgs", max_chars=4096),
            version=_version(version),
            block_size=block_size or 512,
            max_hosts=max_hosts,
        )
        await settled(self.client.connections().create_domain(request))
        return True

    @verb(
        "StorageDomain",
        "format",
        doc="Remove a storage domain.",
        errors=NOT_FOUND,
        timeout=120.0,
    )
    async def format(
        self,
        *,
        sd: SdId,
        auto_detach: Annotated[bool, Arg("even if attached", wire="autoDetach")] = False,
    ) -> bool:
        """StorageDomain.format: remove the domain (not while in a pool), stop its actor."""
        await settled(self.client.write(sd, Format(auto_detach=auto_detach)))
        await settled(self.client.connections().forget(sd))
        return True

    @verb(
        "StorageDomain",
        "getInfo",
        doc="The domain's metadata.",
        returns="StorageDomainInfo",
        errors=NOT_FOUND,
    )
    def get_info(self, *, sd: SdId) -> pykka.Future[Any]:
        """StorageDomain.getInfo."""
        return self.client.read(sd, Info())

    @verb(
        "StorageDomain",
        "getStats",
        doc="The domain's space.",
        returns="StorageDomainStats",
        errors=NOT_FOUND,
    )
    def get_stats(self, *, sd: SdId) -> pykka.Future[Any]:
        """StorageDomain.getStats."""
        return self.client.read(sd, Stats())

    @verb(
        "StorageDomain", "getImages", doc="The domain's images.", returns="[UUID]", errors=NOT_FOUND
    )
    def get_images(self, *, sd: SdId) -> pykka.Future[Any]:
        """StorageDomain.getImages."""
        return self.client.read(sd, Images())

    @verb(
        "StorageDomain",
        "getVolumes",
        doc="The volumes of an image.",
        returns="[UUID]",
        errors=NOT_FOUND,
    )
    def get_volumes(
        self,
        *,
        sd: SdId,
        sp: SpId,  # noqa: ARG002 - VDSM's param; the domain is found by its id
        img: Annotated[str, Arg("the image", wire="imageID")] = "",
    ) -> pykka.Future[Any]:
        """StorageDomain.getVolumes: the volumes of one image."""
        return self.client.read(sd, Volumes(img=img or None))

    @verb(
        "StorageDomain",
        "getFileStats",
        doc="The files of an ISO domain: size, ctime, status.",
        returns="{name: {size, ctime, status}}",
        errors=(*NOT_FOUND, GetFileStatsError),
    )
    def get_file_stats(
        self,
        *,
        sd: SdId,
        pattern: Annotated[str, Arg("a glob the names must match")] = "*",
        case_sensitive: Annotated[bool, Arg("match case", wire="caseSensitive")] = False,
    ) -> pykka.Future[Any]:
        """StorageDomain.getFileStats: as JsonRpcIIrsServer.getFileStats sends it (ISO only)."""
        return self.client.read(sd, FileStats(pattern=pattern, case_sensitive=case_sensitive))

    @verb("StorageDomain", "validate", doc="Check the domain is usable.", errors=NOT_FOUND)
    async def validate(self, *, sd: SdId) -> bool:
        """StorageDomain.validate: raises when the domain is unusable."""
        await settled(self.client.read(sd, Validate()))
        return True

    @verb("StorageDomain", "setDescription", doc="Rename the domain.", errors=NOT_FOUND)
    async def set_description(
        self, *, sd: SdId, description: Annotated[str, Arg("the new description")]
    ) -> bool:
        """StorageDomain.setDescription."""
        text = plain_text(description, "description", max_chars=MAX_DESCRIPTION)
        await settled(self.client.write(sd, SetDescription(text=text)))
        return True

    # -- membership of the pool (SPM) ----------------------------------------------------------

    @verb("StorageDomain", "attach", doc="Attach the domain to the pool (SPM).", errors=NOT_FOUND)
    async def attach(self, *, sd: SdId, sp: SpId) -> bool:
        """StorageDomain.attach: the domain joins the pool (Attached)."""
        await settled(self.client.pool().attach(sp, sd))
        return True

    @verb("StorageDomain", "activate", doc="Activate an attached domain (SPM).", errors=NOT_FOUND)
    async def activate(self, *, sd: SdId, sp: SpId) -> bool:
        """StorageDomain.activate: an attached domain becomes Active."""
        await settled(self.client.pool().set_status(sp, sd, DomainStatus.ACTIVE))
        return True

    @verb(
        "StorageDomain",
        "deactivate",
        doc="Deactivate an active domain (SPM).",
        errors=NOT_FOUND,
    )
    async def deactivate(
        self,
        *,
        sd: SdId,
        sp: SpId,
        master: IgnoredMaster = "",  # noqa: ARG002 - ignored, as VDSM does
        version: IgnoredVersion = 0,  # noqa: ARG002
    ) -> bool:
        """StorageDomain.deactivate: an active domain goes back to Attached."""
        await settled(self.client.pool().set_status(sp, sd, DomainStatus.ATTACHED))
        return True

    @verb(
        "StorageDomain",
        "detach",
        doc="Detach the domain from the pool (SPM).",
        errors=NOT_FOUND,
    )
    async def detach(
        self,
        *,
        sd: SdId,
        sp: SpId,
        master: IgnoredMaster = "",  # noqa: ARG002 - ignored, as VDSM does
        version: IgnoredVersion = 0,  # noqa: ARG002
        force: Annotated[bool, Arg("ignored")] = False,  # noqa: ARG002
    ) -> bool:
        """StorageDomain.detach: the domain leaves the pool."""
        await settled(self.client.pool().detach(sp, sd))
        return True

    # -- Host listings -------------------------------------------------------------------------

    @verb(
        "Host",
        "getStorageDomains",
        doc="The storage domains this host sees.",
        returns="[UUID]",
    )
    async def host_domains(
        self,
        *,
        sp: Annotated[str, Arg("only this pool's (BLANK: all)", wire="storagepoolID")] = "",
        domain_class: Annotated[
            str | int, Arg("only this class: 1 Data, 2 Iso, 3 Backup (0: any)", wire="domainClass")
        ] = "",
        storage_type: Annotated[
            str | int, Arg("only this type: 1 NFS, 4 LOCALFS, 6 POSIXFS", wire="storageType")
        ] = "",
        remote_path: Annotated[str, Arg("only the domain at this path", wire="remotePath")] = "",
    ) -> list[str]:
        """Host.getStorageDomains: the domains visible on the connected servers.

        As VDSM's `getStorageDomainsList`: a BLANK (or empty) pool id lists every
        domain, another one the domains of that pool; each non-empty filter
        (`domainClass` and `storageType` as numbers, `remotePath`) narrows the list.
        The Engine (GetExistingStorageDomainListQuery) sends the BLANK pool id, the
        class as a number, the type as "" and the path.
        """
        found: list[tuple[str, str, dict[str, str]]] = await settled(
            self.client.connections().scan()
        )
        wanted_class = _number(domain_class, "domainClass")
        wanted_type = _number(storage_type, "storageType")
        path = normalize_spec(remote_path) if remote_path else ""
        listed = []
        for sd, pools, meta in found:
            if sp and sp != BLANK_UUID and sp not in pools.split(","):
                continue
            if wanted_class and _class_of(meta) != wanted_class:
                continue
            if wanted_type and _type_of(meta) != wanted_type:
                continue
            if path and normalize_spec(meta.get("REMOTE_PATH", "")) != path:
                continue
            listed.append(sd)
        return listed

    @verb(
        "Host",
        "getStorageRepoStats",
        doc="Health of the monitored domains.",
        returns="{sdUUID: RepoStats}",
    )
    async def repo_stats(
        self, *, domains: Annotated[list[str], Arg("only these", default=[])]
    ) -> dict[str, Any]:
        """Host.getStorageRepoStats: each monitored domain's last health check.

        {sdUUID: {code, lastCheck, delay, valid, version, acquired, actual}}, as VDSM's
        hsm.repoStats (the same entries as Host.getStats.storageDomains).
        """
        return await self.api.repo_stats(domains or ())


def _number(value: str | int, name: str) -> int:
    """A filter given as a number or a string of one; 0 for none."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text:
        return 0
    if not text.isdigit():
        raise InvalidArgument(**{name: value}, reason="a number")
    return int(text)


def _class_of(meta: dict[str, str]) -> int:
    words = {klass.word: int(klass) for klass in DomainClass}
    return words.get(meta.get("CLASS", ""), -1)


def _type_of(meta: dict[str, str]) -> int:
    try:
        return int(DomainType[meta.get("TYPE", "")])
    except KeyError:
        return -1


MAX_DESCRIPTION = 1024
"""Characters a domain's description may have (it is one line of its metadata)."""


def plain_text(value: str, name: str, *, max_chars: int) -> str:
    """Return `value` if it can be one line of metadata or a path; refuse it otherwise.

    Raises:
        InvalidArgument: longer than `max_chars`, a NUL, CR or LF in it, or text that
            is not valid Unicode (a lone surrogate cannot be written as UTF-8).
    """
    if len(value) > max_chars:
        raise InvalidArgument(param=name, reason=f"longer than {max_chars} characters")
    if any(c in value for c in "\0\r\n"):
        raise InvalidArgument(param=name, reason="holds a NUL, CR or LF")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(param=name, reason="not valid Unicode text") from None
    return value


def _version(value: str | int) -> int:
    """The domain format version, sent as a number or its decimal string."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(param="version", reason="must be an integer") from None
