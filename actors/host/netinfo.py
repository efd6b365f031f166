"""The network devices of the agent's own namespace, in the shapes VDSM reports them.

The readers belong to the networks (`hostvisor.actors.network.netinfo`), which read
whichever namespace the host manages, in that namespace's worker thread. These are
the same readers for the process's own namespace, run in the calling thread: what
the host actor reports when no network configurator is wired in (tools, tests).
"""

from __future__ import annotations

from typing import Any

from pyroute2 import IPRoute

from hostvisor.actors.network import netinfo

nameservers = netinfo.nameservers


def network_caps() -> dict[str, Any]:
    """Return VDSM's network capabilities of this process's namespace (blocking).

    Returns:
        `networks` ({}: none configured through this reader), `bridges`, `nics`,
        `bondings`, `vlans`, `nameservers`, `supportsIPv6` and `netConfigDirty`.
    """
    with IPRoute() as ipr:
        return netinfo.network_caps(ipr)


def interface_stats() -> dict[str, Any]:
    """Return the network part of VDSM's `Host.getStats` for this namespace (blocking)."""
    with IPRoute() as ipr:
        return netinfo.interface_stats(ipr)
