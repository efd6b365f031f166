"""The migration verbs: VM.migrate, migrateCancel, getMigrationStatus, migrationCreate.

Params as the Engine sends them (`JsonRpcVdsServer.migrate`, `migrateStatus`,
`migrateCancel`) and as a source agent sends `VM.migrationCreate` to the destination
(VDSM's `SourceThread`): the VM's definition in `params`, with `_srcDomXML` the
source's live domain XML, and the Engine's `incomingLimit`. Answers as VDSM's
bridge shapes them: `migrate` and `migrateCancel` answer nothing but their status;
`getMigrationStatus` its `migrationStats`; `migrationCreate` `{migrationPort, params}`.
A VM that runs as a container answers 75 (its actor does not migrate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from hostvisor.actors.errors import AlreadyExists, HostvisorError, InvalidArgument
from hostvisor.actors.hooks import HookFailed
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.addresses import VM_GUESTS
from hostvisor.actors.vm.errors import NoSuchVm, UnsupportedOperation, VmCreateError, VmExists
from hostvisor.actors.vm.hookcalls import incoming_ready
from hostvisor.actors.vm.migrating import (
    MigrationCancelFailed,
    MigrationInProgress,
    MigrationLimitExceeded,
    MigrationSlots,
)
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi, VmId
from hostvisor.supervision.spec import ChildSpec
from hostvisor.supervision.supervisor import StartChild

MigrateParams = Annotated[dict[str, Any], Arg("the Engine's migration params", wire="params")]
VmDefinition = Annotated[
    dict[str, Any], Arg("the VM's definition: _srcDomXML (or xml), vmId, …", wire="params")
]


def migration_verbs(
    api: VmApi, *, incoming_child: Callable[..., ChildSpec], slots: MigrationSlots
) -> list[Verb]:
    """Return the migration verbs over `api`.

    Args:
        api: the VM verbs' reach (registry, VM lookups).
        incoming_child: `incoming_child(spec)` returns the child spec of a VmActor
            that waits for its guest to arrive by migration.
        slots: the host's bounds on concurrent migrations.
    """
    return verbs_of(MigrationHandlers(api, incoming_child, slots))


class MigrationHandlers:
    """The handlers of the migration verbs. Each runs on the API loop."""

    def __init__(
        self, api: VmApi, incoming_child: Callable[..., ChildSpec], slots: MigrationSlots
    ) -> None:
        """Serve through `api`; make destination VMs with `incoming_child`."""
        self.api = api
        self.incoming_child = incoming_child
        self.slots = slots

    @verb(
        "VM",
        "migrate",
        returns="null",
        errors=(NoSuchVm, UnsupportedOperation, MigrationInProgress, MigrationLimitExceeded),
    )
    async def migrate(self, *, vm_id: VmId, params: MigrateParams) -> None:
        """Migrate a running VM to another host (returns once the migration has started).

        Progress comes as `|virt|VM_migration_status|<vmId>` events; the VM is
        "Migration Source" meanwhile, then Down (MIGRATION_SUCCEEDED) or Up again.
        """
        await self.api.retried(vm_id, lambda vm: vm.migrate(params))

    @verb("VM", "migrateCancel", returns="null", errors=(NoSuchVm, MigrationCancelFailed))
    async def migrate_cancel(self, *, vm_id: VmId) -> None:
        """Cancel the VM's outgoing migration; it stays Up on this host."""
        await self.api.retried(vm_id, lambda vm: vm.migrate_cancel())

    @verb("VM", "getMigrationStatus", returns="MigrationStats", errors=(NoSuchVm,))
    async def get_migration_status(self, *, vm_id: VmId) -> dict[str, Any]:
        """The outgoing migration's status and progress (and downtime once done)."""
        return await self.api.retried(vm_id, lambda vm: vm.migration_status(), reads=True)

    async def _prepared(self, xml: str) -> str:
        """The source's XML with this host's paths of its storage disks (prepared here).

        A disk this host cannot prepare (its domain or pool not connected here) refuses
        the migration before anything is made, with VDSM's createErr (9), which
        VDSM's migrationCreate answers when its VM could not get ready.
        """
        try:
            return await self.api.prepared_xml(xml)
        except VmCreateError:
            raise
        except HostvisorError as error:
            raise VmCreateError(reason=f"a disk cannot be prepared on this host: {error}") from None

    @verb(
        "VM",
        "migrationCreate",
        returns="{migrationPort, params}",
        errors=(VmExists, VmCreateError, MigrationLimitExceeded, HookFailed),
        timeout=60.0,
    )
    async def migration_create(
        self,
        *,
        vm_id: VmId,
        params: VmDefinition,
        incoming_limit: Annotated[
            int | None, Arg("incoming migrations allowed from now on", wire="incomingLimit")
        ] = None,
    ) -> dict[str, Any]:
        """Prepare this host to receive a VM by live migration (called by the source agent).

        Makes the VM's actor, "Migration Destination" until libvirt brings the guest in.
        """
        xml = params.get("_srcDomXML") or params.get("xml")
        if not isinstance(xml, str) or not xml.strip():
            raise InvalidArgument(param="params._srcDomXML", reason="the domain XML is required")
        if incoming_limit is not None and incoming_limit < 1:
            raise InvalidArgument(param="incomingLimit", reason="must be at least 1")
        spec = domxml.parse_untrusted(xml)
        if spec.vm_id != vm_id:
            raise InvalidArgument(param="vmID", reason="differs from the domain XML's <uuid>")
        if self.api.guest(vm_id) is not None:
            raise VmExists(vmId=vm_id)
        spec = domxml.parse_untrusted(await self._prepared(xml))
        self.slots.take("incoming", incoming_limit)
        try:
            await settled(
                self.api.supervisor(VM_GUESTS).ask(
                    StartChild(self.incoming_child(spec)), block=False
                )
            )
        except AlreadyExists:
            self.slots.give_back("incoming")
            raise VmExists(vmId=vm_id) from None
        except BaseException:
            self.slots.give_back("incoming")
            raise
        # A before_vm_migrate_destination hook may refuse the guest: HookFailed (78),
        # its VM Down, and the source destroys it (VDSM's migrationCreate answers so).
        await settled(await self.api.retried(vm_id, incoming_ready))
        info = await self.api.rendered("info", vm_id)
        return {"migrationPort": 0, "params": info}
