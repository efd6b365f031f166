"""Host.getLldp: real LLDP between two lldpd over a veth pair, and empty where none runs.

One end of the veth is in this namespace (the host's NIC, its lldpd restricted to
it and on a private control socket), the other in a test namespace where a
second lldpd stands for the switch. Both daemons are stopped by their pids.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.components import need
from harness.daemons import Daemon
from harness.hosts import embedded_host
from harness.waiting import wait_for
from hostvisor.actors.actor import Link
from hostvisor.actors.admin import lldp
from hostvisor.actors.admin.addresses import DEVICES
from hostvisor.actors.admin.devices import DevicesActor
from hostvisor.actors.admin.proxy import DevicesProxy
from hostvisor.actors.runtime import Runtime
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost

SWITCH_DESCRIPTION = "hostvisor test switch"


@dataclass(frozen=True)
class LldpPair:
    nic: str
    peer_nic: str
    peer_mac: str
    namespace: str
    socket: Path
    peer_socket: Path


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def lldp_pair() -> Iterator[LldpPair]:
    need(Path("/usr/sbin/lldpd").exists(), "lldpd is not installed")
    need(shutil.which("ip") is not None, "iproute2 is not installed")
    suffix = uuid.uuid4().hex[:6]
    namespace, nic, peer_nic = f"hvlldp{suffix}", f"hvl{suffix}", f"hvp{suffix}"
    # lldpcli is setuid _lldpd: the sockets' directory must be open to it (pytest's is 0700)
    directory = Path(tempfile.mkdtemp(prefix="hv-lldpd-", dir="/tmp"))
    directory.chmod(0o755)
    _ip("netns", "add", namespace)
    daemons: list[Daemon] = []
    try:
        _ip("link", "add", nic, "type", "veth", "peer", "name", peer_nic)
        _ip("link", "set", peer_nic, "netns", namespace)
        _ip("link", "set", nic, "up")
        _ip("-n", namespace, "link", "set", peer_nic, "up")
        peer_mac = json.loads(_ip("-j", "-n", namespace, "link", "show", peer_nic))[0]["address"]
        socket, peer_socket = directory / "host.sock", directory / "switch.sock"
        host_argv = ["/usr/sbin/lldpd", "-d", "-u", str(socket), "-p", str(directory / "host.pid"),
                     "-I", nic]  # fmt: skip
        switch_argv = ["ip", "netns", "exec", namespace, "/usr/sbin/lldpd", "-d", "-u",
                       str(peer_socket), "-p", str(directory / "switch.pid"), "-I", peer_nic,
                       "-S", SWITCH_DESCRIPTION]  # fmt: skip
        daemons.append(Daemon(host_argv, directory / "host.log"))
        daemons.append(Daemon(switch_argv, directory / "switch.log"))
        for daemon, path in zip(daemons, (socket, peer_socket), strict=True):
            daemon.wait_ready(path.exists, timeout=20)
        yield LldpPair(nic, peer_nic, peer_mac, namespace, socket, peer_socket)
    finally:
        for daemon in daemons:
            daemon.stop()
        subprocess.run(["ip", "link", "del", nic], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def devices_actor(lldp_pair) -> Iterator[pykka.ActorRef[Any]]:
    link = Link(path=DEVICES, runtime=Runtime.make())
    ref = DevicesActor.spawn(
        link, connection=lambda: None, lldp_agent=lldp.LldpdAgent(socket=lldp_pair.socket)
    )
    link.started.get(timeout=10)
    yield ref
    ref.stop()


def _announce(pair: LldpPair) -> None:
    """Ask the switch's lldpd to send an LLDPDU now (instead of in 30 s); may fail early on."""
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.namespace,
            lldp.LLDPCLI,
            "-u",
            str(pair.peer_socket),
            "update",
        ],
        check=False,
        capture_output=True,
    )


def test_a_neighbours_lldp_arrives_as_vdsms_tlvs(lldp_pair, devices_actor):
    proxy = DevicesProxy(devices_actor)

    def neighbour() -> dict[str, Any] | None:
        _announce(lldp_pair)
        info = proxy.lldp((lldp_pair.nic,)).get(timeout=20)[lldp_pair.nic]
        return info if info["tlvs"] else None

    info = wait_for(neighbour, 30, "the switch's LLDPDU")
    assert info["enabled"] is True
    tlvs = {tlv["name"]: tlv for tlv in info["tlvs"]}
    assert tlvs["Chassis ID"]["type"] == 1
    assert tlvs["Chassis ID"]["properties"] == {
        "chassis ID subtype": "MAC",
        "chassis ID": lldp_pair.peer_mac,
    }
    assert tlvs["Port ID"]["properties"]["port ID"] == lldp_pair.peer_mac
    assert tlvs["Port Description"]["properties"] == {"port description": lldp_pair.peer_nic}
    assert tlvs["System Description"]["properties"] == {"system description": SWITCH_DESCRIPTION}
    assert tlvs["Time to Live"]["properties"] == {"time to live": "120"}
    assert tlvs["System Name"]["type"] == 5
    assert "Station" in tlvs["System Capabilities"]["properties"]["enabled capabilities"]
    for tlv in info["tlvs"]:
        assert set(tlv) <= {"type", "name", "properties", "oui", "subtype"}
        assert all(isinstance(value, str) for value in tlv["properties"].values())


def test_a_nic_lldpd_does_not_manage_is_not_enabled(lldp_pair, devices_actor):
    info = DevicesProxy(devices_actor).lldp(("lo",)).get(timeout=20)
    assert info == {"lo": {"enabled": False, "tlvs": []}}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root) as running:
        yield running


@pytest.mark.libvirt
def test_without_an_lldp_daemon_every_nic_reports_lldp_off(host: EmbeddedHost):
    need(not lldp.LLDPD_SOCKET.exists(), "an lldpd runs on this machine")
    with host.client() as cli:
        everything = cli.Host.getLldp(filter={})
        assert set(everything) == set(lldp.nics())
        assert all(entry == {"enabled": False, "tlvs": []} for entry in everything.values())
        assert cli.Host.getLldp(filter={"devices": ["lo"]}) == {
            "lo": {"enabled": False, "tlvs": []}
        }


@pytest.mark.libvirt
def test_get_lldp_refuses_bad_input(host: EmbeddedHost):
    bad = (
        ({"filter": {"devices": ["no-such-nic0"]}}, 100),
        ({"filter": {"devices": ["../../etc"]}}, 100),
        ({"filter": {"devices": [1]}}, 91),
        ({"filter": {"nics": ["lo"]}}, 91),
        ({"filter": {"devices": "lo"}}, -32602),
        ({"filter": "lo"}, -32602),
        ({}, -32602),
    )
    with host.client() as cli:
        for params, code in bad:
            with pytest.raises(ServerError) as raised:
                cli.call("Host.getLldp", params)
            assert raised.value.code == code, params
