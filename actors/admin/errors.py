"""Host administration errors with VDSM's codes (lib/vdsm/common/exception.py)."""

from __future__ import annotations

from hostvisor.actors.errors import CallerError, HostvisorError


class MomPolicyUpdateFailed(CallerError):
    """setMOMPolicyParameters was given something MOM's policy cannot take."""

    code = 54
    message = "Failed to set mom policy"


class KsmUpdateFailed(HostvisorError):
    """setKsmTune was given a bad knob or value, or the kernel refused it."""

    code = 71
    message = "Failed to update KSM values"


class UnsupportedFenceAgent(CallerError):
    """No fence agent of that name is installed (or the name is not one)."""

    code = 43
    message = "Unsupported fencing agent"


class FenceFailed(HostvisorError):
    """The fence agent ran and failed; code and message are the agent's, as VDSM sends them.

    VDSM answers a failed action with the agent's exit status as the error code
    (1 when it is not 0-2) and the agent's output as the message.
    """

    code = 1
    message = "Fence agent failed"

    def __init__(self, code: int, output: str) -> None:
        """Carry the agent's exit status (the wire code) and its output (the message)."""
        self.code = code  # type: ignore[misc]  # this instance's own code (the agent's status)
        self.output = output
        super().__init__()

    def render(self) -> str:
        """The agent's output, as VDSM's message."""
        return self.output or self.message


class HostdevError(CallerError):
    """A host device operation VDSM answers with its general exception (code 100)."""

    code = 100
    message = "General Exception"
