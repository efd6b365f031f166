"""Host.setupNetworks as the Engine calls it, on a namespace whose NICs are veth pairs.

Every failure must leave the namespace exactly as it was: the tests compare its
whole netlink state (links, addresses, routes) before and after.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from harness.netns import MANAGEMENT, NO_CHECK, TestNamespace, ip, kernel_refuses
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

CONNECTIVITY_LOST, BAD_PARAMS, BAD_ADDR, BAD_NIC, USED_NIC = 10, 21, 22, 23, 24
BAD_BONDING, BAD_VLAN, BAD_BRIDGE, FAILED_IFUP, BUSY = 25, 26, 27, 29, 40


def _error(call: Any, **params: Any) -> ServerError:
    with pytest.raises(ServerError) as raised:
        call(**params)
    return raised.value


def _setup(cli: Client, networks: dict[str, Any], bondings: dict[str, Any] | None = None,
           **options: Any) -> Any:  # fmt: skip
    return cli.Host.setupNetworks(
        networks=networks, bondings=bondings or {}, options={**NO_CHECK, **options}
    )


# -- creating, changing, removing ------------------------------------------------------------


def test_bridged_network_with_static_addresses(cli: Client, netns: TestNamespace):
    assert _setup(cli, {"ovirtmgmt": MANAGEMENT}) == {"code": 0, "message": "Done"}

    links = netns.links()
    assert links["ovirtmgmt"]["kind"] == "bridge"
    assert links["eth0"]["master"] == "ovirtmgmt"
    assert links["ovirtmgmt"]["up"]
    assert links["eth0"]["up"]
    assert netns.addresses()["ovirtmgmt"] == ["192.0.2.10/24", "2001:db8::10/64"]
    routes = netns.routes()
    assert ("-4", "default", "ovirtmgmt", "192.0.2.1", "main", "static") in routes
    assert ("-6", "default", "ovirtmgmt", "2001:db8::1", "main", "static") in routes

    caps = cli.Host.getNetworkCapabilities()
    net = caps["networks"]["ovirtmgmt"]
    assert net["bridged"] is True
    assert (net["iface"], net["ports"], net["southbound"]) == ("ovirtmgmt", ["eth0"], "eth0")
    assert (net["addr"], net["netmask"], net["gateway"]) == ("192.0.2.10", "255.255.255.0",
                                                             "192.0.2.1")  # fmt: skip
    assert net["ipv4defaultroute"] is True
    assert net["ipv6addrs"] == ["2001:db8::10/64"]
    assert net["ipv6gateway"] == "2001:db8::1"
    assert net["mtu"] == "1500"
    assert caps["bridges"]["ovirtmgmt"]["ports"] == ["eth0"]
    assert caps["netConfigDirty"] == "True"
    assert cli.Host.getCapabilities()["networks"]["ovirtmgmt"]["iface"] == "ovirtmgmt"
    assert cli.Host.getStats()["netConfigDirty"] == "True"


def test_bridgeless_network_on_a_nic(cli: Client, netns: TestNamespace):
    _setup(cli, {"storage": {"nic": "eth1", "bridged": False, "ipaddr": "198.51.100.5",
                             "prefix": 24, "mtu": 9000}})  # fmt: skip

    assert "storage" not in netns.links()
    assert netns.links()["eth1"]["mtu"] == 9000
    assert netns.addresses()["eth1"] == ["198.51.100.5/24"]
    net = cli.Host.getNetworkCapabilities()["networks"]["storage"]
    assert (net["bridged"], net["iface"], net["interface"]) == (False, "eth1", "eth1")
    assert net["mtu"] == "9000"


def test_change_mtu_and_address_in_place(cli: Client, netns: TestNamespace):
    _setup(cli, {"ovirtmgmt": MANAGEMENT})
    bridge_mac = netns.links()["ovirtmgmt"]["mac"]
    index = netns.json("link", "show", "ovirtmgmt")[0]["ifindex"]

    changed = {**MANAGEMENT, "mtu": 9000, "ipaddr": "192.0.2.20", "netmask": "255.255.255.128"}
    _setup(cli, {"ovirtmgmt": changed})

    links = netns.links()
    assert (links["ovirtmgmt"]["mtu"], links["eth0"]["mtu"]) == (9000, 9000)
    assert netns.addresses()["ovirtmgmt"] == ["192.0.2.20/25", "2001:db8::10/64"]
    assert netns.json("link", "show", "ovirtmgmt")[0]["ifindex"] == index  # not remade
    assert links["ovirtmgmt"]["mac"] == bridge_mac
    net = cli.Host.getNetworkCapabilities()["networks"]["ovirtmgmt"]
    assert (net["mtu"], net["addr"], net["netmask"]) == ("9000", "192.0.2.20", "255.255.255.128")


def test_remove_a_network_puts_the_nic_back(cli: Client, netns: TestNamespace):
    _setup(cli, {"ovirtmgmt": {**MANAGEMENT, "mtu": 9000}})
    _setup(cli, {"ovirtmgmt": {"remove": True}})

    links = netns.links()
    assert "ovirtmgmt" not in links
    assert (links["eth0"]["master"], links["eth0"]["mtu"]) == (None, 1500)
    assert netns.routes() == []
    caps = cli.Host.getNetworkCapabilities()
    assert caps["networks"] == {}
    assert "ovirtmgmt" not in caps["bridges"]


def test_move_a_network_to_another_nic(cli: Client, netns: TestNamespace):
    _setup(cli, {"ovirtmgmt": MANAGEMENT})
    _setup(cli, {"ovirtmgmt": {**MANAGEMENT, "nic": "eth2"}})

    links = netns.links()
    assert (links["eth0"]["master"], links["eth2"]["master"]) == (None, "ovirtmgmt")
    assert cli.Host.getNetworkCapabilities()["networks"]["ovirtmgmt"]["ports"] == ["eth2"]


# -- all or nothing ------------------------------------------------------------------------


def test_a_kernel_failure_in_the_middle_rolls_everything_back(cli: Client, netns: TestNamespace):
    _setup(cli, {"ovirtmgmt": MANAGEMENT})
    # The kernel refuses IPv6 addresses on eth1: nothing in the request says so.
    ip("netns", "exec", netns.name, "sysctl", "-qw", "net.ipv6.conf.eth1.disable_ipv6=1")
    before = netns.state()

    error = _error(
        _setup,
        cli=cli,
        networks={
            "first": {"nic": "eth2", "ipaddr": "203.0.113.2", "prefix": 24, "mtu": 4000},
            "ovirtmgmt": {**MANAGEMENT, "mtu": 9000, "ipaddr": "192.0.2.99"},
            "broken": {"nic": "eth1", "bridged": False, "ipv6addr": "2001:db8:1::5/64"},
            "last": {"bridged": True, "stp": True},
        },
    )

    assert error.code == FAILED_IFUP
    assert "2001:db8:1::5/64" in error.message
    assert "Permission denied" in error.message  # the kernel's reason
    assert netns.state() == before
    caps = cli.Host.getNetworkCapabilities()
    assert set(caps["networks"]) == {"ovirtmgmt"}
    assert caps["networks"]["ovirtmgmt"]["addr"] == "192.0.2.10"


def test_vlan_networks(cli: Client, netns: TestNamespace):
    refused = kernel_refuses("vlan")
    if refused is not None:
        pytest.skip(f"this kernel cannot make VLANs: {refused}")
    _setup(cli, {"tagged": {"nic": "eth1", "vlan": 5, "ipaddr": "198.51.100.7", "prefix": 24}})

    links = netns.links()
    assert links["eth1.5"]["kind"] == "vlan"
    assert links["eth1.5"]["master"] == "tagged"
    net = cli.Host.getNetworkCapabilities()["networks"]["tagged"]
    assert (net["vlanid"], net["southbound"]) == (5, "eth1.5")


def test_a_vlan_the_kernel_cannot_make_is_refused_cleanly(cli: Client, netns: TestNamespace):
    refused = kernel_refuses("vlan")
    if refused is None:
        pytest.skip("this kernel makes VLANs (see test_vlan_networks)")
    before = netns.state()

    error = _error(
        _setup,
        cli=cli,
        networks={"first": {"nic": "eth0"}, "tagged": {"nic": "eth1", "vlan": 5}},
    )

    assert error.code == BAD_VLAN
    assert refused in error.message
    assert netns.state() == before


def test_bonds(cli: Client, netns: TestNamespace):
    refused = kernel_refuses("bond")
    if refused is not None:
        pytest.skip(f"this kernel cannot make bonds: {refused}")
    _setup(
        cli,
        {"bonded": {"bonding": "bond0", "ipaddr": "198.51.100.9", "prefix": 24}},
        {"bond0": {"nics": ["eth1", "eth2"], "options": "mode=1 miimon=100"}},
    )

    links = netns.links()
    assert (links["eth1"]["master"], links["eth2"]["master"]) == ("bond0", "bond0")
    bond = cli.Host.getNetworkCapabilities()["bondings"]["bond0"]
    assert bond["slaves"] == ["eth1", "eth2"]
    assert bond["opts"]["mode"] == "1"
    error = _error(_setup, cli=cli, networks={}, bondings={"bond0": {"remove": True}})
    assert error.code == 31  # the bond carries a network


def test_a_bond_the_kernel_cannot_make_is_refused_cleanly(cli: Client, netns: TestNamespace):
    refused = kernel_refuses("bond")
    if refused is None:
        pytest.skip("this kernel makes bonds (see test_bonds)")
    before = netns.state()

    error = _error(
        _setup,
        cli=cli,
        networks={"bonded": {"bonding": "bond0"}},
        bondings={"bond0": {"nics": ["eth1", "eth2"], "options": "mode=4 miimon=100"}},
    )

    assert error.code == BAD_BONDING
    assert refused in error.message
    assert netns.state() == before


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "bondings", "code"),
    [
        ({"net": {"nic": "nosuch0"}}, {}, BAD_NIC),
        ({"net": {"nic": "lo"}}, {}, BAD_NIC),
        ({"net": {"nic": "eth1", "ipaddr": "192.0.2.300", "prefix": 24}}, {}, BAD_ADDR),
        ({"net": {"nic": "eth1", "ipaddr": "192.0.2.3", "netmask": "255.0.255.0"}}, {}, BAD_ADDR),
        ({"net": {"nic": "eth1", "ipv6addr": "2001:db8::zz/64"}}, {}, BAD_ADDR),
        ({"net": {"nic": "eth1", "mtu": 70000}}, {}, BAD_PARAMS),
        ({"net": {"nic": "eth1", "vlan": 5000}}, {}, BAD_VLAN),
        ({"net": {"nic": "eth0"}}, {}, USED_NIC),  # ovirtmgmt is on eth0
        ({"peth1": {"nic": "eth1"}}, {}, BAD_BRIDGE),  # a device of that name exists
        ({"a b": {"nic": "eth1"}}, {}, BAD_BRIDGE),
        ({"nosuch": {"remove": True}}, {}, BAD_BRIDGE),
        ({"net": {"bonding": "bond7"}}, {}, BAD_BONDING),
        ({}, {"bond1": {"nics": ["eth1"], "options": "mode=9"}}, BAD_BONDING),
        ({}, {"bond1": {"nics": ["eth0", "eth1"]}}, USED_NIC),
        ({"net": {"nic": "eth1", "bootproto": "dhcp"}}, {}, BAD_PARAMS),
        ({"net": {"nic": "eth1", "gateway": "198.51.100.1"}}, {}, BAD_ADDR),  # no ipaddr
        ({"net": {"nic": "eth1", "defaultRoute": True}}, {}, BAD_PARAMS),  # a second one
    ],
)
def test_bad_input_gets_vdsm_codes_and_changes_nothing(
    cli: Client, netns: TestNamespace, networks: Any, bondings: Any, code: int
):
    _setup(cli, {"ovirtmgmt": MANAGEMENT})
    before = netns.state()

    error = _error(_setup, cli=cli, networks=networks, bondings=bondings)

    assert error.code == code, error.message
    assert netns.state() == before
    assert set(cli.Host.getNetworkCapabilities()["networks"]) == {"ovirtmgmt"}


# -- the connectivity check ------------------------------------------------------------------


def test_no_confirmation_in_time_rolls_back_with_code_10(cli: Client, netns: TestNamespace):
    before = netns.state()

    error = _error(
        cli.Host.setupNetworks,
        networks={"ovirtmgmt": MANAGEMENT},
        bondings={},
        options={"connectivityCheck": True, "connectivityTimeout": 1},
    )

    assert error.code == CONNECTIVITY_LOST
    assert netns.state() == before
    assert cli.Host.getNetworkCapabilities()["networks"] == {}


def _setup_in_background(host: EmbeddedHost, networks: dict[str, Any], timeout: float) -> Any:
    """Call setupNetworks with a connectivity check from another client; return its outcome."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        with host.client() as engine:
            try:
                outcome["result"] = engine.Host.setupNetworks(
                    networks=networks,
                    bondings={},
                    options={"connectivityCheck": True, "connectivityTimeout": timeout},
                )
            except ServerError as error:
                outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("verb", ["confirmConnectivity", "ping"])
def test_confirmation_in_time_keeps_the_change(
    host: EmbeddedHost, cli: Client, netns: TestNamespace, verb: str
):
    thread, outcome = _setup_in_background(host, {"ovirtmgmt": MANAGEMENT}, timeout=60)
    wait_for(lambda: "192.0.2.10/24" in netns.addresses().get("ovirtmgmt", []), 10, "the bridge")
    assert thread.is_alive()  # waiting for the confirmation

    assert getattr(cli.Host, verb)() is True
    thread.join(timeout=10)

    assert outcome == {"result": {"code": 0, "message": "Done"}}
    assert netns.addresses()["ovirtmgmt"] == ["192.0.2.10/24", "2001:db8::10/64"]
    assert set(cli.Host.getNetworkCapabilities()["networks"]) == {"ovirtmgmt"}


def test_a_second_setup_while_one_runs_gets_code_40(
    host: EmbeddedHost, cli: Client, netns: TestNamespace
):
    thread, outcome = _setup_in_background(host, {"ovirtmgmt": MANAGEMENT}, timeout=60)
    wait_for(lambda: "ovirtmgmt" in netns.links(), 10, "the bridge")

    error = _error(_setup, cli=cli, networks={"other": {"nic": "eth1"}})
    assert error.code == BUSY
    assert _error(cli.Host.setSafeNetworkConfig).code == BUSY

    cli.Host.confirmConnectivity()
    thread.join(timeout=10)
    assert outcome == {"result": {"code": 0, "message": "Done"}}
    assert "other" not in netns.links()
    _setup(cli, {"other": {"nic": "eth1"}})  # and the next one goes through
    assert netns.links()["eth1"]["master"] == "other"
