"""A VM's NIC on a Hostvisor network: its tap device becomes a port of the network's bridge.

libvirt makes a guest's tap in the network namespace of the process that runs the
QEMU driver, and puts it on the bridge named in the domain XML there. So the whole
agent runs in the test's namespace: `hostvisor serve` under `ip netns exec`, with
its own embedded QEMU root, managing its own namespace (the default). The test
talks to it with a client whose socket is made inside the namespace.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import Daemon
from harness.guests import Guests
from harness.netns import NO_CHECK, TestNamespace
from harness.waiting import wait_for
from hostvisor.api.client import Client, connect

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt, pytest.mark.slow]

PORT = 54321  # the namespace is private: no other listener can hold it
TAP = "hvtap0"
MAC = "52:54:00:12:34:56"


def bridge_nic(bridge: str) -> str:
    """A virtio NIC on `bridge`, with a tap name the test can find."""
    return (
        f"<interface type='bridge'><mac address='{MAC}'/><source bridge='{bridge}'/>"
        f"<target dev='{TAP}'/><model type='virtio'/></interface>"
    )


@pytest.fixture
def agent(short_dir: Path, netns: TestNamespace) -> Iterator[Daemon]:
    """`hostvisor serve` running inside the test's namespace, stopped by its pid."""
    config = short_dir / "vdsm.conf"
    config.write_text(
        "[addresses]\nmanagement_ip = 127.0.0.1\n"
        f"management_port = {PORT}\n"
        f"[hostvisor]\nstate_dir = {short_dir / 'state'}\nvm_powering_up_seconds = 0\n"
    )
    hostvisor = str(Path(sys.executable).with_name("hostvisor"))
    daemon = Daemon(
        ["ip", "netns", "exec", netns.name, hostvisor, "serve", "--config", str(config)],
        short_dir / "agent.log",
    )
    try:
        daemon.wait_ready(lambda: _answers(netns), timeout=60)
        yield daemon
    finally:
        daemon.stop()


def _answers(netns: TestNamespace) -> bool:
    try:
        client = _client(netns)
    except OSError:
        return False
    client.close()
    return True


def _client(netns: TestNamespace) -> Client:
    return netns.run_inside(lambda: connect("127.0.0.1", PORT, timeout=60))


def test_a_vm_nic_is_a_port_of_the_network_bridge(
    agent: Daemon, netns: TestNamespace, tmp_path: Path, accelerator: Any
):
    with _client(netns) as cli:
        cli.Host.setupNetworks(
            networks={"vmnet": {"nic": "eth0", "bridged": True}}, bondings={}, options=NO_CHECK
        )
        vm_id, xml = Guests(tmp_path, accelerator.domain_type).xml("nicvm", nic=bridge_nic("vmnet"))
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        try:
            wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 60, "the VM up")

            links = netns.links()
            assert links[TAP]["master"] == "vmnet"
            assert links[TAP]["up"]
            caps = cli.Host.getNetworkCapabilities()
            assert sorted(caps["networks"]["vmnet"]["ports"]) == sorted(["eth0", TAP])
            assert sorted(caps["bridges"]["vmnet"]["ports"]) == sorted(["eth0", TAP])
        finally:
            cli.VM.destroy(vmID=vm_id)
        wait_for(lambda: TAP not in netns.links(), 30, "the tap gone")
        assert netns.links()["eth0"]["master"] == "vmnet"
