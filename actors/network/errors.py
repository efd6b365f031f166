"""Network errors with VDSM's codes (reference/vdsm-wire.md §2, §9).

    HostvisorError
    ├── CallerError
    │   ├── NetworkError              the request is wrong for this host (21-31)
    │   │   ├── BadParams             21 a missing, unknown or out-of-range field
    │   │   ├── BadAddress            22 an address, prefix or gateway that does not parse
    │   │   ├── BadNic                23 no such NIC, or not a NIC
    │   │   ├── UsedNic               24 the NIC already carries a network or a bond
    │   │   ├── BadBonding            25 a bond that cannot be made as asked
    │   │   ├── BadVlan               26 a VLAN that cannot be made as asked
    │   │   ├── BadBridge             27 a network name that cannot name a bridge, or unknown
    │   │   └── UsedBond              31 the bond still carries a network
    │   └── NetworkBusy (Conflict)    40 another network change is running
    ├── FailedIfup                    29 the kernel refused a step that validation allowed
    ├── ConnectivityLost              10 the Engine did not confirm connectivity in time
    └── RollbackFailed (Internal)     100 the kernel could not be put back as it was

Every failure of setupNetworks leaves the kernel as it was before the call; the
error says what went wrong, never how far the change had got.
"""

from __future__ import annotations

from hostvisor.actors.errors import CallerError, Conflict, HostvisorError, InternalError


class NetworkError(CallerError):
    """A network request that this host cannot carry out as asked."""

    code = 21
    message = "Bad parameters"


class BadParams(NetworkError):
    """A field is missing, unknown, of the wrong type or out of range."""

    code = 21
    message = "Bad parameters"


class BadAddress(NetworkError):
    """An IP address, netmask, prefix or gateway is malformed."""

    code = 22
    message = "Bad address"


class BadNic(NetworkError):
    """The named NIC does not exist on this host, or is not a NIC."""

    code = 23
    message = "Bad NIC"


class UsedNic(NetworkError):
    """The NIC is already used by another network or bond."""

    code = 24
    message = "NIC already in use"


class BadBonding(NetworkError):
    """The bond cannot be made, changed or used as asked (the kernel's reason, if any)."""

    code = 25
    message = "Bad bonding"


class BadVlan(NetworkError):
    """The VLAN cannot be made as asked (the kernel's reason, if any)."""

    code = 26
    message = "Bad VLAN"


class BadBridge(NetworkError):
    """The network's name cannot be a bridge name, or the network does not exist."""

    code = 27
    message = "Bad bridge"


class UsedBond(NetworkError):
    """The bond still carries a network."""

    code = 31
    message = "Bond already in use"


class NetworkBusy(Conflict):
    """Another setupNetworks (or its connectivity check) is still running."""

    code = 40
    message = "Resource unavailable"


class FailedIfup(HostvisorError):
    """The kernel refused a step of the change; everything was rolled back."""

    code = 29
    message = "Failed to bring interface up"


class ConnectivityLost(HostvisorError):
    """The Engine did not confirm connectivity in time; the change was rolled back."""

    code = 10
    message = "connectivity check failed"


class RollbackFailed(InternalError):
    """Restoring the state before a failed change did not give that state back."""

    message = "Network rollback failed"


class NamespaceMissing(InternalError):
    """The network namespace the agent was told to manage does not exist."""

    message = "Network namespace not found"
