"""The libvirt harness and HypervisorActor on real libvirt."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import libvirt
import pytest

from harness.guests import domain_xml, make_halting_base, make_overlay
from hostvisor.actors.actor import Link
from hostvisor.actors.hypervisor.actor import HypervisorActor
from hostvisor.actors.hypervisor.connection import Accelerator, open_connection


@pytest.mark.kvm
@pytest.mark.libvirt
def test_a_real_64_mib_guest_starts_and_is_destroyed(qemu_embed, accelerator, tmp_path: Path):
    base = make_halting_base(tmp_path)
    disk = make_overlay(base, tmp_path / "smoke.qcow2")
    vm_id = str(uuid.uuid4())
    xml = domain_xml(name="smoke", uuid=vm_id, disk=disk, domain_type=accelerator.domain_type)

    domain = qemu_embed.createXML(xml, 0)

    state, _reason = domain.state()
    assert state == libvirt.VIR_DOMAIN_RUNNING
    assert domain.UUIDString() == vm_id
    assert domain.maxMemory() == 64 * 1024
    stats = domain.getCPUStats(True)[0]
    assert stats["cpu_time"] > 0
    domain.destroy()
    with pytest.raises(libvirt.libvirtError):
        qemu_embed.lookupByUUIDString(vm_id)


@pytest.mark.libvirt
def test_test_driver_has_its_default_domain(libvirt_test):
    assert [d.name() for d in libvirt_test.listAllDomains()] == ["test"]


@pytest.mark.libvirt
def test_hypervisor_actor_opens_and_closes_its_connection(embed_root: Path):
    link = Link(path="infra/hypervisor")
    ref = HypervisorActor.spawn(link, uri="", embed_root=embed_root)
    link.started.get(timeout=30)
    info = ref.proxy().info().get(timeout=5)
    assert info.uri.startswith("qemu:///embed")
    assert info.driver == "QEMU"
    assert info.accelerator in (Accelerator.KVM, Accelerator.TCG)
    assert (embed_root / "etc" / "qemu.conf").exists()
    conn = ref.proxy().connection().get(timeout=5)
    assert conn.isAlive()
    ref.stop(block=True, timeout=10)
    with pytest.raises(libvirt.libvirtError):
        conn.getURI()


@pytest.mark.libvirt
def test_an_expected_libvirt_error_raises_and_prints_nothing():
    # A fresh interpreter, as the agent runs: libvirt's own handler would print
    # "libvirt: ... Domain not found" on stderr (the journal, under systemd) for every
    # error, also those the agent expects and handles.
    script = (
        "import libvirt\n"
        "from hostvisor.actors.hypervisor.connection import open_connection\n"
        "conn = open_connection('test:///default')\n"
        "try:\n"
        "    conn.lookupByName('no-such-domain')\n"
        "except libvirt.libvirtError as error:\n"
        "    print(error.get_error_code())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == str(libvirt.VIR_ERR_NO_DOMAIN)  # it still raises
    assert done.stderr == ""


@pytest.mark.libvirt
def test_closing_a_handle_never_frees_a_connection_a_call_still_uses():
    conn = open_connection("test:///default")
    in_flight = conn.listAllDomains  # a worker inside a call holds what it called
    conn.close()  # the owner closes (the hypervisor actor killed meanwhile)
    assert [d.name() for d in in_flight()] == ["test"]  # the call finishes on a live connection
    with pytest.raises(libvirt.libvirtError):
        conn.getURI()  # a new call through the closed handle is refused
