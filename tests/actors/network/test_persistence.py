"""The running network config is persisted; the safe one comes back after a boot.

A boot, for a namespace, is the namespace made anew with the same NICs
(`TestNamespace.reboot`): every bridge, address and route is gone.
"""

from __future__ import annotations

from pathlib import Path

from harness.netns import MANAGEMENT, NO_CHECK, TestNamespace, network_host

STORAGE_NET = {"nic": "eth1", "bridged": False, "ipaddr": "198.51.100.5", "prefix": 24}


def test_safe_config_is_restored_after_a_boot(state_dir: Path, netns: TestNamespace):
    with network_host(state_dir, netns) as host, host.client() as cli:
        cli.Host.setupNetworks(networks={"ovirtmgmt": MANAGEMENT}, bondings={}, options=NO_CHECK)
        assert cli.Host.getNetworkCapabilities()["netConfigDirty"] == "True"
        assert cli.Host.setSafeNetworkConfig() is True
        assert cli.Host.getNetworkCapabilities()["netConfigDirty"] == "False"
        # A change made after the config was marked safe is not kept across a boot.
        cli.Host.setupNetworks(networks={"storage": STORAGE_NET}, bondings={}, options=NO_CHECK)
        assert cli.Host.getStats()["netConfigDirty"] == "True"
        configured = netns.state()

    netns.reboot()
    assert "ovirtmgmt" not in netns.links()

    with network_host(state_dir, netns) as host, host.client() as cli:
        links = netns.links()
        assert links["ovirtmgmt"]["kind"] == "bridge"
        assert links["eth0"]["master"] == "ovirtmgmt"
        assert netns.addresses()["ovirtmgmt"] == configured["addresses"]["ovirtmgmt"]
        assert netns.addresses()["eth1"] == []
        assert [r for r in netns.routes() if r[2] == "ovirtmgmt"] == [
            r for r in configured["routes"] if r[2] == "ovirtmgmt"
        ]
        caps = cli.Host.getNetworkCapabilities()
        assert set(caps["networks"]) == {"ovirtmgmt"}
        assert caps["netConfigDirty"] == "False"


def test_an_agent_restart_without_a_boot_touches_nothing(state_dir: Path, netns: TestNamespace):
    with network_host(state_dir, netns) as host, host.client() as cli:
        cli.Host.setupNetworks(
            networks={"ovirtmgmt": MANAGEMENT, "storage": STORAGE_NET},
            bondings={},
            options=NO_CHECK,
        )
        before = netns.state()
        index = netns.json("link", "show", "ovirtmgmt")[0]["ifindex"]

    with network_host(state_dir, netns) as host, host.client() as cli:
        assert netns.state() == before
        assert netns.json("link", "show", "ovirtmgmt")[0]["ifindex"] == index
        caps = cli.Host.getNetworkCapabilities()
        assert set(caps["networks"]) == {"ovirtmgmt", "storage"}
        assert caps["netConfigDirty"] == "True"  # never marked safe


def test_commit_on_success_marks_the_config_safe(state_dir: Path, netns: TestNamespace):
    with network_host(state_dir, netns) as host, host.client() as cli:
        cli.Host.setupNetworks(
            networks={"ovirtmgmt": MANAGEMENT},
            bondings={},
            options={**NO_CHECK, "commitOnSuccess": True},
        )
        assert cli.Host.getNetworkCapabilities()["netConfigDirty"] == "False"
    assert (state_dir / "netconf" / "safe.json").exists()
