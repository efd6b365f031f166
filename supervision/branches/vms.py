"""The `vms` branch: a VmActor per VM, and the recoverer that re-adopts them.

    vms (rest_for_one)
    ├── guests (one_for_one, dynamic)   vms/guests/<vmId>: one VmActor per VM
    └── recoverer                       every running domain with oVirt metadata

One VM's actor that crash-loops is given up by `guests` (its own budget, see
`hostvisor.supervision.supervisor`) and started again after a backoff; its guest
keeps running and stays listed. If `guests` itself escalates (a burst across many
VMs), the branch restarts it (empty) and then the recoverer, which starts a VmActor
for every running domain again: no guest is lost or touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka

from hostvisor.actors.container.addresses import CONTAINER_GUESTS
from hostvisor.actors.errors import NotFound
from hostvisor.actors.guest.board import Forget, Post, PostMany, Settle
from hostvisor.actors.guest.entry import VmEntry
from hostvisor.actors.hooks import Hooks
from hostvisor.actors.hypervisor.events import DomainEvent
from hostvisor.actors.storage.merging import VolumeChains
from hostvisor.actors.storage.proxy import StorageClient
from hostvisor.actors.vm.actor import VmActor, VmServices
from hostvisor.actors.vm.addresses import GUESTS_ID, VM_BOARD, VM_GUESTS, VMS, vm_path
from hostvisor.actors.vm.domxml import DomainSpec
from hostvisor.actors.vm.migrating import MigrationSlots
from hostvisor.actors.vm.migrator import MigrationSettings
from hostvisor.actors.vm.recovery import recover_vms
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.spec import (
    RESOURCE_CHILD_BUDGET,
    ChildSpec,
    Restart,
    Strategy,
    SupervisorFlags,
)

GUEST_FLAGS = SupervisorFlags(
    strategy=Strategy.ONE_FOR_ONE, intensity=20, period=10.0, per_child=RESOURCE_CHILD_BUDGET
)
"""A guest supervisor's: one crash-looping guest's actor is given up (and retried after
a backoff) by its own budget, long before it could spend this one; 20 restarts in 10 s
are a burst across several guests at once — a common cause — and escalate: the branch
restarts and re-adopts every guest."""
BRANCH_FLAGS = SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=5, period=30.0)
"""The branch's: its guest supervisor escalating, or its recoverer crashing (libvirt
unreachable), 5 times in 30 s; beyond that the root restarts the branch."""


class VmsBranch:
    """Builds the `vms` branch and the child spec of each VM's actor."""

    def __init__(self, ctx: TreeContext) -> None:
        """Describe the branch of `ctx`; nothing starts here."""
        self.ctx = ctx
        config = ctx.config
        self.migration_slots = MigrationSlots(
            outgoing=config.max_outgoing_migrations, incoming=config.max_incoming_migrations
        )
        self.services = VmServices(
            connection=ctx.connection,
            publish=ctx.publish,
            board=self.tell_board,
            migration=MigrationSettings(
                peers=ctx.peers,
                slots=self.migration_slots,
                libvirt_tls=config.migration_over_tls,
                allow_unsafe=config.migration_allow_unsafe,
                monitor_interval=config.migration_monitor_interval,
                incoming_timeout=config.migration_destination_timeout,
            ),
            hooks=Hooks(directory=config.hooks_dir, timeout=config.hook_timeout),
            chains=VolumeChains(StorageClient(ctx.registry.get)),
        )

    def tell_board(self, message: Post | PostMany | Forget | Settle) -> None:
        """Tell the VM board a VM's entry (or to forget it); dropped if the board is down."""
        self.ctx.tell(VM_BOARD, message)

    def deliver(self, event: DomainEvent) -> None:
        """Tell a domain's event to the VM that owns the domain (libvirt's thread)."""
        self.ctx.tell(vm_path(event.vm_id), event)

    def refs(self) -> dict[str, pykka.ActorRef[Any]]:
        """Return the live VmActors by VM id."""
        return self.ctx.children(VM_GUESTS)

    def child(
        self,
        spec: DomainSpec,
        *,
        recover: bool = False,
        incoming: bool = False,
        state: int | None = None,
        first_post: Callable[[VmEntry], None] | None = None,
    ) -> ChildSpec:
        """Return the child spec of one VM's actor.

        Transient: a VmActor that exits normally (destroyed) is not restarted; one
        that crashes is, and re-reads libvirt with `recover=True`. `state` is the
        domain's state as recovery read it: the first incarnation adopts with it,
        and hands its first entry to `first_post` instead of the board. `incoming`:
        the first incarnation waits for its guest to arrive by live migration (a
        restarted one adopts whatever libvirt has).
        """
        config = self.ctx.config
        services = self.services

        def start(link: Any) -> pykka.ActorRef[Any]:
            return VmActor.spawn(
                link,
                spec=spec,
                services=services,
                recover=recover or link.incarnation > 1,
                incoming=incoming and link.incarnation == 1,
                state=state if link.incarnation == 1 else None,
                first_post=first_post if link.incarnation == 1 else None,
                powering_up=config.vm_powering_up_seconds,
                operation_timeout=config.vm_operation_timeout,
            )

        return ChildSpec(id=spec.vm_id, start=start, restart=Restart.TRANSIENT)

    def recover(self) -> int:
        """Start a VmActor for every managed running domain without one (blocks).

        The adopted VMs' first entries reach the board in one `PostMany`, told before
        the branch reports (so before the gate opens), not in one wake-up each.
        """
        guests = self.ctx.supervisor(VM_GUESTS)
        entries: list[VmEntry] = []  # appended by each VmActor's on_start (its thread)
        adopted = recover_vms(
            connection=self.ctx.connection(),
            start=lambda found: guests.start_children(
                [
                    self.child(spec, recover=True, state=state, first_post=entries.append)
                    for spec, state in found
                ]
            ),
        )
        if entries:
            self.tell_board(PostMany(tuple(entries)))
        self.tell_board(Settle(self.held()))
        return adopted

    def held(self) -> frozenset[str]:
        """Every VM id a guest supervisor holds now, running or not (no blocking).

        After a recovery, a VM the board keeps as an orphan but no supervisor holds
        was not found in libvirt: it is gone. Container VMs are kept by theirs; one
        whose branch is restarting at this very moment drops off the listings until
        its recoverer posts it again (milliseconds).
        """
        held: set[str] = set()
        for guests in (VM_GUESTS, CONTAINER_GUESTS):
            try:
                children = self.ctx.registry.status(guests).children
            except NotFound:
                continue
            held.update(path.rsplit("/", 1)[-1] for path in children)
        return frozenset(held)

    def build(self) -> ChildSpec:
        """The branch: the VmActor supervisor, then its recoverer."""
        guests = self.ctx.branch(GUESTS_ID, GUEST_FLAGS)
        return self.ctx.branch(
            VMS, BRANCH_FLAGS, [guests, self.ctx.recoverer(VMS, self.recover, what="VMs")]
        )
