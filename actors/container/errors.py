"""Container errors with VDSM's codes (reference/vdsm-wire.md §2).

A container VM answers the same errors as any VM (`hostvisor.actors.vm.errors`);
these add what only a container runtime can say. Every message names the runtime
(docker) so that an operator reading the Engine's event log knows where to look.
"""

from __future__ import annotations

from hostvisor.actors.errors import InternalError, Unavailable


class DockerUnavailable(Unavailable):
    """The docker engine does not answer on its socket (missing, stopped or hung)."""

    code = 40
    message = "Container runtime unavailable"


class DockerFailed(InternalError):
    """The docker engine refused or failed an operation on a container."""

    code = 16
    message = "Container runtime error"
