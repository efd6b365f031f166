"""Typed calls of the device part of a VM actor (`hostvisor.actors.vm.devices`).

Each method sends the actor's method of the same name and returns at once with a
future of its answer, itself a future (an `Operation`-like one) that settles once
libvirt has done the work: await both (see `hostvisor.actors.vm.proxy`). Asks to a
dead actor fail with `pykka.ActorDeadError` when read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import pykka

from hostvisor.actors.actor import call

Work = pykka.Future[Any]
"""Settles with the operation's answer once libvirt is done (or fails with its error)."""


@final
class DeviceClient:
    """Calls to one VmActor's device methods. Thread-safe, cheap: make one per call site."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    def update_device(self, params: Mapping[str, Any]) -> pykka.Future[Work]:
        """VM.updateDevice: a console ticket, or a NIC's link state and network."""
        return call(self.ref, "update_device", params)

    def set_io_tune(self, tunables: Any) -> pykka.Future[Work]:
        """VM.setIoTune: set disks' I/O limits."""
        return call(self.ref, "set_io_tune", tunables)

    def get_io_tune(self) -> pykka.Future[Work]:
        """VM.getIoTune: each disk's live I/O limits."""
        return call(self.ref, "get_io_tune")

    def get_io_tune_policy(self) -> pykka.Future[list[dict[str, Any]]]:
        """VM.getIoTunePolicy: the stored disk limits policy (answered at once)."""
        return call(self.ref, "get_io_tune_policy")

    def set_cpu_tune(self, name: str, value: Any) -> pykka.Future[Work]:
        """VM.setCpuTuneQuota / setCpuTunePeriod: `vcpu_quota` or `vcpu_period`."""
        return call(self.ref, "set_cpu_tune", name, value)

    def update_vm_policy(self, params: Mapping[str, Any]) -> pykka.Future[Work]:
        """VM.updateVmPolicy: store and apply the vCPU limit and disk limits."""
        return call(self.ref, "update_vm_policy", params)

    def set_destroy_on_reboot(self) -> pykka.Future[Work]:
        """VM.setDestroyOnReboot: destroy the VM when its guest next reboots."""
        return call(self.ref, "set_destroy_on_reboot")

    def get_external_data(
        self, kind: str, last_hash: str | None, *, force_update: bool
    ) -> pykka.Future[Work]:
        """VM.getExternalData: the VM's TPM or NVRAM data and hash."""
        return call(self.ref, "get_external_data", kind, last_hash, force_update=force_update)

    def screenshot(self) -> pykka.Future[Work]:
        """VM.screenshot: the guest's console as an image."""
        return call(self.ref, "screenshot")
