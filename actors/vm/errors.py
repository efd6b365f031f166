"""VM errors with VDSM's codes (reference/vdsm-wire.md §2)."""

from __future__ import annotations

from hostvisor.actors.errors import AlreadyExists, CallerError, HostvisorError, NotFound
from hostvisor.actors.guest.errors import UnsupportedOperation, VmIsDown, VmOperationFailed

__all__ = [
    "NoSuchVm",
    "UnsupportedOperation",
    "VmCreateError",
    "VmExists",
    "VmIsDown",
    "VmOperationFailed",
]


class NoSuchVm(NotFound):
    """No VM with that id on this host."""

    code = 1
    message = "Virtual machine does not exist"


class VmExists(AlreadyExists):
    """A VM with that id already runs here."""

    code = 4
    message = "Virtual machine already exists"


class VmCreateError(CallerError):
    """VM.create was given something it cannot start."""

    code = 9
    message = "Error creating the requested VM"


class BalloonError(HostvisorError):
    """libvirt did not set the balloon target, or the VM does not run (VDSM's code 53)."""

    code = 53
    message = "Balloon operation is not available"


class MissingParameter(CallerError):
    """A param the verb needs is absent (VDSM's `MissingParameter`, `MissParam`)."""

    code = 11
    message = "Missing required parameter"


class UpdateDeviceFailed(HostvisorError):
    """No such device, or libvirt refused the update (VDSM's `UpdateDeviceFailed`).

    diskSizeExtend answers it too when the live block resize fails.
    """

    code = 56
    message = "Failed to update device"
