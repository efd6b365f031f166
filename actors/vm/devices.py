"""Changes to a running VM's devices and policies: consoles, NICs, I/O tune.

`DeviceEditor` is mixed into `VmActor`. Each method the API calls runs on the VM
actor's turn, checks its params there (a bad one fails the ask at once, nothing
changed), and hands the libvirt work to the work facility (`operation`): it
returns a future that settles when libvirt is done, and the VM answers stats and
status meanwhile. The verbs (api/rpc/device_verbs.py) await both.

- `update_device` (VM.updateDevice): a console ticket (`device_graphics`) or a NIC's
  link state and network (`device_nic`), through `updateDeviceFlags`;
- `set_io_tune`, `get_io_tune` (VM.setIoTune, getIoTune): `setBlockIoTune`,
  `blockIoTune` (`device_tune`);
- `update_vm_policy` (VM.updateVmPolicy): the `ovirt-tune:qos` metadata, the vCPU
  quota and the disks' limits (`device_tune`);
- `get_io_tune_policy`, `set_cpu_tune` (VM.getIoTunePolicy, setCpuTuneQuota/Period:
  MOM's levers): the stored policy, `setSchedulerParametersFlags`;
- `set_destroy_on_reboot` (VM.setDestroyOnReboot): noted in the metadata; libvirt's
  REBOOT event (a `GuestRebooted` message) then ends the VM;
- `get_external_data` (VM.getExternalData): the TPM/NVRAM data (`device_data`);
- `screenshot` (VM.screenshot): `virDomainScreenshot`.

A ticket also arms the console's disconnect action (`device_console`): libvirt's
GRAPHICS events tell this actor who is connected (`clientIp`) and when they leave.

For VmActor: `_device_fields()` is what VM stats add from this part (`tpmHash`,
`nvramHash`, `vcpuUserLimit`, `vcpuQuota`, `vcpuPeriod`, `clientIp`). The console and
reboot events come as messages from the hypervisor actor, which watches every
domain's (`hypervisor.events`): a restarted actor gets them with nothing to redo.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import libvirt
import pykka

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import HostvisorError, InvalidArgument
from hostvisor.actors.guest.status import Exit, ExitReason
from hostvisor.actors.hypervisor.events import ConsoleChanged, GuestRebooted
from hostvisor.actors.vm import (
    device_console,
    device_data,
    device_graphics,
    device_nic,
    device_tune,
)
from hostvisor.actors.vm.device_errors import CpuTuneError, ExternalDataFailed, NotImplementedHere
from hostvisor.actors.vm.errors import MissingParameter, NoSuchVm

if TYPE_CHECKING:
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.vm.domxml import DomainSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DisconnectDue:
    """Tell (a timer): act on the console client's disconnect number `serial` if still away.

    `final`: the SHUTDOWN action's delay has passed too.
    """

    serial: int
    final: bool = False


class DeviceEditor:
    """Device changes for a VM actor (mixed into VmActor; runs on its turn only)."""

    NOT_YET: ClassVar[frozenset[str]] = frozenset()
    """Methods the API calls that this part does not implement yet: code 75."""

    # Provided by VmActor / GuestActor / Actor:
    vm_id: str
    guest: GuestModel
    spec: DomainSpec
    _connection: Callable[[], Any]
    operation: Callable[..., CallbackFuture]
    run_off: Callable[..., Any]
    _set_xml: Callable[[str], None]
    tell_later: Callable[..., Any]
    shutdown: Callable[..., CallbackFuture]

    @property
    def actor_ref(self) -> pykka.ActorRef[Any]:
        """This actor's ref (Actor's)."""
        raise NotImplementedError

    # This part's state (class defaults; set per actor on first change).
    _console: device_console.Console = device_console.Console()
    _external: Mapping[str, device_data.DataState] = {}
    _cpu_tune: Mapping[str, int] | None = None
    _dev_read_of: str | None = None  # the XML `_dev_read` was read from
    _dev_read: tuple[Mapping[str, Any], tuple[str, ...]] = ({}, ())

    # -- VM.updateDevice --------------------------------------------------------------------

    def update_device(self, params: Mapping[str, Any]) -> CallbackFuture:
        """Update a device of the running VM as `params` say (VM.updateDevice).

        `deviceType` "graphics": set the console ticket; "interface": the NIC's link
        state and network. Runs on the actor's turn; returns a future of `{}`.

        Raises (at once, or through the future):
            MissingParameter (11): no deviceType, or a field the type needs.
            InvalidArgument (91): a field of the wrong type or value.
            NotImplementedHere (44): another device type (VDSM's answer too).
            VmIsDown (6) / Conflict (40): the VM does not run (yet).
            UpdateDeviceFailed (56): no such device, or libvirt refused the update.
            TicketError (18): libvirt refused the ticket.
        """
        if not isinstance(params, Mapping):
            raise InvalidArgument(param="params", reason="not an object")
        kind = params.get("deviceType")
        if kind is None:
            raise MissingParameter(param="params.deviceType")
        if kind == "graphics":
            ticket = device_graphics.check_request(params)
            self.guest.require_running("updateDevice")

            def set_ticket(domain: Any) -> None:
                device_graphics.set_ticket(domain, ticket)

            def ticket_set(_: Any) -> dict[str, Any]:
                self._console = replace(
                    self._console,
                    action=ticket.disconnect_action,
                    delay_minutes=ticket.disconnect_delay,
                )
                return {}

            return self._on_domain_op("updateDevice", set_ticket, ticket_set)
        if kind == "interface":
            update = device_nic.nic_update(params)
            self.guest.require_running("updateDevice")

            def update_nic(domain: Any) -> str:
                return device_nic.update_nic(domain, update)

            return self._on_domain_op("updateDevice", update_nic, self._new_xml)
        raise NotImplementedHere(deviceType=kind)

    # -- I/O tune ---------------------------------------------------------------------------

    def set_io_tune(self, tunables: Any) -> CallbackFuture:
        """Set disks' I/O limits (VM.setIoTune); a future of None.

        Raises (at once, or through the future): InvalidArgument, MissingParameter,
        VmIsDown, UpdateIoTuneError (64: no such disk, bad values, libvirt refused).
        """
        changes = device_tune.tune_changes(tunables)
        for _name, _path, values in changes:
            device_tune.check_io_tune(values)
        self.guest.require_running("setIoTune")

        def set_limits(domain: Any) -> str:
            device_tune.set_io_tune(domain, changes)
            live: str = domain.XMLDesc(0)
            return live

        return self._on_domain_op("setIoTune", set_limits, self._new_xml_none)

    def get_io_tune(self) -> CallbackFuture:
        """Each disk's live I/O limits (VM.getIoTune); a future of the list."""
        self.guest.require_running("getIoTune")
        return self._on_domain_op("getIoTune", device_tune.io_tune_values, lambda found: found)

    def update_vm_policy(self, params: Mapping[str, Any]) -> CallbackFuture:
        """Store and apply a QoS policy (VM.updateVmPolicy); a future of None.

        Raises (at once, or through the future): MissingParameter (an empty
        policy), InvalidArgument, UpdateIoTuneError, VmIsDown,
        UpdateVmPolicyFailed (63: no such disk, libvirt refused).
        """
        if not isinstance(params, Mapping):
            raise InvalidArgument(param="params", reason="not an object")
        change = device_tune.policy_change(params)
        if change.unknown:
            log.warning("VM %s: updateVmPolicy ignores %s", self.vm_id, ", ".join(change.unknown))
        self.guest.require_running("updateVmPolicy")

        def apply(domain: Any) -> tuple[str, dict[str, int] | None]:
            return device_tune.apply_policy(domain, change)

        def applied(outcome: tuple[str, dict[str, int] | None]) -> None:
            live, tune = outcome
            if tune is not None:
                self._cpu_tune = tune
            self._new_xml(live)

        return self._on_domain_op("updateVmPolicy", apply, applied)

    def get_io_tune_policy(self) -> list[dict[str, Any]]:
        """The stored disk limits policy (VM.getIoTunePolicy): answered at once."""
        return device_tune.io_tune_policy(self.guest.xml) if self.guest.xml else []

    def set_cpu_tune(self, name: str, value: Any) -> CallbackFuture:
        """Set the vCPU quota or period (VM.setCpuTuneQuota/Period, MOM's); a future of None.

        Raises (at once, or through the future): CpuTuneError (62: not a whole
        number, or libvirt refused it), VmIsDown.
        """
        if name not in ("vcpu_quota", "vcpu_period"):
            raise InvalidArgument(param="name", value=name)
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise CpuTuneError(param=name, reason="an integer is required")
        self.guest.require_running("setCpuTune")

        def set_tune(domain: Any) -> dict[str, int]:
            return device_tune.set_cpu_tune(domain, name, number)

        def tuned(tune: dict[str, int]) -> None:
            self._cpu_tune = tune
            self.guest.changed()

        return self._on_domain_op("setCpuTune", set_tune, tuned)

    # -- destroy on reboot --------------------------------------------------------------------

    def set_destroy_on_reboot(self) -> CallbackFuture:
        """Destroy the VM when its guest next reboots (VM.setDestroyOnReboot).

        Noted in the domain's metadata, so it outlives an agent restart. A future of
        None. Raises VmIsDown when the VM does not run.
        """
        self.guest.require_running("setDestroyOnReboot")

        def mark(domain: Any) -> str:
            return device_data.mark_destroy_on_reboot(domain)

        def marked(live: str) -> None:
            self._new_xml(live)

        return self._on_domain_op("setDestroyOnReboot", mark, marked)

    def _on_reboot_seen(self) -> None:
        if self.guest.down or not device_data.destroy_on_reboot(self.guest.xml):
            return
        log.info("VM %s rebooted: destroying it, as asked", self.vm_id)
        # Down first: libvirt's STOPPED event, which the destroy brings, must not
        # report another reason.
        self.guest.go_down(Exit.of(ExitReason.DESTROYED_ON_REBOOT))

        def destroy() -> None:
            with contextlib.suppress(libvirt.libvirtError, NoSuchVm):
                self._domain().destroy()

        self.run_off(destroy, lambda _o: None, name="destroy-on-reboot")

    def _device_receive(self, message: Any) -> bool:
        """Handle `message` if it is one of this part's; say whether it was."""
        match message:
            case GuestRebooted():
                self._on_reboot_seen()
            case ConsoleChanged(connected=connected, address=address, port=port):
                self._on_graphics(
                    device_console.GraphicsEvent(connected=connected, address=address, port=port)
                )
            case DisconnectDue(serial, final):
                self._on_disconnect_due(serial, final=final)
            case _:
                return False
        return True

    # -- the console's client ---------------------------------------------------------------

    def _on_graphics(self, event: device_console.GraphicsEvent) -> None:
        before = self._console
        self._console = after = before.on_event(event)
        if after.client_ip != before.client_ip:
            self.guest.changed()
        if after.disconnects != before.disconnects:
            self.tell_later(device_console.RECONNECT_GRACE, DisconnectDue(after.disconnects))

    def _on_disconnect_due(self, serial: int, *, final: bool = False) -> None:
        console = self._console
        if serial != console.disconnects or console.client is not None or self.guest.down:
            return  # the client came back (or left again since), or the VM is gone
        action = console.action
        if action in ("LOCK_SCREEN", "LOGOUT"):
            log.info("VM %s: console left; %s needs oVirt's guest agent", self.vm_id, action)
        elif action == "SHUTDOWN" and not final and console.delay_minutes > 0:
            self.tell_later(console.delay_minutes * 60.0, DisconnectDue(serial, final=True))
        elif action in ("SHUTDOWN", "REBOOT"):
            log.info("VM %s: console left; %s, as its ticket asked", self.vm_id, action.lower())
            try:
                self.shutdown(
                    timeout=device_console.FORCE_AFTER, reboot=action == "REBOOT", force=True
                )
            except HostvisorError as error:
                log.warning("VM %s: %s on console disconnect failed: %s", self.vm_id, action, error)

    # -- external data, screenshots -------------------------------------------------------------

    def get_external_data(
        self, kind: str, last_hash: str | None = None, *, force_update: bool = True
    ) -> CallbackFuture:
        """The VM's TPM or NVRAM data and its hash (VM.getExternalData).

        A future of `{hash[, _X_data]}`; a VM that went Down answers too (its files
        outlive QEMU). Raises (at once, or through the future) ExternalDataFailed
        (89): an unknown kind, a VM without such a device, or data that cannot be read.
        """
        if kind not in device_data.KINDS:
            raise ExternalDataFailed(reason="Unsupported data kind", kind=kind)
        if kind not in device_data.devices_with_data(self.guest.xml):
            raise ExternalDataFailed(reason="No such device available", kind=kind)
        # No running guest needed: the Engine saves the data of a VM that went Down,
        # before it destroys it, and the files outlive QEMU.
        xml, vm_id = self.guest.xml, self.vm_id
        uri = self._connection().getURI()

        def read() -> str:
            return device_data.read_data(kind, xml, uri=uri, vm_id=vm_id)

        def got(data: str) -> dict[str, Any]:
            state = self._external.get(kind, device_data.DataState()).read(data, force=force_update)
            if state != self._external.get(kind):
                self._external = {**self._external, kind: state}
                self.guest.changed()
            return state.answer(last_hash)

        return self.operation("getExternalData", read, then=got)

    def screenshot(self) -> CallbackFuture:
        """An image of the guest's console (VM.screenshot): a future of VDSM's answer."""
        self.guest.require_running("screenshot")
        connection = self._connection

        def shoot(domain: Any) -> dict[str, str]:
            return device_data.screenshot(connection(), domain)

        return self._on_domain_op("screenshot", shoot, lambda shot: shot)

    # -- for VmActor ------------------------------------------------------------------------------

    def _device_fields(self) -> dict[str, Any]:
        """What VM stats report from this part: external data hashes, the vCPU limit.

        What the XML says is read once per XML (each stats sample renders the entry).
        """
        xml = self.guest.xml
        if self._dev_read_of is not xml:
            kinds = device_data.devices_with_data(xml) if xml else ()
            self._dev_read = (device_tune.policy_fields(xml), tuple(kinds))
            self._dev_read_of = xml
        policy, kinds = self._dev_read
        fields: dict[str, Any] = dict(policy)
        fields["clientIp"] = self._console.client_ip
        fields.update(device_tune.cpu_tune_fields(self._cpu_tune))
        for kind in kinds:
            state = self._external.get(kind)
            fields[device_data.STATS_FIELDS[kind]] = state.engine_hash if state else ""
        return fields

    @property
    def console(self) -> device_console.Console:
        """The console's client, and what the last ticket said to do when it leaves."""
        return self._console

    # -- helpers -----------------------------------------------------------------------

    def _domain(self) -> Any:
        """The running domain (blocks briefly; a worker's call). Raises NoSuchVm."""
        try:
            return self._connection().lookupByUUIDString(self.vm_id)
        except libvirt.libvirtError:
            raise NoSuchVm(vmId=self.vm_id) from None

    def _on_domain_op(
        self, op: str, work: Callable[[Any], Any], then: Callable[[Any], Any]
    ) -> CallbackFuture:
        """`operation(op)` running `work(domain)` on a worker; libvirt's NO_DOMAIN is 1."""
        vm_id = self.vm_id

        def run() -> Any:
            domain = self._domain()
            try:
                return work(domain)
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise NoSuchVm(vmId=vm_id) from None
                raise

        return self.operation(op, run, then=then)

    def _new_xml(self, live: str) -> dict[str, Any]:
        """The live XML changed (a device update): report it; answer VDSM's `{}`."""
        if live != self.guest.xml and not self.guest.down:
            self._set_xml(live)
            self.guest.changed()
        return {}

    def _new_xml_none(self, live: str) -> None:
        self._new_xml(live)
