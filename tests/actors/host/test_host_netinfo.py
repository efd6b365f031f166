"""The network section of getCapabilities, on this host and in a private namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.components import need
from hostvisor.actors.host.netinfo import nameservers, network_caps

NIC_FIELDS = {
    "hwaddr": str,
    "speed": int,
    "mtu": str,
    "addr": str,
    "netmask": str,
    "ipv4addrs": list,
    "ipv6addrs": list,
    "gateway": str,
    "ipv6gateway": str,
    "dhcpv4": bool,
    "dhcpv6": bool,
    "ipv6autoconf": bool,
    "ipv4defaultroute": bool,
}


def _assert_device_types(device):
    for key, kind in NIC_FIELDS.items():
        if key in ("hwaddr", "speed") and key not in device:
            continue  # only NICs (and bonds) carry them
        assert type(device[key]) is kind, key


def test_this_hosts_network_caps_have_vdsm_types():
    caps = network_caps()

    assert caps["networks"] == {}
    assert caps["netConfigDirty"] == "False"
    assert type(caps["supportsIPv6"]) is bool
    assert "lo" not in caps["nics"]
    for section in ("nics", "bridges", "bondings", "vlans"):
        for device in caps[section].values():
            _assert_device_types(device)
    for nic in caps["nics"].values():
        assert set(NIC_FIELDS) <= set(nic)
    assert caps["nameservers"] == nameservers()
    assert json.loads(json.dumps(caps)) == caps


def test_nameservers_come_from_resolv_conf(tmp_path: Path):
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nsearch example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    )
    assert nameservers(conf) == ["192.0.2.53", "2001:db8::53"]
    assert nameservers(tmp_path / "absent") == []


# -- a private namespace with a bridge, a veth pair, addresses and routes -------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


@pytest.fixture
def netns() -> Iterator[str]:
    need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and iproute2")
    name = f"hvcaps-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        yield name
    finally:
        _ip("netns", "del", name, check=False)


def _caps_in(netns: str) -> dict:
    code = (
        "import json; from hostvisor.actors.host.netinfo import network_caps;"
        "print(json.dumps(network_caps()))"
    )
    run = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(run.stdout)


def _setup(netns: str) -> None:
    for command in (
        "link add va type veth peer name vb",
        "link add br0 type bridge",
        "link set vb master br0",
        "link set va mtu 1400",
        "link set va up",
        "link set vb up",
        "link set br0 up",
        "addr add 198.51.100.2/24 dev br0",
        "route add default via 198.51.100.1",
        "-6 addr add 2001:db8::2/64 dev va nodad",
        "-6 route add default via 2001:db8::1 dev va",
    ):
        _ip("-n", netns, *command.split())


def test_bridge_and_veth_nics_in_a_namespace(netns):
    _setup(netns)
    caps = _caps_in(netns)

    assert set(caps["nics"]) == {"va", "vb"}
    assert set(caps["bridges"]) == {"br0"}
    bridge = caps["bridges"]["br0"]
    assert bridge["ports"] == ["vb"]
    assert bridge["stp"] == "off"
    assert bridge["opts"]["forward_delay"].isdigit()
    assert bridge["addr"] == "198.51.100.2"
    assert bridge["netmask"] == "255.255.255.0"
    assert bridge["ipv4addrs"] == ["198.51.100.2/24"]
    assert bridge["gateway"] == "198.51.100.1"
    assert bridge["ipv4defaultroute"] is True
    assert bridge["dhcpv4"] is False
    va = caps["nics"]["va"]
    assert va["mtu"] == "1400"
    assert va["ipv6addrs"] == ["2001:db8::2/64"]
    assert va["ipv6gateway"] == "2001:db8::1"
    assert (va["gateway"], va["addr"], va["ipv4defaultroute"]) == ("", "", False)
    assert va["dhcpv6"] is False
    link = json.loads(_ip("-n", netns, "-j", "link", "show", "va").stdout)[0]
    assert va["hwaddr"] == link["address"]
    assert va["speed"] > 0  # veth reports 10000 Mb/s once up
    for device in (*caps["nics"].values(), bridge):
        _assert_device_types(device)


def test_vlans_and_bonds_in_a_namespace(netns):
    _setup(netns)
    vlan = _ip(
        "-n",
        netns,
        "link",
        "add",
        "link",
        "va",
        "name",
        "va.5",
        "type",
        "vlan",
        "id",
        "5",
        check=False,
    )
    if vlan.returncode:
        pytest.skip(f"this kernel has no VLANs: {vlan.stderr.strip()}")
    bond = _ip(
        "-n", netns, "link", "add", "bond0", "type", "bond", "mode", "active-backup", check=False
    )
    if bond.returncode:
        pytest.skip(f"this kernel has no bonding: {bond.stderr.strip()}")
    caps = _caps_in(netns)

    assert caps["vlans"]["va.5"]["iface"] == "va"
    assert caps["vlans"]["va.5"]["vlanid"] == 5
    assert caps["bondings"]["bond0"]["opts"]["mode"] == "1"
    assert caps["bondings"]["bond0"]["slaves"] == []
    assert caps["bondings"]["bond0"]["switch"] == "legacy"
