"""Where the network actors live in the supervision tree.

    networks (rest_for_one)
    ├── nets      the dynamic supervisor of one NetworkActor per network: networks/nets/<name>
    ├── monitor   the link monitor (netlink)
    └── netconf   the NetworkConfigurator: setupNetworks, the running and safe configs

supervision/ and api/ import these names; nothing else writes a network path.
"""

from __future__ import annotations

from typing import Final

NETWORKS: Final = "networks"
"""The networks branch."""
NETS_ID: Final = "nets"
MONITOR_ID: Final = "monitor"
NETCONF_ID: Final = "netconf"
NETS: Final = f"{NETWORKS}/{NETS_ID}"
"""The dynamic supervisor of NetworkActors."""
MONITOR: Final = f"{NETWORKS}/{MONITOR_ID}"
"""The LinkMonitor."""
NETCONF: Final = f"{NETWORKS}/{NETCONF_ID}"
"""The NetworkConfigurator."""


def network_path(name: str) -> str:
    """The path of one network's actor."""
    return f"{NETS}/{name}"
