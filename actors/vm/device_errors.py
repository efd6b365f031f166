"""Errors of the device verbs, with VDSM's codes (lib/vdsm/common/exception.py)."""

from __future__ import annotations

from hostvisor.actors.errors import CallerError, HostvisorError


class TicketError(HostvisorError):
    """libvirt did not set the console ticket (VDSM `SpiceTicketError`)."""

    code = 18
    message = "Error while setting spice ticket"


class NotImplementedHere(CallerError):
    """An update VDSM does not implement either (VDSM `MethodNotImplemented`)."""

    code = 44
    message = "Not implemented"


class CpuTuneError(HostvisorError):
    """libvirt refused a CPU quota or period (VDSM `CpuTuneError`)."""

    code = 62
    message = "CpuTune operation is not available"


class UpdateVmPolicyFailed(HostvisorError):
    """The policy could not be applied or stored (VDSM `UpdateVMPolicyFailed`)."""

    code = 63
    message = "Failed to update VM SLA policy"


class UpdateIoTuneError(HostvisorError):
    """No such disk, bad values, or libvirt refused them (VDSM `UpdateIOTuneError`)."""

    code = 64
    message = "Failed to update ioTune values"


class ExternalDataFailed(HostvisorError):
    """Unknown kind, no such device, or its data unreadable (VDSM `ExternalDataFailed`)."""

    code = 89
    message = "Failed to handle external VM data"
