"""The `hosts` branch: the host's own actor, the bulk samplers and the VM board.

hosts (one_for_one)
├── host             facts, capabilities, statistics (HostActor; momStatus: admin's memory)
├── vmstats          the bulk VM stats sampler (one getAllDomainStats per interval)
├── vmboard          every VM's last entry, for listings
└── containerstats   the container stats sampler
"""

from __future__ import annotations

from hostvisor.actors.container.sampler import ContainerStatsSampler
from hostvisor.actors.guest.board import VmBoard
from hostvisor.actors.host.actor import HostActor
from hostvisor.actors.host.addresses import HOST_ID, HOSTS
from hostvisor.actors.vm.sampler import VmStatsSampler
from hostvisor.supervision.branches import admin
from hostvisor.supervision.branches.containers import ContainersBranch
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.branches.networks import NetworksBranch
from hostvisor.supervision.branches.vms import VmsBranch
from hostvisor.supervision.spec import ChildSpec, SupervisorFlags


def build(
    ctx: TreeContext,
    *,
    vms: VmsBranch,
    containers: ContainersBranch,
    networks: NetworksBranch,
) -> ChildSpec:
    """The branch; the host actor and samplers reach the VMs, containers and networks."""
    config = ctx.config
    host = ChildSpec(
        id=HOST_ID,
        start=lambda link: HostActor.spawn(
            link,
            state_dir=config.state_dir,
            connection=ctx.connection,
            containers=containers.available,
            sample_interval=config.host_sample_interval,
            vm_counts=lambda: {"vmCount": len(vms.refs()) + len(containers.refs())},
            network=networks.host_network(),
            mom_status=admin.mom_status(ctx),
            hooks=vms.services.hooks.installed,
        ),
    )
    vmstats = ChildSpec(
        id="vmstats",
        start=lambda link: VmStatsSampler.spawn(
            link, connection=ctx.connection, vms=vms.refs, interval=config.vm_sample_interval
        ),
    )
    vmboard = ChildSpec(id="vmboard", start=VmBoard.spawn)
    containerstats = ChildSpec(
        id="containerstats",
        start=lambda link: ContainerStatsSampler.spawn(
            link,
            engine=containers.engine,
            containers=containers.refs,
            interval=config.vm_sample_interval,
        ),
    )
    return ctx.branch(HOSTS, SupervisorFlags(), [host, vmstats, vmboard, containerstats])
