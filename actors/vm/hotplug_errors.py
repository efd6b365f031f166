"""The errors of the hotplug verbs, with VDSM's codes (lib/vdsm/common/exception.py).

Each is what VDSM's `vm.py` answers for the same failure: a libvirt refusal of a
plug is the verb's own code (45, 46, 49, 50, 60, 70, 85, 86, 87); a bad size 58; a CD that
cannot be changed 41; a CD image that cannot be prepared 1630.
"""

from __future__ import annotations

from hostvisor.actors.errors import CallerError, HostvisorError


class HotplugDiskFailed(HostvisorError):
    """libvirt refused to attach the disk (VDSM's hotplugDisk)."""

    code = 45
    message = "Failed to hotplug disk"


class HotunplugDiskFailed(HostvisorError):
    """The disk was not detached, or the guest did not release it in time."""

    code = 46
    message = "Failed to hotunplug disk"


class HotplugNicFailed(HostvisorError):
    """libvirt refused to attach the NIC (VDSM's hotplugNic)."""

    code = 49
    message = "Failed to hotplug NIC"


class HotunplugNicFailed(HostvisorError):
    """The NIC was not detached, or the guest did not release it in time."""

    code = 50
    message = "Failed to hotunplug NIC"


class BadDiskResizeParameter(CallerError):
    """The new size is not a number, or smaller than the disk (VDSM's `resizeErr`)."""

    code = 58
    message = "Wrong resize disk parameter"


class SetNumberOfCpusFailed(HostvisorError):
    """libvirt refused the vCPU count (VDSM's `setNumberOfCpusErr`)."""

    code = 60
    message = "Failed to set the number of cpus"


class HotplugMemFailed(HostvisorError):
    """libvirt refused the memory device (VDSM's `hotplugMem`)."""

    code = 70
    message = "Failed to hotplug memory"


class HotunplugMemFailed(HostvisorError):
    """libvirt refused to detach the memory device."""

    code = 85
    message = "Failed to hotunplug memory"


class ChangeDiskFailed(HostvisorError):
    """libvirt did not change the CD (VDSM's `changeDisk`)."""

    code = 41
    message = "Failed to change disk image"


class ImageFileNotFound(CallerError):
    """The VM has no such drive (VDSM's `imageErr`)."""

    code = 13
    message = "Drive image file could not be found"


class CannotPrepareImage(HostvisorError):
    """The CD's volume could not be prepared."""

    code = 1630
    message = "Failed to prepare image"


class HotplugLeaseFailed(HostvisorError):
    """The lease could not be attached: not found, held elsewhere, or refused by libvirt."""

    code = 86
    message = "Failed to hotplug lease"


class HotunplugLeaseFailed(HostvisorError):
    """The VM has no such lease, or libvirt did not detach it (in time)."""

    code = 87
    message = "Failed to hotunplug lease"


class CannotPrepareLease(HostvisorError):
    """The lease to plug was not found on this host (Lease.info failed).

    VDSM's `vmdevices.lease.CannotPrepare` is no VdsmException: its API answers it as
    a general exception (100), the message naming the lease and the storage error.
    """

    code = 100
    message = "General Exception: Error preparing lease device"
