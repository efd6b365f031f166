"""VM recovery: every running domain Hostvisor launched becomes a VmActor again.

libvirt is the source of truth: the domain list and each domain's XML metadata
hold everything a VmActor needs. No guest is touched. The `vms` branch's recoverer
runs this whenever the branch starts (see `hostvisor.actors.recovery`).

Nothing here talks to a guest's QEMU: listing domains, reading their XML and their
state take no domain job, so a frozen QEMU does not hold recovery up (checked with a
SIGSTOPped guest under qemu:///embed). One VM whose actor fails to start is logged and
left out; it never keeps the host from opening.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import libvirt

from hostvisor.actors.errors import AlreadyExists, HostvisorError, InvalidArgument
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.domxml import DomainSpec
from hostvisor.actors.vm.migrating import make_transient

log = logging.getLogger(__name__)

Found = tuple[DomainSpec, int]
"""A running domain: its spec and its state (`virDomain.state()[0]`), read together."""

StartChildren = Callable[[Sequence[Found]], Sequence[str | HostvisorError]]
"""Starts a recovering VmActor per domain (all at once); an answer per domain."""


def managed_domains(connection: Any) -> list[Found]:
    """Every running domain with oVirt metadata that libvirt runs, and its state (blocks).

    The state is read here, with the XML, so that a recovering VmActor needs no libvirt
    call (nor an ask for the connection) of its own: 5,000 actors doing that at once
    cost more than everything else recovery does. Container VMs are left out: their
    truth is docker (`actors/container/recovery`).
    """
    specs = []
    persistent = {
        domain.UUIDString()
        for domain in connection.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE | libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
        )
    }
    for domain in connection.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            spec = domxml.parse(domain.XMLDesc(0))
            state: int = domain.state()[0]
        except (InvalidArgument, libvirt.libvirtError) as error:
            log.warning("domain %s not recovered: %s", domain.name(), error)
            continue
        if not spec.managed:
            log.debug("domain %s has no oVirt metadata; left alone", spec.name)
            continue
        if spec.container_type:
            continue
        if spec.vm_id in persistent:
            _drop_definition(domain)
        specs.append((spec, state))
    return specs


def _drop_definition(domain: Any) -> None:
    """Make a running domain transient, as every VM this agent runs (blocks briefly).

    Only a live migration's destination gets a definition (VIR_MIGRATE_PERSIST_DEST),
    which its VM drops once the guest has arrived; an agent killed before then leaves
    it, and the Engine's destroy would leave a shut-off domain behind.
    """
    try:
        make_transient(domain)
    except libvirt.libvirtError as error:
        log.warning("domain %s: its definition could not be dropped: %s", domain.name(), error)


def recover_vms(*, connection: Any, start: StartChildren) -> int:
    """Start a VmActor for every managed running domain; return how many were adopted.

    Blocks. A VM that already has an actor answers AlreadyExists and is not counted.
    """
    found = managed_domains(connection)
    answers = start(found)  # all at once: their on_starts run in parallel
    adopted = 0
    for (spec, _state), answer in zip(found, answers, strict=True):
        if isinstance(answer, AlreadyExists):
            continue
        if isinstance(answer, HostvisorError):
            log.error("VM %s not recovered: %s", spec.vm_id, answer)
            continue
        adopted += 1
    return adopted
