"""Unplugging: detach a device, then wait for the guest to release it (DEVICE_REMOVED).

`Unplugging` is the part of `Hotplugger` (and so of `VmActor`) that follows an unplug
to its end. The detach runs on the work facility; libvirt's DEVICE_REMOVED reaches
the actor as a `DeviceRemoved` message (the hypervisor actor watches every domain's,
so it cannot be missed, even if it comes before the detach call returns), and
the removal then forgets the device's metadata, reads the live XML (its devices hash
changes) and settles the verb's future. A guest that does not let go within
`UNPLUG_TIMEOUT` seconds fails the verb with its code (`UnplugTimedOut`). Everything
here runs on the VM actor's turn and never blocks it.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import libvirt
import pykka

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import HostvisorError
from hostvisor.actors.vm import hotplug_xml as hx
from hostvisor.actors.vm.hotplug_libvirt import (
    LIVE,
    domain_of,
    live_xml,
    refused,
    try_set_metadata,
)
from hostvisor.actors.vm.metadata_lock import editing

if TYPE_CHECKING:
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.timers import Timer

log = logging.getLogger(__name__)

UNPLUG_TIMEOUT = 30.0
"""Seconds a guest has to release an unplugged device (VDSM `hotunplug_timeout`)."""
MEMORY_UNPLUG_WAIT = 300.0
"""Seconds a DIMM's removal is watched for after `hotunplugMemory` has answered."""


@dataclass(frozen=True, slots=True)
class UnplugTimedOut:
    """Tell (the timer service): the guest has not released device `alias` in time."""

    alias: str


@dataclass(slots=True)
class Removal:
    """An unplug in flight: detached or being detached, waiting for DEVICE_REMOVED."""

    op: str
    failure: type[HostvisorError]
    forget: Callable[[ET.Element], bool]
    """Which `ovirt-vm:device` metadata goes with the device."""
    result: Any
    future: CallbackFuture | None
    """Settles once the device is gone (None: the verb answered already)."""
    detached: bool = False
    removed: bool = False
    timer: Timer | None = None
    after_detach: Callable[[Any], None] | None = None
    """Run (on the work facility, with the domain) once the detach is sent."""


@dataclass(slots=True)
class HotplugState:
    """A VM actor's hotplug work in flight (its turn only)."""

    removals: dict[str, Removal] = field(default_factory=dict)
    reserved: set[str] = field(default_factory=set)
    """Disk names taken by plugs in flight."""


class Unplugging:
    """Unplugs in flight for a VM actor (mixed into Hotplugger; its turn only)."""

    UNPLUG_TIMEOUT: ClassVar[float] = UNPLUG_TIMEOUT

    # Provided by VmActor / GuestActor / Actor:
    vm_id: str
    guest: GuestModel
    _connection: Callable[[], Any]
    run_off: Callable[..., Any]
    tell_later: Callable[..., Timer]
    _set_xml: Callable[[str], None]

    @property
    def actor_ref(self) -> pykka.ActorRef[Any]:
        """This actor's ref (Actor's)."""
        raise NotImplementedError

    _hotplug: HotplugState | None = None

    @property
    def _hp(self) -> HotplugState:
        if self._hotplug is None:
            self._hotplug = HotplugState()
        return self._hotplug

    def _unplug(
        self, removal: Removal, alias: str, device: str, *, wait: float | None = None
    ) -> CallbackFuture:
        """Detach `device` off this thread; `removal` ends when libvirt says it is gone.

        Returns the future the verb answers with: `removal.future`, or, for a removal
        nobody waits for, one that settles once the detach is sent.
        """
        if alias in self._hp.removals:
            raise removal.failure(vmId=self.vm_id, alias=alias, reason="already being unplugged")
        self._hp.removals[alias] = removal
        answer = removal.future or CallbackFuture()
        vm_id, connection = self.vm_id, self._connection

        def detach() -> int:
            done = _detach(connection(), vm_id, device, removal.failure)
            if removal.after_detach is not None:
                removal.after_detach(domain_of(connection(), vm_id))
            return done

        def detached(outcome: int | BaseException) -> None:
            if isinstance(outcome, BaseException):
                self._hp.removals.pop(alias, None)
                error = outcome
                if not isinstance(error, HostvisorError):
                    error = removal.failure(vmId=vm_id, alias=alias, reason=str(error))
                answer.set_exception(exc_info=(type(error), error, None))
                return
            removal.detached = True
            if removal.future is None:
                answer.set(removal.result)
            if removal.removed:
                self._finish_removal(alias)
            else:
                removal.timer = self.tell_later(wait or self.UNPLUG_TIMEOUT, UnplugTimedOut(alias))

        log.info("VM %s: unplugging %s (%s)", vm_id, alias, removal.op)
        self.run_off(detach, detached, name=removal.op)
        return answer

    def _device_removed(self, alias: str) -> None:
        removal = self._hp.removals.get(alias)
        if removal is None:  # not ours to wait for: the devices changed all the same
            self._refresh_xml()
            return
        removal.removed = True
        if removal.detached:  # else `detached` finishes it
            self._finish_removal(alias)

    def _finish_removal(self, alias: str) -> None:
        removal = self._hp.removals.pop(alias)
        if removal.timer is not None:
            removal.timer.cancel()
        vm_id, connection = self.vm_id, self._connection

        def forget() -> str:
            domain = domain_of(connection(), vm_id)
            with editing(domain):
                try_set_metadata(
                    domain, hx.metadata_without(live_xml(domain), removal.forget), vm_id
                )
            return live_xml(domain)

        def forgotten(outcome: str | BaseException) -> None:
            if isinstance(outcome, BaseException):
                log.warning("VM %s: after unplugging %s: %s", vm_id, alias, outcome)
            elif not self.guest.down:
                self._set_xml(outcome)
            log.info("VM %s: %s released by the guest", vm_id, alias)
            if removal.future is not None:
                removal.future.set(removal.result)

        self.run_off(forget, forgotten, name=f"{removal.op}:done")

    def _unplug_timed_out(self, alias: str) -> None:
        removal = self._hp.removals.pop(alias, None)
        if removal is None:
            return
        log.warning("VM %s: the guest did not release %s in time", self.vm_id, alias)
        if removal.future is not None:
            error = removal.failure(vmId=self.vm_id, alias=alias, reason="Timeout detaching")
            removal.future.set_exception(exc_info=(type(error), error, None))

    def _refresh_xml(self) -> None:
        """Read the live XML again (a removal nobody waited for), dropping stale metadata."""
        vm_id, connection = self.vm_id, self._connection

        def read() -> str:
            domain = domain_of(connection(), vm_id)
            with editing(domain):
                try_set_metadata(domain, hx.without_stale(live_xml(domain)), vm_id)
            return live_xml(domain)

        def done(outcome: str | BaseException) -> None:
            if not isinstance(outcome, BaseException) and not self.guest.down:
                self._set_xml(outcome)

        self.run_off(read, done, name="hotplug:refresh")


def _detach(conn: Any, vm_id: str, device: str, failure: type[HostvisorError]) -> int:
    """Ask libvirt to detach `device`; 0 once asked (blocks; the guest releases it later).

    Raises:
        NoSuchVm: no such domain. `failure`: libvirt refused the detach.
    """
    domain = domain_of(conn, vm_id)
    try:
        domain.detachDeviceFlags(device, LIVE)
    except libvirt.libvirtError as error:
        alias = hx.alias_of(ET.fromstring(device))  # noqa: S314 - our own XML
        raise refused(vm_id, error, failure, alias=alias) from None
    return 0
