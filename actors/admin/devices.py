"""DevicesActor: the host's devices (hostdevListByCaps, hostdevChangeNumvfs) and LLDP.

Every call reads libvirt or sysfs, so each runs on the work facility
(`Actor.run_off`) and is answered later (`Later`): the actor's turn never blocks
and calls run side by side. It holds nothing: libvirt and the kernel are the
source of truth, read again for every call, so a restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.admin import hostdev, lldp
from hostvisor.actors.admin.errors import HostdevError
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.future import Later


def settle(reply: Later, outcome: Any) -> None:
    """Settle `reply` with a work's outcome; an unexpected exception crashes the caller's actor.

    Expected errors (`HostvisorError`) go to the asker; anything else is a bug and
    is re-raised on the actor's turn (crash, don't limp) after failing the asker.
    """
    if isinstance(outcome, BaseException):
        reply.set_exception(exc_info=(type(outcome), outcome, outcome.__traceback__))
        if not isinstance(outcome, HostvisorError | OSError):
            raise outcome
    else:
        reply.set(outcome)


class DevicesActor(Actor):
    """Answers the host device and LLDP verbs. Methods never block.

    Args:
        connection: returns the open libvirt connection (blocking; on a worker).
        pci_root: the PCI devices' sysfs directory.
        net_root: the network interfaces' sysfs directory.
        lldp_agent: reads a NIC's LLDP TLVs (default: the host's lldpd, if it runs).
    """

    def __init__(
        self,
        *,
        connection: Callable[[], Any],
        pci_root: Path = hostdev.PCI_DEVICES,
        net_root: Path = lldp.NET,
        lldp_agent: lldp.Agent | None = None,
    ) -> None:
        """Keep the seams."""
        super().__init__()
        self._connection = connection
        self._pci_root = pci_root
        self._net_root = net_root
        self._lldp_agent: lldp.Agent = lldp.LldpdAgent() if lldp_agent is None else lldp_agent

    def list_by_caps(self, caps: tuple[str, ...]) -> Later:
        """HostdevListByCaps' `deviceList` (answered from a worker)."""
        connection, root = self._connection, self._pci_root
        return self._later(lambda: hostdev.list_by_caps(connection, caps, pci_root=root), "list")

    def change_numvfs(self, device_name: str, numvfs: int) -> Later:
        """HostdevChangeNumvfs (HostdevError when the device has no SR-IOV)."""
        connection, root = self._connection, self._pci_root

        def change() -> bool:
            try:
                hostdev.change_numvfs(connection, device_name, numvfs, pci_root=root)
            except OSError as error:
                raise HostdevError(device=device_name, reason=str(error)) from None
            return True

        return self._later(change, "numvfs")

    def lldp(self, devices: tuple[str, ...] | None) -> Later:
        """GetLldp's `info` for `devices` (None: every NIC)."""
        agent, root = self._lldp_agent, self._net_root
        return self._later(lambda: lldp.lldp_info(devices, agent=agent, root=root), "lldp")

    def _later(self, work: Callable[[], Any], name: str) -> Later:
        reply = Later()
        self.run_off(work, lambda outcome: settle(reply, outcome), name=name)
        return reply
