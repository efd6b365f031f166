"""The whole host in-process, reached the way the Engine reaches it."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.hosts import embedded_host
from hostvisor.actors.events import NOTIFY_TIME_BASE, Event, Publish
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root, host_sample_interval=0.2) as running:
        yield running


@pytest.mark.libvirt
def test_capabilities_describe_this_machine(host: EmbeddedHost):
    with host.client() as cli:
        caps = cli.Host.getCapabilities()
    assert caps["cpuThreads"] == str(psutil.cpu_count())
    assert caps["memSize"] == str(psutil.virtual_memory().total // 2**20)
    assert caps["kvmEnabled"] == ("true" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "false")
    assert any(flag.startswith("model_") for flag in caps["cpuFlags"].split(","))
    assert caps["lastClientIface"] == "lo"
    assert "lo" not in caps["nics"]
    assert caps["containers"] is False


@pytest.mark.libvirt
def test_stats_come_from_samples(host: EmbeddedHost):
    with host.client() as cli:
        stats = cli.Host.getStats()
    assert 0.0 <= float(stats["cpuIdle"]) <= 100.0
    assert isinstance(stats["memFree"], int)
    assert stats["vmCount"] == 0
    assert float(stats["elapsedTime"]) >= 0


@pytest.mark.libvirt
def test_an_event_told_to_the_bus_reaches_a_subscribed_client(host: EmbeddedHost):
    events: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
    with host.client() as cli:
        cli.subscribe("jms.queue.events", events)
        cli.Host.ping()  # the SUBSCRIBE is in place once a later request is answered
        bus = host.registry.lookup("infra/events")
        bus.tell(Publish(Event(method="|virt|VM_status|vm-1", params={"vm-1": {"status": "Up"}})))
        method, params = events.get(timeout=10)
    assert method == "|virt|VM_status|vm-1"
    assert params["vm-1"] == {"status": "Up"}
    assert isinstance(params["notify_time"], int)
    assert params["notify_time"] > NOTIFY_TIME_BASE


@pytest.mark.libvirt
def test_errors_arrive_as_exceptions_with_vdsm_codes(host: EmbeddedHost):
    with host.client() as cli:
        with pytest.raises(ServerError) as raised:
            cli.Host.setLogLevel(level="LOUD")
        assert raised.value.code == 91  # InvalidParameter, raised by the handler
        with pytest.raises(ServerError) as raised:
            cli.VM.getStats(vmID="nope")
        assert raised.value.code == 1
        assert "Virtual machine does not exist" in raised.value.message
        with pytest.raises(ServerError) as raised:
            cli.VM.teleport(vmID="nope")  # a verb this host does not declare
        assert raised.value.code == -32601
        assert cli.Host.getVMList() == []
