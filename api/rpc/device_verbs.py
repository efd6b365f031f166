"""Device verbs: VM.updateDevice, I/O tune, policies, consoles, external data.

Params as the Engine sends them (ovirt-engine `JsonRpcVdsServer`):
- `VM.updateDevice {vmID, params}`: `SetVmTicketVDSCommand` (`params.deviceType`
  "graphics", graphicsType, password, ttl, disconnectAction,
  consoleDisconnectActionDelay, params {userName, userId, fips, vncUsername}) and
  `UpdateVmInterfaceVDSCommand` (`params.deviceType` "interface", `params.xml` the
  NIC as `LibvirtVmXmlBuilder.buildHotplugNic` writes it); VDSM's field form for
  NICs (alias, linkActive, network, portMirroring) too.
- `VM.updateVmPolicy {vmID, params}`: `UpdateVmPolicyVDSCommand` (params.vmId,
  vcpuLimit as a string, ioTune [{domainID, poolID, imageID, volumeID, maximum,
  guaranteed}]).
- `VM.setDestroyOnReboot {vmID}`: `SetDestroyOnRebootVDSCommand`.
- `VM.getExternalData {vmID, kind, forceUpdate}`: `GetVmExternalDataVDSCommand`
  (kind "tpm" or "nvram"); VDSM's schema adds `lastHash`.
- `VM.screenshot {vmID}`: `ScreenshotVmVDSCommand`.
- `VM.setIoTune {vmID, tunables}`, `VM.getIoTune {vmID}`, `VM.getIoTunePolicy {vmID}`,
  `VM.setCpuTuneQuota {vmID, quota}`, `VM.setCpuTunePeriod {vmID, period}`: VDSM's
  schema (MOM's levers; the Engine does not call them).
Answers as VDSM's bridge shapes them: updateDevice `{}` (its `vmList`), setIoTune and
updateVmPolicy and setCpuTune* the status `{code, message}`, getIoTune and
getIoTunePolicy the list, getExternalData
`{hash[, _X_data]}`, screenshot `{data, encoding, mime_type}`, setDestroyOnReboot
true. Each verb checks its params on the VM's actor before anything changes; the
libvirt work runs off the actor's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pykka

from hostvisor.actors.errors import Conflict, InvalidArgument
from hostvisor.actors.vm.device_client import DeviceClient, Work
from hostvisor.actors.vm.device_errors import (
    CpuTuneError,
    ExternalDataFailed,
    NotImplementedHere,
    TicketError,
    UpdateIoTuneError,
    UpdateVmPolicyFailed,
)
from hostvisor.actors.vm.errors import (
    MissingParameter,
    NoSuchVm,
    UnsupportedOperation,
    UpdateDeviceFailed,
    VmIsDown,
)
from hostvisor.actors.vm.proxy import VmProxy
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.verbs import Verb
from hostvisor.api.rpc.vm_verbs import VmApi, VmId

DONE = {"code": 0, "message": "Done"}
_COMMON = (NoSuchVm, VmIsDown, Conflict, InvalidArgument, UnsupportedOperation)
DeviceParams = Annotated[dict[str, Any], Arg("the device update: deviceType and its fields")]
PolicyParams = Annotated[dict[str, Any], Arg("vmId, vcpuLimit, ioTune")]
Tunables = Annotated[list[dict[str, Any]], Arg("[{name | path, ioTune: {total_bytes_sec, …}}]")]


def device_verbs(vms: VmApi, storage: StorageApi) -> list[Verb]:
    """Return these verbs over the VM and storage APIs."""
    del storage
    return verbs_of(DeviceHandlers(vms))


def _operation_timeout(handlers: DeviceHandlers) -> float:
    return handlers.api.operation_timeout


class DeviceHandlers:
    """The handlers of the device verbs. Each runs on the API loop."""

    def __init__(self, api: VmApi) -> None:
        """Serve through `api`."""
        self.api = api

    async def work(self, vm_id: str, ask: Callable[[DeviceClient], pykka.Future[Work]]) -> Any:
        """Ask the VM's actor, then await the libvirt work it started."""
        operation = await self.api.retried(vm_id, lambda vm: ask(_devices(vm)))
        return await settled(operation)

    @verb(
        "VM",
        "updateDevice",
        returns="{}",
        errors=(
            *_COMMON,
            MissingParameter,
            NotImplementedHere,
            UpdateDeviceFailed,
            TicketError,
        ),
        timeout=_operation_timeout,
    )
    async def update_device(self, *, vm_id: VmId, params: DeviceParams) -> dict[str, Any]:
        """Update a running VM's device: a console ticket (graphics) or a NIC's link/network."""
        answer: dict[str, Any] = await self.work(vm_id, lambda d: d.update_device(params))
        return answer

    @verb(
        "VM",
        "setIoTune",
        returns="Status",
        errors=(*_COMMON, MissingParameter, UpdateIoTuneError),
        timeout=_operation_timeout,
    )
    async def set_io_tune(self, *, vm_id: VmId, tunables: Tunables) -> dict[str, Any]:
        """Set I/O limits of the VM's disks (merged into their current limits)."""
        await self.work(vm_id, lambda d: d.set_io_tune(tunables))
        return dict(DONE)

    @verb(
        "VM",
        "getIoTune",
        returns="[{name, path, ioTune}]",
        errors=(*_COMMON, UpdateIoTuneError),
        timeout=_operation_timeout,
    )
    async def get_io_tune(self, *, vm_id: VmId) -> list[Any]:
        """The live I/O limits of each of the VM's disks."""
        answer: list[Any] = await self.work(vm_id, DeviceClient.get_io_tune)
        return answer

    @verb(
        "VM",
        "getIoTunePolicy",
        returns="[{name, path, maximum, guaranteed}]",
        errors=(NoSuchVm, InvalidArgument),
    )
    async def get_io_tune_policy(self, *, vm_id: VmId) -> list[Any]:
        """The disk limits policy updateVmPolicy stored (MOM reads it)."""
        answer: list[Any] = await self.api.retried(
            vm_id, lambda vm: _devices(vm).get_io_tune_policy(), reads=True
        )
        return answer

    @verb(
        "VM",
        "setCpuTuneQuota",
        returns="Status",
        errors=(*_COMMON, CpuTuneError),
        timeout=_operation_timeout,
    )
    async def set_cpu_tune_quota(
        self, *, vm_id: VmId, quota: Annotated[str | int, Arg("vCPU quota, µs per period")]
    ) -> dict[str, Any]:
        """Set the VM's vCPU quota (MOM's lever; -1: none)."""
        await self.work(vm_id, lambda d: d.set_cpu_tune("vcpu_quota", quota))
        return dict(DONE)

    @verb(
        "VM",
        "setCpuTunePeriod",
        returns="Status",
        errors=(*_COMMON, CpuTuneError),
        timeout=_operation_timeout,
    )
    async def set_cpu_tune_period(
        self, *, vm_id: VmId, period: Annotated[str | int, Arg("vCPU period, µs")]
    ) -> dict[str, Any]:
        """Set the VM's vCPU scheduling period (MOM's lever)."""
        await self.work(vm_id, lambda d: d.set_cpu_tune("vcpu_period", period))
        return dict(DONE)

    @verb(
        "VM",
        "updateVmPolicy",
        returns="Status",
        errors=(*_COMMON, MissingParameter, UpdateIoTuneError, UpdateVmPolicyFailed),
        timeout=_operation_timeout,
    )
    async def update_vm_policy(self, *, vm_id: VmId, params: PolicyParams) -> dict[str, Any]:
        """Store and apply the VM's QoS policy: its vCPU limit (%) and disk limits."""
        await self.work(vm_id, lambda d: d.update_vm_policy(params))
        return dict(DONE)

    @verb("VM", "setDestroyOnReboot", errors=_COMMON, timeout=_operation_timeout)
    async def set_destroy_on_reboot(self, *, vm_id: VmId) -> bool:
        """Destroy the VM when its guest next reboots (the Engine's run-once VMs)."""
        await self.work(vm_id, DeviceClient.set_destroy_on_reboot)
        return True

    @verb(
        "VM",
        "getExternalData",
        returns="{hash, _X_data}",
        errors=(*_COMMON, ExternalDataFailed),
        timeout=_operation_timeout,
    )
    async def get_external_data(
        self,
        *,
        vm_id: VmId,
        kind: Annotated[str, Arg('"tpm" or "nvram"')],
        last_hash: Annotated[
            str | None, Arg("omit the data if its hash is this", wire="lastHash")
        ] = None,
        force_update: Annotated[
            bool, Arg("read the newest data, stable or not", wire="forceUpdate")
        ] = True,
    ) -> dict[str, Any]:
        """The VM's TPM or NVRAM data (encoded) and its hash."""
        answer: dict[str, Any] = await self.work(
            vm_id, lambda d: d.get_external_data(kind, last_hash, force_update=force_update)
        )
        return answer

    @verb(
        "VM",
        "screenshot",
        returns="{data, encoding, mime_type}",
        errors=_COMMON,
        timeout=_operation_timeout,
    )
    async def screenshot(self, *, vm_id: VmId) -> dict[str, Any]:
        """An image of the guest's console, base64-encoded."""
        answer: dict[str, Any] = await self.work(vm_id, DeviceClient.screenshot)
        return answer


def _devices(vm: VmProxy) -> DeviceClient:
    return DeviceClient(vm.ref)
