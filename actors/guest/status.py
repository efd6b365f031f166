"""Guest statuses and exits exactly as VDSM reports them (reference/vdsm-wire.md §4).

The same for a libvirt domain and a docker container: both are VMs on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class VmStatus(enum.StrEnum):
    """The status strings on the wire."""

    WAIT_FOR_LAUNCH = "WaitForLaunch"
    POWERING_UP = "Powering up"
    UP = "Up"
    POWERING_DOWN = "Powering down"
    REBOOT_IN_PROGRESS = "RebootInProgress"
    PAUSED = "Paused"
    MIGRATION_SOURCE = "Migration Source"
    MIGRATION_DESTINATION = "Migration Destination"
    SAVING_STATE = "Saving State"
    RESTORING_STATE = "Restoring state"
    DOWN = "Down"


class ExitCode(enum.IntEnum):
    """`exitCode` of a Down VM."""

    NORMAL = 0
    ERROR = 1


class ExitReason(enum.IntEnum):
    """`exitReason` of a Down VM: an int on the wire."""

    SUCCESS = 0
    GENERIC_ERROR = 1
    LOST_QEMU_CONNECTION = 2
    LIBVIRT_START_FAILED = 3
    MIGRATION_SUCCEEDED = 4
    SAVE_STATE_SUCCEEDED = 5
    ADMIN_SHUTDOWN = 6
    USER_SHUTDOWN = 7
    MIGRATION_FAILED = 8
    LIBVIRT_DOMAIN_MISSING = 9
    DESTROYED_ON_STARTUP = 10
    HOST_SHUTDOWN = 11
    POSTCOPY_MIGRATION_FAILED = 12
    DESTROYED_ON_REBOOT = 13
    DESTROYED_ON_PAUSE_TIMEOUT = 14


EXIT_MESSAGES = {
    ExitReason.SUCCESS: "Down as a part of the reboot process",
    ExitReason.GENERIC_ERROR: "VM terminated with error",
    ExitReason.LOST_QEMU_CONNECTION: "Lost connection with qemu process",
    ExitReason.LIBVIRT_START_FAILED: "Failed to start VM",
    ExitReason.ADMIN_SHUTDOWN: "Admin shut down from the engine",
    ExitReason.USER_SHUTDOWN: "User shut down from within the guest",
    ExitReason.LIBVIRT_DOMAIN_MISSING: "Failed to find the libvirt domain",
    ExitReason.HOST_SHUTDOWN: "VM has been terminated on the host",
    ExitReason.DESTROYED_ON_REBOOT: "Destroyed on reboot",
}
"""`exitMessage` for the reasons Hostvisor produces."""


class PauseCode(enum.StrEnum):
    """`pauseCode`: why a VM is paused."""

    NOERR = "NOERR"
    EIO = "EIO"
    ENOSPC = "ENOSPC"
    EPERM = "EPERM"
    EOTHER = "EOTHER"
    POSTCOPY = "POSTCOPY"


@dataclass(frozen=True, slots=True)
class Exit:
    """How a guest went Down: `exitCode`, `exitReason` and `exitMessage` on the wire."""

    code: ExitCode
    reason: ExitReason
    message: str

    @classmethod
    def of(cls, reason: ExitReason, message: str | None = None) -> Exit:
        """Build the exit for `reason`, with VDSM's message unless one is given."""
        code = ExitCode.NORMAL if reason in _NORMAL else ExitCode.ERROR
        return cls(code, reason, message or EXIT_MESSAGES.get(reason, reason.name))


_NORMAL = frozenset(
    {
        ExitReason.SUCCESS,
        ExitReason.ADMIN_SHUTDOWN,
        ExitReason.USER_SHUTDOWN,
        ExitReason.MIGRATION_SUCCEEDED,
        ExitReason.SAVE_STATE_SUCCEEDED,
    }
)
