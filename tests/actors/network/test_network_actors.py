"""One NetworkActor per network; link changes become `|net|host_conn|no_id` events."""

from __future__ import annotations

import queue

from harness.netns import MANAGEMENT, NO_CHECK, TestNamespace
from harness.waiting import wait_for
from hostvisor.actors.actor import call
from hostvisor.api.client import Client
from hostvisor.api.embedded import EmbeddedHost

HOST_CONN = "|net|host_conn|no_id"


def _networks(host: EmbeddedHost) -> set[str]:
    return {path.rsplit("/", 1)[-1] for path in host.registry.status("networks/nets").children}


def test_an_actor_per_network_follows_setup_networks(host: EmbeddedHost, cli: Client):
    cli.Host.setupNetworks(
        networks={"ovirtmgmt": MANAGEMENT, "storage": {"nic": "eth1", "bridged": False}},
        bondings={},
        options=NO_CHECK,
    )
    assert _networks(host) == {"ovirtmgmt", "storage"}
    status = call(host.registry.lookup("networks/nets/ovirtmgmt"), "status").get(timeout=5)
    assert status.devices == ("eth0", "ovirtmgmt")

    cli.Host.setupNetworks(networks={"storage": {"remove": True}}, bondings={}, options=NO_CHECK)
    assert _networks(host) == {"ovirtmgmt"}


def test_a_link_going_down_sends_the_host_conn_event(
    host: EmbeddedHost, cli: Client, netns: TestNamespace
):
    cli.Host.setupNetworks(networks={"ovirtmgmt": MANAGEMENT}, bondings={}, options=NO_CHECK)
    nic = host.registry.lookup("networks/nets/ovirtmgmt")
    wait_for(lambda: call(nic, "status").get(timeout=5).up, 10, "ovirtmgmt up")
    events: queue.Queue = queue.Queue()
    cli.subscribe("jms.queue.events", events)
    cli.Host.ping()  # the subscription is in place once a later request is answered

    netns.ip("link", "set", "peth0", "down")  # the cable is pulled at the other end

    method, params = events.get(timeout=10)
    assert method == HOST_CONN
    assert params["notify_time"] > 2**31
    wait_for(lambda: not call(nic, "status").get(timeout=5).up, 10, "ovirtmgmt down")


def test_network_actors_are_remade_when_the_configurator_restarts(host: EmbeddedHost, cli: Client):
    cli.Host.setupNetworks(networks={"ovirtmgmt": MANAGEMENT}, bondings={}, options=NO_CHECK)
    host.registry.lookup("networks/nets").stop()  # kill the network actors' supervisor

    wait_for(lambda: host.registry.get("networks/nets/ovirtmgmt") is not None, 10, "the actor")
    assert cli.Host.getNetworkCapabilities()["networks"]["ovirtmgmt"]["ports"] == ["eth0"]
