"""Recovery at start: every running domain Hostvisor launched becomes a VmActor again.

libvirt is the source of truth: the domain list and each domain's XML metadata
hold everything a VmActor needs. No guest is touched. Until this is done the API
answers 99 (the gate stays closed).

Nothing here talks to a guest's QEMU: listing domains, reading their XML and their
state take no domain job, so a frozen QEMU does not hold recovery up (checked with a
SIGSTOPped guest under qemu:///embed). One VM whose actor fails to start is logged and
left out; it never keeps the host from opening.

Container VMs are recovered from docker the same way (`recover_containers`): every
container labelled with a VM id becomes a ContainerActor again, untouched.
"""

from __future__ import annotations

import logging
import time

import libvirt

from hostvisor.actors.errors import AlreadyExists, HostvisorError, InvalidArgument
from hostvisor.actors.vm import domxml
from hostvisor.supervision.supervisor import SupervisorHandle
from hostvisor.supervision.tree import VMS, HostTree

log = logging.getLogger(__name__)


def recover_vms(tree: HostTree) -> int:
    """Start a VmActor for every running domain that carries oVirt metadata.

    Blocks; returns how many VMs were recovered.
    """
    started = time.monotonic()
    conn = tree.connection()
    supervisor = SupervisorHandle(tree.registry.lookup(VMS))
    specs = []
    for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            spec = domxml.parse(domain.XMLDesc(0))
        except (InvalidArgument, libvirt.libvirtError) as error:
            log.warning("domain %s not recovered: %s", domain.name(), error)
            continue
        if not spec.managed:
            log.debug("domain %s has no oVirt metadata; left alone", spec.name)
            continue
        if spec.container_type:
            continue  # a container VM: recover_containers adopts it from docker
        specs.append(spec)
    recovered = 0
    # All at once: each actor reads its domain in its own on_start, in parallel.
    answers = supervisor.start_children([tree.vm_child(spec, recover=True) for spec in specs])
    for spec, answer in zip(specs, answers, strict=True):
        if isinstance(answer, AlreadyExists):
            continue
        if isinstance(answer, HostvisorError):
            log.error("VM %s not recovered: %s", spec.vm_id, answer)
            continue
        recovered += 1
    log.info("recovered %d VMs in %.2f s", recovered, time.monotonic() - started)
    return recovered


def recover_containers(tree: HostTree) -> int:
    """Start a ContainerActor for every container labelled with a VM id; touch none.

    Docker is the source of truth: each container carries its VM id and domain XML
    in labels (`hostvisor.actors.container.spec`). Containers that ended while the
    agent was away are adopted too, and report Down with their exit status until
    VM.destroy removes them. A docker engine that does not answer holds nothing up:
    the docker watcher adopts the containers once it connects.

    Blocks; returns how many containers were adopted.
    """
    started = time.monotonic()
    try:
        adopted = tree.adopt_containers()
    except HostvisorError as error:
        log.warning("containers not recovered now (adopted once docker answers): %s", error)
        return 0
    log.info("recovered %d containers in %.2f s", adopted, time.monotonic() - started)
    return adopted
