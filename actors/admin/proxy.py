"""Typed clients of the admin actors (`hostvisor.actors.admin.addresses`).

Each method sends the call of the actor's method of the same name and returns at
once with a future of its answer (`hostvisor.actors.actor.call`); the only place
those names are strings. Read a future with a timeout, or await it on the API
loop (`hostvisor.api.rpc.bridge.settled`). Thread-safe; each holds the ref only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, final

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.admin.fence import FenceRequest, FenceResult
from hostvisor.actors.admin.memory import RoundReport
from hostvisor.actors.admin.mompolicy import PolicyParameters


@final
class MemoryProxy:
    """Calls to the MemoryActor."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def set_parameters(self, key_value_store: Mapping[str, Any]) -> pykka.Future[bool]:
        """Host.setMOMPolicyParameters (MomPolicyUpdateFailed on a bad key or value)."""
        return call(self.ref, "set_parameters", dict(key_value_store))

    def set_ksm_tune(self, tuning: Mapping[str, Any]) -> pykka.Future[bool]:
        """Host.setKsmTune (KsmUpdateFailed on a bad knob, value, or a kernel refusal)."""
        return call(self.ref, "set_ksm_tune", dict(tuning))

    def parameters(self) -> pykka.Future[PolicyParameters]:
        """The policy's parameters now."""
        return call(self.ref, "parameters")

    def status(self) -> pykka.Future[str]:
        """GetStats' `momStatus`."""
        return call(self.ref, "status")

    def last_round(self) -> pykka.Future[RoundReport | None]:
        """What the last finished round decided."""
        return call(self.ref, "last_round")

    def rounds(self) -> pykka.Future[int]:
        """How many rounds have finished."""
        return call(self.ref, "rounds")


@final
class DevicesProxy:
    """Calls to the DevicesActor."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def list_by_caps(self, caps: Sequence[str]) -> pykka.Future[dict[str, Any]]:
        """Host.hostdevListByCaps' `deviceList`."""
        return call(self.ref, "list_by_caps", tuple(caps))

    def change_numvfs(self, device_name: str, numvfs: int) -> pykka.Future[bool]:
        """Host.hostdevChangeNumvfs (HostdevError when the device has no SR-IOV)."""
        return call(self.ref, "change_numvfs", device_name, numvfs)

    def lldp(self, devices: Sequence[str] | None) -> pykka.Future[dict[str, Any]]:
        """Host.getLldp's `info`, for `devices` (None: every NIC)."""
        return call(self.ref, "lldp", None if devices is None else tuple(devices))


@final
class FencerProxy:
    """Calls to the FenceActor."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def fence(self, request: FenceRequest) -> pykka.Future[FenceResult]:
        """Host.fenceNode: run the agent (UnsupportedFenceAgent, FenceFailed)."""
        return call(self.ref, "fence", request)
