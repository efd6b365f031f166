"""Errors of operations on a guest, whatever runs it (reference/vdsm-wire.md §2)."""

from __future__ import annotations

from hostvisor.actors.errors import CallerError, InternalError


class VmIsDown(CallerError):
    """The operation needs a running VM."""

    code = 6
    message = "Virtual machine is down"


class VmOperationFailed(InternalError):
    """The guest's runtime (libvirt, docker) refused or failed an operation on the VM."""

    code = 16
    message = "Unexpected exception"


class UnsupportedOperation(CallerError):
    """The VM's runtime does not support the verb."""

    code = 75
    message = "Operation not supported"
