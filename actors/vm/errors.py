"""VM errors with VDSM's codes (reference/vdsm-wire.md §2)."""

from __future__ import annotations

from hostvisor.actors.errors import AlreadyExists, CallerError, InternalError, NotFound


class NoSuchVm(NotFound):
    """No VM with that id on this host."""

    code = 1
    message = "Virtual machine does not exist"


class VmExists(AlreadyExists):
    """A VM with that id already runs here."""

    code = 4
    message = "Virtual machine already exists"


class VmIsDown(CallerError):
    """The operation needs a running VM."""

    code = 6
    message = "Virtual machine is down"


class VmCreateError(CallerError):
    """VM.create was given something it cannot start."""

    code = 9
    message = "Error creating the requested VM"


class VmOperationFailed(InternalError):
    """libvirt refused or failed an operation on the VM."""

    code = 16
    message = "Unexpected exception"


class UnsupportedOperation(CallerError):
    """The VM's runtime does not support the verb."""

    code = 75
    message = "Operation not supported"
