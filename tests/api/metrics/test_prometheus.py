"""The metrics endpoint, scraped by a real Prometheus server (Debian's `prometheus`).

The test starts Prometheus itself (stopped by that pid), points it at an embedded
host running a real guest, kills that guest's actor once, and asks Prometheus' HTTP
API for the VM's CPU series and the actor's restart counter.
"""

from __future__ import annotations

import json
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.components import need
from harness.daemons import Daemon
from harness.guests import Guests
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from harness.waiting import wait_for
from hostvisor.actors.actor import Kill
from hostvisor.actors.errors import NotFound
from hostvisor.actors.vm.addresses import vm_path
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.metrics.endpoint import METRICS_ID

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def metrics_port(host: EmbeddedHost) -> int:
    endpoint = host.registry.lookup(f"api/{METRICS_ID}")
    address: tuple[str, int] = endpoint.proxy().address().get(timeout=5)
    return address[1]


def restarts(host: EmbeddedHost, path: str) -> int:
    """The restarts of the child at `path`; -1 while it is between incarnations."""
    try:
        return host.registry.status(path).restarts.count
    except NotFound:
        return -1


def state(host: EmbeddedHost, path: str) -> str:
    """The state of the actor at `path`; "gone" while it is between incarnations."""
    try:
        return host.registry.status(path).state
    except NotFound:
        return "gone"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    settings = {**VM_TEST_SETTINGS, "metrics_address": "127.0.0.1:0"}
    with embedded_host(tmp_path_factory, embed_root, **settings) as running:
        yield running


@pytest.fixture
def vm_id(host: EmbeddedHost, tmp_path: Path, accelerator: Any) -> Iterator[str]:
    vm, xml = Guests(tmp_path, accelerator.domain_type).xml("scraped")
    with host.client() as cli:
        cli.VM.create(vmID=vm, vmParams={"xml": xml})
        wait_for(lambda: cli.VM.getStats(vmID=vm)[0]["status"] == "Up", 60, "the guest up")
        try:
            yield vm
        finally:
            cli.VM.destroy(vmID=vm)


class Prometheus:
    """A Prometheus server scraping one target every second, stopped by its pid."""

    def __init__(self, directory: Path, target: str) -> None:
        self.port = _free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: hostvisor\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        argv = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.daemon = Daemon(argv, directory / "prometheus.log")
        self.daemon.wait_ready(self._ready, timeout=60)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> int:
        return self.daemon.stop()


@pytest.fixture
def prometheus(host: EmbeddedHost, tmp_path: Path) -> Iterator[Prometheus]:
    need(Path(PROMETHEUS).exists(), "Debian's prometheus is not installed")
    server = Prometheus(tmp_path, f"127.0.0.1:{metrics_port(host)}")
    try:
        yield server
    finally:
        server.stop()


def test_prometheus_reads_a_vms_cpu_and_an_actor_restart(
    host: EmbeddedHost, vm_id: str, prometheus: Prometheus
) -> None:
    path = vm_path(vm_id)
    host.registry.lookup(path).tell(Kill("drill"))
    wait_for(lambda: restarts(host, path) == 1, 20, "the VM actor restarted")
    wait_for(lambda: state(host, path) == "running", 20, "the VM actor running")

    up = wait_for(lambda: prometheus.query('up{job="hostvisor"} == 1'), 60, "a successful scrape")
    assert up[0]["value"][1] == "1"
    cpu = wait_for(
        lambda: prometheus.query(f'hostvisor_vm_cpu_seconds_total{{vm_id="{vm_id}"}}'),
        60,
        "the VM's CPU series",
    )
    assert cpu[0]["metric"]["vm_name"] == "scraped"
    assert float(cpu[0]["value"][1]) > 0  # a KVM/TCG guest that ran its BIOS used CPU
    counted = wait_for(
        lambda: prometheus.query(f'hostvisor_actor_restarts_total{{path="{path}"}} == 1'),
        60,
        "the VM actor's restart counter",
    )
    assert counted[0]["metric"]["actor_class"] == "VmActor"
    status = prometheus.query(f'hostvisor_vm_status{{vm_id="{vm_id}"}}')
    assert status[0]["metric"]["status"] in {"Up", "Powering up"}
    handling = prometheus.query('hostvisor_actor_handling_seconds_count{path="hosts/host"}')
    assert float(handling[0]["value"][1]) > 0
