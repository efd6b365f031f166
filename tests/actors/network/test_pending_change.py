"""A change waiting for its connectivity check is recorded as pending, durably.

If the configurator crashes, or the agent goes away, before the Engine confirms,
the next start of the configurator finds the record and rolls the change back:
the kernel never keeps a change that the persisted running config does not have.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from harness.netns import MANAGEMENT, NO_CHECK, TestNamespace, network_host
from harness.waiting import wait_for
from hostvisor.actors.actor import call
from hostvisor.actors.errors import ActorCrashed
from hostvisor.actors.network.model import NetConfig
from hostvisor.actors.network.persistence import NetStore, Pending
from hostvisor.actors.network.rollback import Image
from hostvisor.api.client import Client, ClientClosed, ServerError
from hostvisor.api.embedded import EmbeddedHost

NETCONF = "networks/netconf"
GENERAL_EXCEPTION = 100
STORAGE_NET = {"nic": "eth1", "bridged": False, "ipaddr": "198.51.100.5", "prefix": 24}


def _setup_waiting(host: EmbeddedHost) -> tuple[threading.Thread, dict[str, Any]]:
    """Call setupNetworks with a long connectivity check from another client."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        with host.client() as engine:
            try:
                outcome["result"] = engine.Host.setupNetworks(
                    networks={"ovirtmgmt": MANAGEMENT},
                    bondings={},
                    options={"connectivityCheck": True, "connectivityTimeout": 120},
                )
            except (ServerError, ClientClosed) as error:
                outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_applied(netns: TestNamespace, store: NetStore) -> None:
    wait_for(lambda: "192.0.2.10/24" in netns.addresses().get("ovirtmgmt", []), 10, "the change")
    assert store.pending() is not None  # recorded before the first kernel step


def test_a_configurator_crash_while_waiting_for_connectivity_rolls_back(
    host: EmbeddedHost, cli: Client, netns: TestNamespace, state_dir: Path
):
    store = NetStore.under(state_dir)
    before = netns.state()
    thread, outcome = _setup_waiting(host)
    _wait_applied(netns, store)
    configurator = host.registry.lookup(NETCONF)

    with pytest.raises(ActorCrashed):  # a message it cannot handle: it crashes
        call(configurator, "confirm_connectivity", "unexpected").get(timeout=5)

    thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcome["error"].code == GENERAL_EXCEPTION  # told at once, not after 120 s
    assert "rolled back" in outcome["error"].message
    restarted = wait_for(
        lambda: (ref := host.registry.get(NETCONF)) is not None and ref != configurator and ref,
        30,
        "the configurator's restart",
    )
    assert netns.state() == before  # rolled back before the restarted one serves
    assert store.pending() is None
    assert store.running() == NetConfig()
    assert cli.Host.getNetworkCapabilities()["networks"] == {}
    assert call(restarted, "running_config").get(timeout=5) == NetConfig()
    # and the host takes changes again
    cli.Host.setupNetworks(networks={"storage": STORAGE_NET}, bondings={}, options=NO_CHECK)
    assert netns.addresses()["eth1"] == ["198.51.100.5/24"]


def test_an_agent_stopped_while_waiting_rolls_back_at_its_next_start(
    state_dir: Path, netns: TestNamespace
):
    store = NetStore.under(state_dir)
    before = netns.state()
    with network_host(state_dir, netns) as host:
        thread, outcome = _setup_waiting(host)
        _wait_applied(netns, store)
    thread.join(timeout=10)
    assert isinstance(outcome["error"], ClientClosed)  # the host went away (API first)
    assert "ovirtmgmt" in netns.links()  # nobody rolled it back: as after a kill
    assert store.pending() is not None

    with network_host(state_dir, netns) as host, host.client() as cli:
        assert netns.state() == before
        assert store.pending() is None
        assert cli.Host.getNetworkCapabilities()["networks"] == {}


def test_a_committed_change_is_kept_even_if_its_record_was_left(
    state_dir: Path, netns: TestNamespace
):
    store = NetStore.under(state_dir)
    with network_host(state_dir, netns) as host, host.client() as cli:
        cli.Host.setupNetworks(networks={"ovirtmgmt": MANAGEMENT}, bondings={}, options=NO_CHECK)
        configured = netns.state()
    # A crash between writing the running config and removing the record leaves this:
    image = Image(devices={"ovirtmgmt": None}, routes=frozenset())
    store.write_pending(Pending(before=NetConfig(), image=image))

    with network_host(state_dir, netns) as host, host.client() as cli:
        assert netns.state() == configured
        assert store.pending() is None
        assert set(cli.Host.getNetworkCapabilities()["networks"]) == {"ovirtmgmt"}
