"""The one error tree of Hostvisor.

Every error a caller can see is a `HostvisorError`. Each class carries the numeric
code and the message of the VDSM error it stands for (reference/vdsm-wire.md §2); the
message is built from the error's structured fields, never pasted together at the
raise site. Only the API edge turns these into JSON-RPC errors.

    HostvisorError                    code 100 "General Exception"
    ├── CallerError                   the caller asked for something wrong
    │   ├── NotFound                  code 1 by default; subclasses per resource
    │   ├── AlreadyExists             code 4 by default
    │   ├── InvalidArgument           code 91 "Invalid parameter"
    │   └── Conflict                  code 40 "Resource unavailable"
    ├── Unavailable                   code 40; the resource cannot answer now
    │   ├── Recovering                code 99; the host is starting or recovering
    │   └── Timeout                   an ask that passed its deadline
    └── InternalError                 code 100; an agent bug, never the caller's fault
        ├── ActorCrashed              an actor died while handling the call
        └── StartFailed               an actor's on_start crashed or hung

Caller errors are expected: an actor returns them to the caller and carries on.
Anything that is not a `HostvisorError` is a bug: the actor that raised it crashes
and its supervisor restarts it (`hostvisor.actors.actor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class HostvisorError(Exception):
    """Root of every error Hostvisor reports.

    Attributes:
        code: the VDSM numeric error code sent on the wire.
        message: VDSM's message for that code.
        context: structured fields rendered after the message, as VDSM does.
    """

    code: ClassVar[int] = 100
    message: ClassVar[str] = "General Exception"

    def __init__(self, **context: Any) -> None:
        """Build the error from its structured fields."""
        self.context: Mapping[str, Any] = context
        super().__init__(self.render())

    def render(self) -> str:
        """Return the wire message: VDSM's text, then the context if any."""
        if not self.context:
            return self.message
        return f"{self.message}: {dict(self.context)!r}"


class CallerError(HostvisorError):
    """The caller asked for something that cannot be done as asked."""


class NotFound(CallerError):
    """The named resource does not exist."""

    code = 1
    message = "Resource does not exist"


class AlreadyExists(CallerError):
    """A resource with that identity already exists."""

    code = 4
    message = "Resource already exists"


class InvalidArgument(CallerError):
    """A parameter is missing, of the wrong type or out of range."""

    code = 91
    message = "Invalid parameter"


class Conflict(CallerError):
    """The resource is busy with something that excludes this request."""

    code = 40
    message = "Resource unavailable"


class Unavailable(HostvisorError):
    """The resource or the actor that owns it cannot answer now."""

    code = 40
    message = "Resource unavailable"


class Recovering(Unavailable):
    """The host is initializing or recovering; the API is gated."""

    code = 99
    message = "Recovering from crash or Initializing"


class Timeout(Unavailable):
    """An ask did not get its answer before its deadline."""

    message = "Operation timed out"


class InternalError(HostvisorError):
    """A bug in the agent: never the caller's fault, never carries a traceback out."""


class ActorCrashed(InternalError):
    """The actor handling the call died of an unexpected exception."""

    message = "Actor crashed while handling the request"


class StartFailed(InternalError):
    """An actor could not be started: its `on_start` crashed or did not finish in time."""

    message = "Actor failed to start"
