"""Typed calls to a VM actor for its hooks (what VM.migrationCreate awaits).

Beside `actors/vm/proxy.py`'s: each sends the call of the actor's method of the same
name and returns at once with a future of its answer.
"""

from __future__ import annotations

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.vm.proxy import Operation, VmProxy

__all__ = ["incoming_ready"]


def incoming_ready(vm: VmProxy) -> pykka.Future[Operation]:
    """A destination VM's readiness to receive its guest (`Migrator.incoming_ready`).

    Its second future fails with HookFailed (78) when a before_vm_migrate_destination
    hook refused the guest; the VM is then Down (MIGRATION_FAILED).
    """
    return call(vm.ref, "incoming_ready")
