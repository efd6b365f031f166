"""The VM namespace and the Host verbs about VMs (reference/vdsm-wire.md §3.1, §4, §5).

Each handler finds the VM's actor by path (`vms/guests/<vmID>`, or
`containers/guests/<vmID>` for a VM that runs as a docker container: same method
names, see `hostvisor.actors.vm.proxy`), sends it the call and awaits the answer
on the API loop; an operation's answer is itself a future that settles when
libvirt is done, so the handler awaits twice. Listings over every VM ask the VM
board once (each VmActor posts its entry there); only VMs the board has no entry
for are asked directly, all at once and each bounded by a timeout, so one slow
actor never delays the others.

A VM's actor may be down while its guest runs on: being restarted after a crash,
given up for a backoff by its supervisor, or its branch restarting. Then:
- a listing still shows the VM, with its last known status (the guest supervisors
  publish such children, and the board keeps their last entries);
- a verb waits for the actor, at most `RESTART_WAIT` seconds, then answers code 99
  ("Recovering from crash or Initializing"), never code 1 ("no such VM").

Why 99 (checked in ovirt-engine's vdsbroker): `BrokerCommandBase.proceedProxyReturnValue`
turns 99 into a `VDSRecoveringException`; the VM poller (`PollVmStatsRefresher.poll`)
catches it, logs it and skips that round, and a VM command simply fails — nothing
concludes the VM is gone. Code 1 (`noVM`) does: `DestroyVDSCommand` and
`StopVmCommandBase` take it as "already destroyed". And a VM missing from a listing is
worse: `VmAnalyzer.proceedDisappearedVm` clears it as Down ("Could not find VM ...
assuming it went down unexpectedly") and re-runs an HA VM elsewhere while it still runs
here. Code 40 ("Resource unavailable") would fail the command with a generic error
and tell the Engine nothing about why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import pykka

from hostvisor.actors.container.addresses import CONTAINER_GUESTS, CONTAINERS, container_path
from hostvisor.actors.container.proxy import ContainerProxy
from hostvisor.actors.errors import (
    ActorCrashed,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    Recovering,
    Unavailable,
)
from hostvisor.actors.guest.board import Drop
from hostvisor.actors.recovery import RECOVERER_ID, recovering
from hostvisor.actors.storage.leases_xml import fill_leases, leases_to_fill
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.addresses import VM_BOARD, VM_GUESTS, VMS, vm_path
from hostvisor.actors.vm.device_errors import ExternalDataFailed
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk, disk_volumes, with_disk_paths
from hostvisor.actors.vm.errors import (
    BalloonError,
    NoSuchVm,
    UnsupportedOperation,
    VmCreateError,
    VmExists,
)
from hostvisor.actors.vm.external_data import InitialData
from hostvisor.actors.vm.proxy import Operation, Rendering, VmBoardProxy, VmProxy
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.verbs import Verb
from hostvisor.supervision.registry import Registry, child_path
from hostvisor.supervision.spec import ChildSpec
from hostvisor.supervision.supervisor import DeleteChild, StartChild, TerminateChild

log = logging.getLogger(__name__)
T = TypeVar("T")

GATHER_TIMEOUT = 10.0
_RESTORE_PARAMS = frozenset({"memoryDumpVolume", "memoryConfVolume", "hiberVolHandle"})
"""VM.create's params that make it a restore (VDSM's `_getHibernationPaths`)."""
SHUTDOWN_TIMEOUT = 120.0
"""Seconds a graceful shutdown is given (VDSM's sys_shutdown_timeout)."""
RESTART_WAIT = 3.0
"""Seconds a verb waits for a VM's actor that is down (restarting) before answering 99."""
_GUESTS = (
    (VM_GUESTS, child_path(VMS, RECOVERER_ID)),
    (CONTAINER_GUESTS, child_path(CONTAINERS, RECOVERER_ID)),
)
"""Each guest supervisor, and the recoverer that refills it when its branch starts."""
VmId = Annotated[str, Arg("the VM's UUID", wire="vmID")]
VmList = Annotated[list[str], Arg("only these VM ids", wire="vmList", default=[])]
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
    lease_info: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None
    """`lease_info(sd, lease_id)`: where a VM lease is on this host (Lease.info); None:
    VMs with leases are refused."""
    container_child: Callable[..., ChildSpec] | None = None
    """`container_child(spec)` returns the child spec of a ContainerActor (a VM whose
    custom properties say `containerType`); None: such VMs are refused."""

    async def rendered(self, kind: Rendering, vm_id: str) -> dict[str, Any]:
        """Ask the VM's actor for `kind`; if it dies before answering, ask its next one.

        Runs on the API loop. Raises NoSuchVm, or Recovering (see `vm`) — also when the
        actor keeps dying for `RESTART_WAIT` seconds.
        """
        return await self.retried(vm_id, lambda guest: guest.rendered(kind), reads=True)

    async def retried(
        self, vm_id: str, ask: Callable[[VmProxy], pykka.Future[T]], *, reads: bool = False
    ) -> T:
        """Send `ask` to the VM's running actor; again to its next one if it died first.

        An ask the actor never handled (it was dead, or died with the ask queued) is
        safe to send again; with `reads`, so is one it crashed on. Runs on the API
        loop; raises NoSuchVm, Recovering (see `vm`), or the actor's own error.
        """
        deadline = asyncio.get_running_loop().time() + RESTART_WAIT
        while True:
            guest = await self.vm(vm_id)
            try:
                return await settled(ask(guest))
            except (Unavailable, ActorCrashed) as error:
                unhandled = type(error) is Unavailable  # from pykka.ActorDeadError
                if not (unhandled or (reads and isinstance(error, ActorCrashed))):
                    raise
                if asyncio.get_running_loop().time() >= deadline:
                    raise Recovering(vmId=vm_id, reason="the VM's actor keeps restarting") from None

    async def prepared_xml(self, xml: str) -> str:
        """Return `xml` with this host's paths: of its storage disks, and of its VM leases.

        A disk named by storage ids gets its prepared path and format; a `<lease>` whose
        target holds the Engine's placeholders gets its path and offset (Lease.info).
        """
        leases = leases_to_fill(xml)
        if leases:
            if self.lease_info is None:
                raise VmCreateError(reason="this host has no storage to find VM leases on")
            infos = {(sd, lease): await self.lease_info(sd, lease) for sd, lease in leases}
            xml = fill_leases(xml, infos)
        volumes = disk_volumes(xml)
        if not volumes:
            return xml
        if self.prepare_disk is None:
            raise VmCreateError(reason="this host has no storage to prepare disks from")
        prepared = {}
        for volume in volumes:
            prepared[volume.name] = await self.prepare_disk(volume)
        return with_disk_paths(xml, prepared)

    async def vm(self, vm_id: str) -> VmProxy:
        """Return the VM's running actor (a VmActor or a ContainerActor).

        Runs on the API loop. If the VM's actor is down but the VM may exist (its
        supervisor holds it, or its branch is still recovering), waits for it, at most
        `RESTART_WAIT` seconds, without blocking the loop.

        Raises:
            NoSuchVm: no supervisor holds this VM and every branch has recovered.
            Recovering: the VM's actor is still down after the wait (see the module doc).
        """
        guest = self.guest(vm_id)
        if guest is not None:
            return guest
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTART_WAIT
        pause = 0.005
        while guest is None:
            if not self.may_exist(vm_id):
                raise NoSuchVm(vmId=vm_id)
            if loop.time() >= deadline:
                raise Recovering(vmId=vm_id, reason="the VM's actor is restarting; retry")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
            guest = self.guest(vm_id)
        return guest

    def guest(self, vm_id: str) -> VmProxy | None:
        """Return the VM's running actor, a VM or a container; None if there is none."""
        ref = self.registry.get(vm_path(vm_id))
        if ref is not None and ref.is_alive():
            return VmProxy(ref)
        ref = self.registry.get(container_path(vm_id))
        return None if ref is None or not ref.is_alive() else ContainerProxy(ref)

    def may_exist(self, vm_id: str) -> bool:
        """Whether a VM whose actor is not running may exist all the same (no blocking).

        True while a guest supervisor holds it (being restarted, or given up for a
        backoff) and while a guest branch has not re-adopted its guests since it
        (re)started: its supervisor or recoverer is down, or recovery is running.
        """
        for guests, recoverer in _GUESTS:
            try:
                if vm_id in {
                    path.rsplit("/", 1)[-1] for path in self.registry.status(guests).children
                }:
                    return True
                if recovering(self.registry.status(recoverer).messages_handled):
                    return True
            except NotFound:
                return True  # the branch is restarting
        return False

    def supervisor(self, guests: str = VM_GUESTS) -> pykka.ActorRef[Any]:
        """Return the supervisor of VmActors (or the one at `guests`)."""
        return self.registry.lookup(guests)

    def supervisor_of(self, vm_id: str) -> str:
        """Return the path of the supervisor the VM's actor lives under."""
        return VM_GUESTS if self.registry.get(vm_path(vm_id)) is not None else CONTAINER_GUESTS

    def vm_ids(self, wanted: list[str] | None = None) -> list[str]:
        """Return the ids of the VMs the guest supervisors hold (only `wanted` ones).

        Running or not: a VM whose actor is being restarted, or is given up for a
        backoff, is held all the same (its guest runs on).
        """
        ids: list[str] = []
        for guests in (VM_GUESTS, CONTAINER_GUESTS):
            try:
                children = self.registry.status(guests).children
            except NotFound:
                continue
            ids.extend(path.rsplit("/", 1)[-1] for path in children)
        return [vm for vm in ids if not wanted or vm in wanted]

    async def gather(self, kind: Rendering, wanted: list[str] | None = None) -> list[Any]:
        """Return `kind` of every (wanted) VM.

        One ask to the board, which also renders the VMs whose actor is down from
        their last entry (even those no supervisor holds now: their branch is
        restarting); the VMs it has no entry for are asked directly.
        """
        vm_ids = self.vm_ids(wanted)
        board = self.registry.get(VM_BOARD)
        if board is None:
            return await self.ask_each(kind, vm_ids)
        try:
            rendered = await asyncio.wait_for(
                settled(VmBoardProxy(board).render(kind, vm_ids)), GATHER_TIMEOUT
            )
        except (TimeoutError, Unavailable, ActorCrashed):
            log.warning("the VM board did not answer; asking each VM")
            return await self.ask_each(kind, vm_ids)
        answers: list[Any] = rendered.answers
        if wanted:
            answers = [answer for answer in answers if answer["vmId"] in wanted]
        if rendered.missing:
            answers.extend(await self.ask_each(kind, rendered.missing))
        return answers

    async def orphans(self) -> list[str]:
        """The VMs whose actor is down that the board still lists (none if it is down).

        Their branch is restarting, so no supervisor holds them; the board renders
        exactly those when asked for no VM in particular.
        """
        board = self.registry.get(VM_BOARD)
        if board is None:
            return []
        try:
            rendered = await asyncio.wait_for(
                settled(VmBoardProxy(board).render("brief", [])), GATHER_TIMEOUT
            )
        except (TimeoutError, Unavailable, ActorCrashed):
            return []
        return [answer["vmId"] for answer in rendered.answers]

    async def ask_each(self, kind: Rendering, vm_ids: list[str]) -> list[Any]:
        """Ask each VM's actor for `kind`; return the answers that came in time.

        A VM whose actor is down is waited for (`vm`), all of them at once.
        """
        futures = [asyncio.ensure_future(self.rendered(kind, vm_id)) for vm_id in vm_ids]
        if not futures:
            return []
        done, pending = await asyncio.wait(futures, timeout=GATHER_TIMEOUT)
        for future in pending:
            future.cancel()
        if pending:
            log.warning("%d VMs did not answer %s in %s s", len(pending), kind, GATHER_TIMEOUT)
        return [f.result() for f in done if not f.exception()]


def vm_verbs(api: VmApi) -> list[Verb]:
    """Return the VM verbs and the Host verbs that list VMs."""
    return verbs_of(VmHandlers(api))


def _operation_timeout(handlers: VmHandlers) -> float:
    """How long pause, cont, reset and shutdown may take (config.vm_operation_timeout)."""
    return handlers.api.operation_timeout


class VmHandlers:
    """The handlers of the VM verbs, over one `VmApi`. Each runs on the API loop."""

    def __init__(self, api: VmApi) -> None:
        """Serve through `api`."""
        self.api = api

    @verb(
        "VM",
        "create",
        returns="{vmId, status, statusTime, xml}",
        errors=(VmExists, VmCreateError, ExternalDataFailed),
        timeout=60.0,
    )
    async def create(
        self,
        *,
        vm_params: Annotated[dict[str, Any], Arg("{xml: domain XML}", wire="vmParams")],
        _vm_id: Annotated[str, Arg("the VM id (from <uuid>)", wire="vmID")] = "",
    ) -> dict[str, Any]:
        """Create and start a VM from its domain XML.

        Answers before the guest is up; the id is the XML's <uuid>. With memory volumes
        (`memoryDumpVolume` and `memoryConfVolume`, or `hiberVolHandle`) it restores a
        hibernated VM or a memory snapshot instead.
        """
        if _RESTORE_PARAMS & vm_params.keys():
            from hostvisor.api.rpc.snapshot_verbs import restore_vm  # noqa: PLC0415 - it builds on this module

            return await restore_vm(self.api, vm_params)
        xml = vm_params.get("xml")
        if not isinstance(xml, str) or not xml.strip():
            raise VmCreateError(reason=XML_REQUIRED)
        spec = domxml.parse_untrusted(xml)
        if self.api.guest(spec.vm_id) is not None:
            raise VmExists(vmId=spec.vm_id)
        initial = InitialData.of_params(vm_params)  # TPM/NVRAM data: checked before anything
        launched = await self.api.prepared_xml(xml)
        if launched is not xml:
            xml = launched
            spec = domxml.parse(xml)
        guests, child = VM_GUESTS, self.api.vm_child
        if spec.container_type is not None:  # a container VM (reference/vdsm-wire.md §6)
            if self.api.container_child is None:
                raise VmCreateError(vmId=spec.vm_id, reason="this host runs no containers")
            guests, child = CONTAINER_GUESTS, self.api.container_child
        elif initial is not None:
            from hostvisor.api.rpc.snapshot_verbs import restore_external_data  # noqa: PLC0415 - it builds on this module

            await restore_external_data(self.api, xml, initial)
        try:
            await settled(self.api.supervisor(guests).ask(StartChild(child(spec)), block=False))
        except AlreadyExists:
            raise VmExists(vmId=spec.vm_id) from None
        info = await self.api.rendered("info", spec.vm_id)
        return {
            "vmId": spec.vm_id,
            "status": info["status"],
            "statusTime": info["statusTime"],
            "xml": xml,
        }

    async def operate(self, vm_id: str, op: Callable[[VmProxy], pykka.Future[Operation]]) -> None:
        """Run operation `op` on the VM and wait until its runtime has done it."""
        operation = await self.api.retried(vm_id, op)
        await settled(operation)

    @verb("VM", "destroy", errors=(NoSuchVm,), timeout=60.0)
    async def destroy(
        self,
        *,
        vm_id: VmId,
        _graceful_attempts: Annotated[int, Arg("ignored", wire="gracefulAttempts")] = 1,
    ) -> bool:
        """Kill the VM and forget it."""
        await self.operate(vm_id, VmProxy.destroy)
        supervisor = self.api.supervisor(self.api.supervisor_of(vm_id))
        await settled(supervisor.ask(TerminateChild(vm_id), block=False))
        await settled(supervisor.ask(DeleteChild(vm_id), block=False))
        board = self.api.registry.get(VM_BOARD)
        if board is not None:  # its last entry is no orphan: the VM is gone for good
            with contextlib.suppress(pykka.ActorDeadError):
                board.tell(Drop(vm_id))
        return True

    @verb("VM", "shutdown", returns="string", errors=(NoSuchVm,), timeout=_operation_timeout)
    async def shutdown(
        self,
        *,
        vm_id: VmId,
        delay: Annotated[
            str | int | None,
            Arg("seconds the guest's user is given; the Engine sends a string", wire="delay"),
        ] = None,
        _message: Annotated[str, Arg("ignored", wire="message")] = "",
        reboot: Annotated[bool, Arg("reboot instead")] = False,
        grace: Annotated[
            float, Arg("seconds the guest is given before shutdown gives up", wire="timeout")
        ] = SHUTDOWN_TIMEOUT,
        force: Annotated[bool, Arg("power the guest off if it has not shut down")] = False,
    ) -> str:
        """Shut the guest down (ACPI) or reboot it, as the Engine's DestroyVmVDSCommand asks.

        Params as JsonRpcVdsServer.shutdown sends them (`delay` a string, no `timeout`
        or `force`). As VDSM: without `force` a guest that ignores the request keeps
        running (Up again after `timeout`); with it, it is powered off then.
        """
        if delay is not None and not _seconds(delay):
            raise InvalidArgument(param="delay", reason="must be a number of seconds")
        if grace < 0:
            raise InvalidArgument(param="timeout", reason="must not be negative")
        await self.operate(
            vm_id, lambda vm: vm.shutdown(timeout=float(grace), reboot=reboot, force=force)
        )
        return "Machine shutting down"

    @verb("VM", "pause", returns="{vmList: {}}", errors=(NoSuchVm,), timeout=_operation_timeout)
    async def pause(self, *, vm_id: VmId) -> dict[str, Any]:
        """Pause the VM."""
        await self.operate(vm_id, VmProxy.pause)
        return {"vmList": {}}

    @verb("VM", "cont", returns="{vmList: {}}", errors=(NoSuchVm,), timeout=_operation_timeout)
    async def cont(self, *, vm_id: VmId) -> dict[str, Any]:
        """Resume a paused VM."""
        await self.operate(vm_id, VmProxy.cont)
        return {"vmList": {}}

    @verb("VM", "reset", errors=(NoSuchVm,), timeout=_operation_timeout)
    async def reset(self, *, vm_id: VmId) -> bool:
        """Reset the VM."""
        await self.operate(vm_id, VmProxy.reset)
        return True

    @verb(
        "VM",
        "setBalloonTarget",
        returns="Status",
        errors=(NoSuchVm, BalloonError, InvalidArgument, UnsupportedOperation),
        timeout=_operation_timeout,
    )
    async def set_balloon_target(
        self,
        *,
        vm_id: VmId,
        target: Annotated[int, Arg("the guest's memory target, KiB")],
    ) -> dict[str, Any]:
        """Set the guest's balloon target (live); a VM without a balloon does nothing.

        A container VM answers code 75.
        """
        await self.operate(vm_id, lambda vm: vm.set_balloon_target(target))
        return {"code": 0, "message": "Done"}

    # -- answers ------------------------------------------------------------------------------

    @verb("VM", "getStats", returns="[VmStats]", errors=(NoSuchVm,))
    async def get_stats(self, *, vm_id: VmId) -> list[Any]:
        """The VM's statistics."""
        return [await self.api.rendered("stats", vm_id)]

    @verb("VM", "getInfo", returns="VmInfo", errors=(NoSuchVm,))
    async def get_info(self, *, vm_id: VmId) -> dict[str, Any]:
        """The VM's status."""
        return await self.api.rendered("info", vm_id)

    @verb("Host", "getVMList", returns="[UUID] | [{vmId, status}]")
    async def vm_list(
        self,
        *,
        vm_list: VmList,
        only_uuid: Annotated[bool, Arg("ids only", wire="onlyUUID")] = True,
    ) -> list[Any]:
        """The VMs on this host.

        Ids, or `{vmId, status}` with onlyUUID=false.
        """
        if only_uuid:
            ids = self.api.vm_ids(vm_list or None)
            held = set(ids)
            orphans = await self.api.orphans()
            return ids + [vm_id for vm_id in orphans if vm_id not in held and _in(vm_id, vm_list)]
        return await self.api.gather("brief", vm_list or None)

    @verb("Host", "getVMFullList", returns="[VmDefinition]")
    async def full_list(self, *, vm_list: VmList) -> list[Any]:
        """Every VM's definition and status."""
        return await self.api.gather("definition", vm_list or None)

    @verb("Host", "getAllVmStats", returns="[VmStats]")
    async def all_stats(self) -> list[Any]:
        """Statistics of every VM."""
        return await self.api.gather("stats")

    @verb("Host", "dumpxmls", returns="{vmId: xml}")
    async def dumpxmls(self, *, vm_list: VmList) -> dict[str, str]:
        """The domain XML of each VM."""
        entries = await self.api.gather("definition", vm_list or None)
        return {entry["vmId"]: entry["xml"] for entry in entries}


def _in(vm_id: str, wanted: list[str]) -> bool:
    """Whether `vm_id` is wanted (an empty list wants every VM)."""
    return not wanted or vm_id in wanted


def _seconds(value: str | int) -> bool:
    """Whether `value` (a string from the Engine, or a number) is a count of seconds."""
    if isinstance(value, int):
        return value >= 0
    return value.strip().isdigit()
