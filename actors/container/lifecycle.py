"""What a docker container's state means for its VM's status and exit (pure).

A container VM reports VDSM's statuses (reference/vdsm-wire.md §4): docker's
`running` is Up, `paused` is Paused, `restarting` is RebootInProgress, `exited`
and `dead` are Down, and a container still being created is WaitForLaunch.

How it went Down, as for a KVM guest: a stop that Hostvisor asked for (shutdown,
destroy) is the admin's (exitCode 0); a process that ended with status 0 by itself
is the user's (the guest shut itself down, exitCode 0); any other end is an
error (exitCode 1). The container's own exit status is always in `exitMessage`.
"""

from __future__ import annotations

from hostvisor.actors.container.engine import ContainerState
from hostvisor.actors.guest.status import EXIT_MESSAGES, Exit, ExitCode, ExitReason, VmStatus

_STATUSES = {
    "created": VmStatus.WAIT_FOR_LAUNCH,
    "running": VmStatus.UP,
    "paused": VmStatus.PAUSED,
    "restarting": VmStatus.REBOOT_IN_PROGRESS,
    "removing": VmStatus.DOWN,
    "exited": VmStatus.DOWN,
    "dead": VmStatus.DOWN,
}


def status_of(docker_status: str) -> VmStatus:
    """The VM status of a container in docker's state `docker_status`."""
    return _STATUSES.get(docker_status, VmStatus.WAIT_FOR_LAUNCH)


def exit_of(exit_status: int, *, requested: bool, oom: bool = False, error: str = "") -> Exit:
    """How a VM whose container process ended with `exit_status` went Down.

    Args:
        exit_status: the container process's exit status (137 for SIGKILL…).
        requested: Hostvisor stopped it (shutdown or destroy).
        oom: the kernel killed it for want of memory.
        error: docker's own error text, if any (a failed start).
    """
    detail = f"container exited with status {exit_status}"
    if oom:
        detail += ", killed for want of memory"
    if error:
        detail += f": {error}"
    if requested:
        reason, code = ExitReason.ADMIN_SHUTDOWN, ExitCode.NORMAL
    elif exit_status == 0 and not oom:
        reason, code = ExitReason.USER_SHUTDOWN, ExitCode.NORMAL
    else:
        reason, code = ExitReason.GENERIC_ERROR, ExitCode.ERROR
    return Exit(code, reason, f"{_message(reason)}; {detail}")


def exit_of_state(state: ContainerState, *, requested: bool) -> Exit:
    """How a VM whose container is in the ended `state` went Down."""
    return exit_of(state.exit_code, requested=requested, oom=state.oom_killed, error=state.error)


def gone(requested: bool) -> Exit:  # noqa: FBT001 - a pure mapping of one flag
    """How a VM went Down whose container vanished (removed behind Hostvisor's back)."""
    if requested:
        return Exit.of(ExitReason.ADMIN_SHUTDOWN)
    return Exit(ExitCode.ERROR, ExitReason.LIBVIRT_DOMAIN_MISSING, "the VM's container is gone")


def launch_failed(reason: str) -> Exit:
    """How a VM went Down whose container could not be created or started."""
    return Exit(ExitCode.ERROR, ExitReason.LIBVIRT_START_FAILED, f"Failed to start VM: {reason}")


def _message(reason: ExitReason) -> str:
    return EXIT_MESSAGES.get(reason, reason.name)
