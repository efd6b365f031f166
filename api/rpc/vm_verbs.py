"""The VM namespace and the Host verbs about VMs (reference/vdsm-wire.md §3.1, §4, §5).

Each handler finds the VM's actor by path (`vms/<vmID>`, or `containers/<vmID>` for a
VM that runs as a docker container: same method names), sends it the call and
awaits the answer on the API loop; an operation's answer is itself a future that
settles when libvirt is done, so the handler awaits twice. Listings over every VM
ask the VM board once (each VmActor posts its entry there); only VMs the board has
no entry for are asked directly, all at once and each bounded by a timeout, so one
slow actor never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.errors import ActorCrashed, AlreadyExists, NotFound
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk, disk_volumes, with_disk_paths
from hostvisor.actors.vm.errors import NoSuchVm, UnsupportedOperation, VmCreateError, VmExists
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb
from hostvisor.supervision.registry import Registry, child_path
from hostvisor.supervision.spec import ChildSpec
from hostvisor.supervision.supervisor import DeleteChild, StartChild, TerminateChild
from hostvisor.supervision.tree import VM_BOARD

log = logging.getLogger(__name__)

VMS = "vms"
CONTAINERS = "containers"
GATHER_TIMEOUT = 10.0
VM_ID = Param(name="vmID", kind=Kind.STR, doc="the VM's UUID")
XML_REQUIRED = (
    "vmParams.xml is required: Hostvisor starts VMs from the libvirt domain XML that "
    "the Engine sends since oVirt 4.2"
)


@dataclass(frozen=True, slots=True)
class VmApi:
    """What the VM verbs reach: the registry and the maker of VM child specs."""

    registry: Registry
    vm_child: Callable[..., ChildSpec]
    """`vm_child(spec, recover=False)` returns the child spec of a VmActor."""
    operation_timeout: float = 30.0
    """Seconds pause, cont, reset and shutdown may take (config.vm_operation_timeout)."""
    prepare_disk: Callable[[DiskVolume], Awaitable[PreparedDisk]] | None = None
    """Prepares a disk the XML names by storage ids; None: such disks are refused."""
    container_child: Callable[..., ChildSpec] | None = None
    """`container_child(spec)` returns the child spec of a ContainerActor (a VM whose
    custom properties say `containerType`); None: such VMs are refused."""

    async def prepared_xml(self, xml: str) -> str:
        """Return `xml` with each storage disk's path and format filled in by the host."""
        volumes = disk_volumes(xml)
        if not volumes:
            return xml
        if self.prepare_disk is None:
            raise VmCreateError(reason="this host has no storage to prepare disks from")
        prepared = {}
        for volume in volumes:
            prepared[volume.name] = await self.prepare_disk(volume)
        return with_disk_paths(xml, prepared)

    def vm(self, vm_id: str) -> pykka.ActorRef[Any]:
        """Return the VM's actor (a VmActor or a ContainerActor), or raise NoSuchVm."""
        ref = self.ref(vm_id)
        if ref is None:
            raise NoSuchVm(vmId=vm_id)
        return ref

    def ref(self, vm_id: str) -> pykka.ActorRef[Any] | None:
        """Return the VM's actor, under `vms` or `containers`; None if there is none."""
        return self.registry.get(child_path(VMS, vm_id)) or self.registry.get(
            child_path(CONTAINERS, vm_id)
        )

    def supervisor(self, branch: str = VMS) -> pykka.ActorRef[Any]:
        """Return the `vms` supervisor (or the one of `branch`)."""
        return self.registry.lookup(branch)

    def branch_of(self, vm_id: str) -> str:
        """Return the supervisor the VM's actor lives under."""
        return VMS if self.registry.get(child_path(VMS, vm_id)) is not None else CONTAINERS

    def vm_ids(self, wanted: list[str] | None = None) -> list[str]:
        """Return the ids of the running VM actors (only `wanted` ones, if given)."""
        ids: list[str] = []
        for branch in (VMS, CONTAINERS):
            try:
                children = self.registry.status(branch).children
            except NotFound:
                continue
            ids.extend(path.rsplit("/", 1)[-1] for path in children)
        return [vm for vm in ids if not wanted or vm in wanted]

    async def gather(self, kind: str, wanted: list[str] | None = None) -> list[Any]:
        """Return `kind` ("brief", "info", "stats", "definition") of every (wanted) VM.

        One ask to the board; the VMs it has no entry for are asked directly.
        """
        vm_ids = self.vm_ids(wanted)
        board = self.registry.get(VM_BOARD)
        if board is None:
            return await self.ask_each(kind, vm_ids)
        try:
            rendered = await asyncio.wait_for(
                settled(call(board, "render", kind, vm_ids)), GATHER_TIMEOUT
            )
        except (TimeoutError, pykka.ActorDeadError, ActorCrashed):
            log.warning("the VM board did not answer; asking each VM")
            return await self.ask_each(kind, vm_ids)
        answers: list[Any] = rendered.answers
        if rendered.missing:
            answers.extend(await self.ask_each(kind, rendered.missing))
        return answers

    async def ask_each(self, method: str, vm_ids: list[str]) -> list[Any]:
        """Ask each VM's actor `method`; return the answers that came in time."""
        futures = []
        for vm_id in vm_ids:
            ref = self.ref(vm_id)
            if ref is not None:
                futures.append(settled(call(ref, method)))
        if not futures:
            return []
        done, pending = await asyncio.wait(futures, timeout=GATHER_TIMEOUT)
        for future in pending:
            future.cancel()
        if pending:
            log.warning("%d VMs did not answer %s in %s s", len(pending), method, GATHER_TIMEOUT)
        return [f.result() for f in done if not f.exception()]


class VmHandlers:
    """The handlers of the VM verbs, over one `VmApi`."""

    def __init__(self, api: VmApi) -> None:
        """Serve through `api`."""
        self.api = api

    async def create(self, request: Call) -> dict[str, Any]:
        """VM.create: start the VM of a domain XML; answers before it is up."""
        params = request.args["vmParams"]
        xml = params.get("xml")
        if not isinstance(xml, str) or not xml.strip():
            raise VmCreateError(reason=XML_REQUIRED)
        spec = domxml.parse(xml)
        if self.api.ref(spec.vm_id) is not None:
            raise VmExists(vmId=spec.vm_id)
        launched = await self.api.prepared_xml(xml)
        if launched is not xml:
            xml = launched
            spec = domxml.parse(xml)
        branch, child = VMS, self.api.vm_child
        if spec.container_type is not None:  # a container VM (reference/vdsm-wire.md §6)
            if self.api.container_child is None:
                raise VmCreateError(vmId=spec.vm_id, reason="this host runs no containers")
            branch, child = CONTAINERS, self.api.container_child
        try:
            await settled(self.api.supervisor(branch).ask(StartChild(child(spec)), block=False))
        except AlreadyExists:
            raise VmExists(vmId=spec.vm_id) from None
        info: dict[str, Any] = await settled(call(self.api.vm(spec.vm_id), "info"))
        return {
            "vmId": spec.vm_id,
            "status": info["status"],
            "statusTime": info["statusTime"],
            "xml": xml,
        }

    async def operate(self, request: Call, op: str, **kwargs: Any) -> Any:
        """Run operation `op` on the VM and wait until libvirt has done it."""
        operation = await settled(call(self.api.vm(request.args["vmID"]), op, **kwargs))
        return await settled(operation)

    async def destroy(self, request: Call) -> bool:
        """VM.destroy: kill the VM, then forget it."""
        vm_id = request.args["vmID"]
        await self.operate(request, "destroy")
        supervisor = self.api.supervisor(self.api.branch_of(vm_id))
        await settled(supervisor.ask(TerminateChild(vm_id), block=False))
        await settled(supervisor.ask(DeleteChild(vm_id), block=False))
        return True

    async def shutdown(self, request: Call) -> str:
        """VM.shutdown: ACPI shutdown (or reboot), forced off after `timeout`."""
        args = request.args
        await self.operate(
            request, "shutdown", timeout=float(args["timeout"]), reboot=args["reboot"]
        )
        return "Machine shutting down"

    async def pause(self, request: Call) -> dict[str, Any]:
        """VM.pause."""
        await self.operate(request, "pause")
        return {"vmList": {}}

    async def cont(self, request: Call) -> dict[str, Any]:
        """VM.cont."""
        await self.operate(request, "cont")
        return {"vmList": {}}

    async def reset(self, request: Call) -> bool:
        """VM.reset."""
        await self.operate(request, "reset")
        return True

    def unsupported(self, name: str, *, vm_in_params: bool = False) -> Callable[[Call], Any]:
        """A verb no runtime here implements yet: the VM's actor answers code 75.

        `vm_in_params`: the VM id comes inside `params` (`params.vmId`), as the
        hotplug verbs send it.
        """

        async def handler(request: Call) -> Any:
            args = request.args
            vm_id = str(args["params"].get("vmId", "")) if vm_in_params else args["vmID"]
            ref = self.api.vm(vm_id)
            return await settled(call(ref, name))

        return handler

    async def get_stats(self, request: Call) -> list[Any]:
        """VM.getStats: a one-element list."""
        return [await settled(call(self.api.vm(request.args["vmID"]), "stats"))]

    async def get_info(self, request: Call) -> Any:
        """VM.getInfo."""
        return await settled(call(self.api.vm(request.args["vmID"]), "info"))

    async def vm_list(self, request: Call) -> list[Any]:
        """Host.getVMList: ids, or {vmId, status} with onlyUUID=false."""
        if request.args["onlyUUID"]:
            return self.api.vm_ids(request.args["vmList"] or None)
        return await self.api.gather("brief", request.args["vmList"] or None)

    async def full_list(self, request: Call) -> list[Any]:
        """Host.getVMFullList: each VM's status and live domain XML."""
        return await self.api.gather("definition", request.args["vmList"] or None)

    async def all_stats(self, _request: Call) -> list[Any]:
        """Host.getAllVmStats."""
        return await self.api.gather("stats")

    async def dumpxmls(self, request: Call) -> dict[str, str]:
        """Host.dumpxmls: {vmId: domain XML}."""
        entries = await self.api.gather("definition", request.args["vmList"] or None)
        return {entry["vmId"]: entry["xml"] for entry in entries}


def vm_verbs(api: VmApi) -> list[Verb]:
    """Return the VM verbs and the Host verbs that list VMs."""
    h = VmHandlers(api)
    vm_list_param = Param(name="vmList", kind=Kind.ARRAY, doc="only these VM ids", default=[])
    return [
        Verb(
            namespace="VM",
            name="create",
            doc="Create and start a VM from its domain XML.",
            params=(
                Param(name="vmParams", kind=Kind.OBJECT, doc="{xml: domain XML}"),
                Param(name="vmID", kind=Kind.STR, doc="the VM id (from <uuid>)", default=""),
            ),
            handler=h.create,
            returns="{vmId, status, statusTime, xml}",
            errors=(VmExists, VmCreateError),
            timeout=60.0,
        ),
        Verb(
            namespace="VM",
            name="destroy",
            doc="Kill the VM and forget it.",
            params=(VM_ID, Param(name="gracefulAttempts", kind=Kind.INT, doc="ignored", default=1)),
            handler=h.destroy,
            errors=(NoSuchVm,),
            timeout=60.0,
        ),
        Verb(
            namespace="VM",
            name="shutdown",
            doc="Shut the guest down (ACPI), forced after timeout.",
            params=(
                VM_ID,
                Param(name="delay", kind=Kind.NUMBER, doc="ignored", default=0),
                Param(name="message", kind=Kind.STR, doc="ignored", default=""),
                Param(name="reboot", kind=Kind.BOOL, doc="reboot instead", default=False),
                Param(name="timeout", kind=Kind.NUMBER, doc="seconds before forcing", default=120),
                Param(name="force", kind=Kind.BOOL, doc="ignored", default=False),
            ),
            handler=h.shutdown,
            returns="string",
            errors=(NoSuchVm,),
            timeout=api.operation_timeout,
        ),
        Verb(
            namespace="VM",
            name="pause",
            doc="Pause the VM.",
            params=(VM_ID,),
            handler=h.pause,
            returns="{vmList: {}}",
            errors=(NoSuchVm,),
            timeout=api.operation_timeout,
        ),
        Verb(
            namespace="VM",
            name="cont",
            doc="Resume a paused VM.",
            params=(VM_ID,),
            handler=h.cont,
            returns="{vmList: {}}",
            errors=(NoSuchVm,),
            timeout=api.operation_timeout,
        ),
        Verb(
            namespace="VM",
            name="reset",
            doc="Reset the VM.",
            params=(VM_ID,),
            handler=h.reset,
            errors=(NoSuchVm,),
            timeout=api.operation_timeout,
        ),
        *[
            Verb(
                namespace="VM",
                name=name,
                doc=f"{name}: not supported on this host yet (code 75).",
                params=(VM_ID, Param(name="params", kind=Kind.OBJECT, doc="ignored", default={})),
                handler=h.unsupported(name),
                errors=(NoSuchVm, UnsupportedOperation),
            )
            for name in ("migrate", "snapshot")
        ],
        *[
            Verb(
                namespace="VM",
                name=name,
                doc=f"{name}: not supported on this host yet (code 75).",
                params=(Param(name="params", kind=Kind.OBJECT, doc="{vmId, xml}"),),
                handler=h.unsupported(name, vm_in_params=True),
                errors=(NoSuchVm, UnsupportedOperation),
            )
            for name in ("hotplugDisk", "hotunplugDisk", "hotplugNic", "hotunplugNic")
        ],
        Verb(
            namespace="VM",
            name="getStats",
            doc="The VM's statistics.",
            params=(VM_ID,),
            handler=h.get_stats,
            returns="[VmStats]",
            errors=(NoSuchVm,),
        ),
        Verb(
            namespace="VM",
            name="getInfo",
            doc="The VM's status.",
            params=(VM_ID,),
            handler=h.get_info,
            returns="VmInfo",
            errors=(NoSuchVm,),
        ),
        Verb(
            namespace="Host",
            name="getVMList",
            doc="The VMs on this host.",
            params=(
                vm_list_param,
                Param(name="onlyUUID", kind=Kind.BOOL, doc="ids only", default=True),
            ),
            handler=h.vm_list,
            returns="[UUID] | [{vmId, status}]",
        ),
        Verb(
            namespace="Host",
            name="getVMFullList",
            doc="Every VM's definition and status.",
            params=(vm_list_param,),
            handler=h.full_list,
            returns="[VmDefinition]",
        ),
        Verb(
            namespace="Host",
            name="getAllVmStats",
            doc="Statistics of every VM.",
            handler=h.all_stats,
            returns="[VmStats]",
        ),
        Verb(
            namespace="Host",
            name="dumpxmls",
            doc="The domain XML of each VM.",
            params=(vm_list_param,),
            handler=h.dumpxmls,
            returns="{vmId: xml}",
        ),
    ]
