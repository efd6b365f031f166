"""The `admin` branch: host administration — the memory policy, host devices, fencing.

admin (one_for_one)
├── memory    MOM's default policy: balloons and KSM; setMOMPolicyParameters, setKsmTune
├── devices   hostdevListByCaps, hostdevChangeNumvfs, getLldp (libvirt node devices, sysfs)
└── fencer    fenceNode: one fence agent process per call

The three are independent (one_for_one) and hold nothing a restart would lose:
the memory policy's parameters are sent again by the Engine on every host
activation (as VDSM's MOM forgets them too), and the others read libvirt and the
kernel on every call. Not a resource branch: it has no recoverer and the API's
gate does not wait for it.

Balloon targets go to `set_balloon`: the host's tree passes `tell_balloon`, which
tells the VM's actor (`vms/guests/<vmId>`) a `SetBalloonTarget` and drops the target
of a VM that has no running actor; the default only logs them. The policy drives
the machine's KSM only for an agent on the system's libvirt (`qemu:///system`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import pykka

from hostvisor.actors.admin.addresses import ADMIN, DEVICES_ID, FENCER_ID, MEMORY, MEMORY_ID
from hostvisor.actors.admin.devices import DevicesActor
from hostvisor.actors.admin.fencer import FenceActor
from hostvisor.actors.admin.memory import MemoryActor, SetBalloon
from hostvisor.actors.admin.memread import GuestReader
from hostvisor.actors.admin.proxy import MemoryProxy
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.vm.actor import SetBalloonTarget
from hostvisor.actors.vm.addresses import vm_path
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.spec import ChildSpec, SupervisorFlags

log = logging.getLogger(__name__)


def build(ctx: TreeContext, *, set_balloon: SetBalloon | None = None) -> ChildSpec:
    """The branch; the memory policy reads guests through the host's libvirt connection."""
    balloon = {} if set_balloon is None else {"set_balloon": set_balloon}
    # KSM is the machine's: only the agent of the system's libvirt drives it (as VDSM's
    # MOM); embedded, test-driver and private-daemon hosts (tests, development) decide only
    drive_ksm = ctx.config.libvirt_uri.startswith("qemu:///system")
    memory = ChildSpec(
        id=MEMORY_ID,
        start=lambda link: MemoryActor.spawn(
            link, read_guests=GuestReader(ctx.connection), drive_ksm=drive_ksm, **balloon
        ),
    )
    devices = ChildSpec(
        id=DEVICES_ID, start=lambda link: DevicesActor.spawn(link, connection=ctx.connection)
    )
    fencer = ChildSpec(id=FENCER_ID, start=FenceActor.spawn)
    return ctx.branch(ADMIN, SupervisorFlags(), [memory, devices, fencer])


def tell_balloon(ctx: TreeContext) -> SetBalloon:
    """Return the memory policy's `set_balloon`: a tell to the VM's actor, never a wait.

    Called on the memory actor's turn. A VM with no running actor (gone, or being
    restarted) loses this round's target: the next round decides again.
    """
    registry = ctx.registry

    def tell(vm_id: str, target_kib: int) -> None:
        ref = registry.get(vm_path(vm_id))
        if ref is None:
            log.debug("balloon target of %s dropped: no VM actor", vm_id)
            return
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(SetBalloonTarget(target_kib))

    return tell


MOM_STATUS_TIMEOUT = 1.0


def mom_status(ctx: TreeContext) -> Callable[[], str]:
    """Return getStats' `momStatus` reader: "active" while the memory policy answers.

    The reader blocks up to `MOM_STATUS_TIMEOUT` (an ask): call it on a worker, as
    the host actor reads its other per-ask fields. "inactive" when the actor is
    not running or does not answer in time, as VDSM says when MOM is unreachable.
    """

    def read() -> str:
        ref = ctx.registry.get(MEMORY)
        if ref is None:
            return "inactive"
        try:
            return MemoryProxy(ref).status().get(timeout=MOM_STATUS_TIMEOUT)
        except (HostvisorError, pykka.ActorDeadError, pykka.Timeout):
            return "inactive"

    return read
