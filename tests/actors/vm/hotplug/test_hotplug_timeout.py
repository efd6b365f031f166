"""A device the guest never releases: the unplug fails after its timeout, the VM answers on.

A halting SeaBIOS guest runs no OS, so nothing answers the ACPI eject request: libvirt
gives up its own short wait, DEVICE_REMOVED never comes, and the VM actor fails the
unplug with VDSM's code once `UNPLUG_TIMEOUT` passes (30 s in VDSM and here; 3 s for
this test's actor). Meanwhile the actor keeps answering stats at once.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.guests import domain_xml, ethernet_nic, make_halting_base
from harness.waiting import wait_for
from hostvisor.actors.actor import Link, call
from hostvisor.actors.hypervisor.connection import open_connection
from hostvisor.actors.hypervisor.events import unwatch, watch_lifecycle
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.actor import VmActor, VmServices
from hostvisor.actors.vm.hotplug_errors import HotunplugNicFailed

pytestmark = [pytest.mark.libvirt, pytest.mark.kvm, pytest.mark.slow]


class ShortUnplug(VmActor):
    """A VM actor whose guests get 3 s to release a device."""

    UNPLUG_TIMEOUT = 3.0


def test_a_nic_never_released_fails_after_the_timeout_and_stats_answer_meanwhile(
    qemu_embed: Any, short_dir: Path, accelerator: Any
):
    vm_id = str(uuid.uuid4())
    overlay = short_dir / "disk.qcow2"
    base = make_halting_base(short_dir)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)],
        check=True,
    )
    mac = "52:54:00:48:33:77"
    xml = domain_xml(
        name="hotplug-stuck",
        uuid=vm_id,
        disk=overlay,
        domain_type=accelerator.domain_type,
        ovirt_metadata=True,
        nic=ethernet_nic(f"hvh3t{vm_id[:6]}", mac),
    ).replace("<devices>", "<features><acpi/></features><devices>")  # ACPI PCI hotplug
    conn = open_connection(qemu_embed.getURI())
    ref: pykka.ActorRef[Any] | None = None

    def deliver(event: Any) -> None:
        if event.vm_id == vm_id and ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(event)

    watch = watch_lifecycle(conn, deliver)
    link = Link(path=f"vms/guests/{vm_id}", runtime=Runtime.make())
    services = VmServices(connection=lambda: conn, publish=lambda _event: None)
    ref = ShortUnplug.spawn(link, spec=domxml.parse(xml), services=services, powering_up=0.0)
    try:
        link.started.get(timeout=10)
        wait_for(lambda: call(ref, "stats").get(timeout=5)["status"] == "Up", 30, "Up")
        unplug = (
            f'<hotunplug><devices><interface><mac address="{mac}"/></interface>'
            "</devices></hotunplug>"
        )
        started = time.monotonic()

        operation = call(ref, "hotunplugNic", unplug).get(timeout=5)
        settled = threading.Event()
        operation.add_done_callback(lambda _done: settled.set())

        slowest = 0.0
        while not settled.wait(0.2):
            asked = time.monotonic()
            assert call(ref, "stats").get(timeout=5)["status"] == "Up"
            slowest = max(slowest, time.monotonic() - asked)
        with pytest.raises(HotunplugNicFailed) as failed:
            operation.get(timeout=0)
        assert failed.value.code == 50
        assert "Timeout detaching" in str(failed.value)
        assert time.monotonic() - started >= ShortUnplug.UNPLUG_TIMEOUT
        assert slowest < 1.0  # the actor answered while the unplug waited
        live = call(ref, "definition").get(timeout=5)["xml"]
        assert mac in live  # the guest still has it
        assert ref.is_alive()
    finally:
        ref.stop()
        unwatch(conn, watch)
        with contextlib.suppress(Exception):
            conn.lookupByUUIDString(vm_id).destroy()
        conn.close()
