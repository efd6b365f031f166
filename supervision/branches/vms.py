"""The `vms` branch: a VmActor per VM, and the recoverer that re-adopts them.

    vms (rest_for_one)
    ├── guests (one_for_one, dynamic)   vms/guests/<vmId>: one VmActor per VM
    └── recoverer                       every running domain with oVirt metadata

If one VM crash-loops past the `guests` budget, `guests` escalates, the branch
restarts it (empty) and then the recoverer, which starts a VmActor for every
running domain again: no guest is lost or touched.
"""

from __future__ import annotations

from typing import Any

import pykka

from hostvisor.actors.guest.board import Forget, Post
from hostvisor.actors.hypervisor.events import DomainLifecycle
from hostvisor.actors.vm.actor import VmActor, VmServices
from hostvisor.actors.vm.addresses import GUESTS_ID, VM_BOARD, VM_GUESTS, VMS, vm_path
from hostvisor.actors.vm.domxml import DomainSpec
from hostvisor.actors.vm.recovery import recover_vms
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.spec import ChildSpec, Restart, Strategy, SupervisorFlags

GUEST_FLAGS = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=10.0)
"""Per-resource supervisors: one flapping VM must not take all VMs down with it quickly."""
BRANCH_FLAGS = SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=10, period=10.0)


class VmsBranch:
    """Builds the `vms` branch and the child spec of each VM's actor."""

    def __init__(self, ctx: TreeContext) -> None:
        """Describe the branch of `ctx`; nothing starts here."""
        self.ctx = ctx
        self.services = VmServices(
            connection=ctx.connection,
            publish=ctx.publish,
            board=self.tell_board,
        )

    def tell_board(self, message: Post | Forget) -> None:
        """Tell the VM board a VM's entry (or to forget it); dropped if the board is down."""
        self.ctx.tell(VM_BOARD, message)

    def deliver(self, event: DomainLifecycle) -> None:
        """Tell a lifecycle event to the VM that owns the domain (libvirt's thread)."""
        self.ctx.tell(vm_path(event.vm_id), event)

    def refs(self) -> dict[str, pykka.ActorRef[Any]]:
        """Return the live VmActors by VM id."""
        return self.ctx.children(VM_GUESTS)

    def child(self, spec: DomainSpec, *, recover: bool = False) -> ChildSpec:
        """Return the child spec of one VM's actor.

        Transient: a VmActor that exits normally (destroyed) is not restarted; one
        that crashes is, and re-reads libvirt with `recover=True`.
        """
        config = self.ctx.config
        services = self.services

        def start(link: Any) -> pykka.ActorRef[Any]:
            return VmActor.spawn(
                link,
                spec=spec,
                services=services,
                recover=recover or link.incarnation > 1,
                powering_up=config.vm_powering_up_seconds,
                operation_timeout=config.vm_operation_timeout,
            )

        return ChildSpec(id=spec.vm_id, start=start, restart=Restart.TRANSIENT)

    def recover(self) -> int:
        """Start a VmActor for every managed running domain without one (blocks)."""
        guests = self.ctx.supervisor(VM_GUESTS)
        return recover_vms(
            connection=self.ctx.connection(),
            start=lambda specs: guests.start_children(
                [self.child(spec, recover=True) for spec in specs]
            ),
        )

    def build(self) -> ChildSpec:
        """The branch: the VmActor supervisor, then its recoverer."""
        guests = self.ctx.branch(GUESTS_ID, GUEST_FLAGS)
        return self.ctx.branch(
            VMS, BRANCH_FLAGS, [guests, self.ctx.recoverer(VMS, self.recover, what="VMs")]
        )
