"""Typed client of a ContainerActor (see hostvisor.actors.vm.proxy for the conventions).

A container VM answers the VM verbs through the same method names as a VmActor,
so its proxy is a VmProxy: the API treats a VM the same however it runs.
"""

from __future__ import annotations

from typing import final

from hostvisor.actors.vm.proxy import VmProxy


@final
class ContainerProxy(VmProxy):
    """Calls to one ContainerActor: the VM verbs, answered by docker instead of libvirt."""

    __slots__ = ()
