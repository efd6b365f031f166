"""The errors of hook scripts, with VDSM's two codes.

HookError   code 1500 "Hook Error"   a script of a vetoing point failed (VDSM's
│                                    exception.HookError): what `Hooks.run` raises,
│                                    and what a verb answers unless it says otherwise
└── HookFailed  code 78 "Hook error" VDSM's `hookError` response, which setupNetworks
                                     and VM.migrationCreate answer for a failed hook
"""

from __future__ import annotations

from hostvisor.actors.errors import HostvisorError

__all__ = ["HookError", "HookFailed"]


class HookError(HostvisorError):
    """A script of a vetoing hook point failed: the operation it guards does not happen.

    Context: `hook` (the point), `script` (its file name), `rc` (None: killed at the
    timeout), `err` (its stderr). A VM whose before_vm_start hook fails goes Down with
    this error as its exit message; other verbs answer its code, as VDSM's do.
    """

    code = 1500
    message = "Hook Error"


class HookFailed(HookError):
    """VDSM's `hookError` answer (code 78): setupNetworks' and migrationCreate's for a hook."""

    code = 78
    message = "Hook error"

    @classmethod
    def of(cls, error: HookError) -> HookFailed:
        """The answer for `error`, with its context."""
        return error if isinstance(error, HookFailed) else cls(**error.context)
