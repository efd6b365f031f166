"""What a libvirt lifecycle event or domain state means for a VM's status (pure)."""

from __future__ import annotations

import libvirt

from hostvisor.actors.guest.status import Exit, ExitReason, PauseCode, VmStatus

__all__ = ["Exit", "pause_code", "status_of_state", "stopped_exit"]


_PAUSE_CODES = {
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR: PauseCode.EIO,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY: PauseCode.POSTCOPY,
}


def status_of_state(state: int) -> VmStatus:
    """Map `virDomain.state()[0]` to the status a recovered VM has."""
    if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return VmStatus.PAUSED
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return VmStatus.POWERING_DOWN
    if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
        return VmStatus.DOWN
    return VmStatus.UP


def pause_code(detail: int) -> PauseCode:
    """The pauseCode of a SUSPENDED event's detail."""
    return _PAUSE_CODES.get(detail, PauseCode.NOERR)


def stopped_exit(detail: int, *, shutdown_requested: bool, host_signalled: bool = False) -> Exit:
    """How a VM that libvirt reported STOPPED with `detail` went Down.

    As VDSM (`Vm._onQemuDeath`): a stop nobody asked for is an ERROR with
    LOST_QEMU_CONNECTION, whether QEMU died (detail FAILED, e.g. SIGKILL) or was
    destroyed behind our back (DESTROYED). A guest shutdown is the user's, unless
    libvirt said the host signalled QEMU (a SHUTDOWN event with detail HOST, e.g.
    SIGTERM): then it is HOST_SHUTDOWN, an ERROR too.
    """
    if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
        if shutdown_requested:
            return Exit.of(ExitReason.ADMIN_SHUTDOWN)
        return Exit.of(ExitReason.HOST_SHUTDOWN if host_signalled else ExitReason.USER_SHUTDOWN)
    if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED and shutdown_requested:
        return Exit.of(ExitReason.ADMIN_SHUTDOWN)
    if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
        return Exit.of(ExitReason.MIGRATION_SUCCEEDED, "Migration succeeded")
    if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED:
        return Exit.of(ExitReason.SAVE_STATE_SUCCEEDED, "SaveState succeeded")
    return Exit.of(ExitReason.LOST_QEMU_CONNECTION)
