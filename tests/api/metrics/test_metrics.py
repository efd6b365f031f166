"""The metrics endpoint's text: names, types and labels, on a host of test-driver VMs."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.engine import LOCALFS, DataCenter, new_id
from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.actors.errors import InvalidArgument
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.metrics.endpoint import METRICS_ID, parse_address
from hostvisor.api.metrics.recorder import MAX_METHODS, OTHER, ApiRecorder
from hostvisor.supervision.config import load_config

pytestmark = [pytest.mark.libvirt]

VMS = 3


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHost]:
    directory = tmp_path_factory.mktemp("metrics")
    uri = write_test_node(directory / "node.xml", [td_domain_xml(name=f"m{n}") for n in range(VMS)])
    config = load_config(
        state_dir=directory / "state",
        libvirt_uri=uri,
        management_port=0,
        vm_sample_interval=0.5,
        host_sample_interval=0.5,
        vm_powering_up_seconds=0,
        metrics_address="127.0.0.1:0",
    )
    with EmbeddedHost(config) as running:
        yield running


def scrape(host: EmbeddedHost) -> dict[str, object]:
    ref = host.registry.lookup(f"api/{METRICS_ID}")
    _addr, port = ref.proxy().address().get(timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_families_follow_prometheus_conventions(host: EmbeddedHost) -> None:
    with host.client() as cli:
        wait_for(lambda: len(cli.Host.getAllVmStats()) == VMS, 30, "every VM listed")
    families = scrape(host)
    kinds = {name: family.type for name, family in families.items()}  # type: ignore[attr-defined]
    for counter in (
        "hostvisor_actor_messages_handled",
        "hostvisor_actor_restarts",
        "hostvisor_actor_busy_seconds",
        "hostvisor_vm_cpu_seconds",
        "hostvisor_host_network_receive_bytes",
        "hostvisor_api_requests",
        "hostvisor_api_errors",
        "hostvisor_scheduler_turns",
    ):
        assert kinds[counter] == "counter", counter
    assert kinds["hostvisor_actor_handling_seconds"] == "histogram"
    assert kinds["hostvisor_api_request_seconds"] == "histogram"
    assert kinds["hostvisor_actor_class_handling_seconds"] == "histogram"
    for gauge in (
        "hostvisor_actor_mailbox_depth",
        "hostvisor_host_cpu_ratio",
        "hostvisor_vm_status",
    ):
        assert kinds[gauge] == "gauge", gauge
    vms = families["hostvisor_vm_status"].samples  # type: ignore[attr-defined]
    assert len(vms) == VMS
    assert {s.labels["kind"] for s in vms} == {"vm"}
    assert {s.labels["vm_name"] for s in vms} == {f"m{n}" for n in range(VMS)}
    host_cpu = families["hostvisor_host_cpu_ratio"].samples  # type: ignore[attr-defined]
    assert {s.labels["mode"] for s in host_cpu} == {"user", "system", "idle"}
    assert all(0.0 <= s.value <= 1.0 for s in host_cpu)


def test_the_api_recorder_reaches_the_endpoint(host: EmbeddedHost) -> None:
    host.api_metrics.request("Host.ping", None, 0.0002)
    host.api_metrics.request("VM.getStats", 1, 0.003)
    host.api_metrics.connection_opened()
    families = scrape(host)
    calls = {s.labels["method"]: s.value for s in families["hostvisor_api_requests"].samples}  # type: ignore[attr-defined]
    assert calls["Host.ping"] >= 1
    errors = families["hostvisor_api_errors"].samples  # type: ignore[attr-defined]
    assert any(s.labels == {"method": "VM.getStats", "code": "1"} for s in errors)
    latency = families["hostvisor_api_request_seconds"].samples  # type: ignore[attr-defined]
    count = next(s.value for s in latency if s.name.endswith("_count"))
    assert count >= 2
    host.api_metrics.connection_closed()


def test_actor_latency_histogram_matches_handled(host: EmbeddedHost) -> None:
    families = scrape(host)
    handling = families["hostvisor_actor_handling_seconds"].samples  # type: ignore[attr-defined]
    count = next(
        s.value for s in handling if s.name.endswith("_count") and s.labels["path"] == "hosts/host"
    )
    handled = next(
        s.value
        for s in families["hostvisor_actor_messages_handled"].samples  # type: ignore[attr-defined]
        if s.labels["path"] == "hosts/host"
    )
    assert 0 < count <= handled + 1  # scraped one after the other: a message may land between


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    assert load_config(state_dir=tmp_path).metrics_address == ""
    ini = tmp_path / "vdsm.conf"
    ini.write_text("[hostvisor]\nmetrics_address = 0.0.0.0:9102\n")
    assert load_config(ini).metrics_address == "0.0.0.0:9102"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("9102", ("127.0.0.1", 9102)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9102", ("::1", 9102)),
        ("0.0.0.0:9102", ("0.0.0.0", 9102)),  # noqa: S104 - the operator's explicit choice
    ],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["host:port", "127.0.0.1:70000", ":"])
def test_parse_address_refuses_bad_input(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_address(text)


def test_storage_domains_report_their_check_delay(host: EmbeddedHost, tmp_path: Path) -> None:
    directory = tmp_path / "sd"
    directory.mkdir()
    dc = DataCenter({"id": new_id(), "connection": str(directory)}, LOCALFS)
    with host.client() as cli:
        dc.connect_server(cli)
        dc.create_domain(cli)
        dc.create_pool(cli)
        dc.connect_pool(cli)

    def reported() -> dict[str, float]:
        families = scrape(host)
        found: dict[str, float] = {}
        for name in (
            "hostvisor_storage_domain_check_delay_seconds",
            "hostvisor_storage_domain_last_check_age_seconds",
            "hostvisor_storage_domain_valid",
        ):
            for sample in families[name].samples:  # type: ignore[attr-defined]
                if sample.labels["sd_uuid"] == dc.sd:
                    found[name] = sample.value
        return found if len(found) == 3 else {}

    found = wait_for(reported, 30, "the domain's check in the metrics")
    assert found["hostvisor_storage_domain_check_delay_seconds"] >= 0
    assert found["hostvisor_storage_domain_valid"] in {0, 1}


def test_the_api_recorder_caps_method_names() -> None:
    recorder = ApiRecorder()
    for n in range(MAX_METHODS + 50):
        recorder.request(f"Fuzz.verb{n}", 1, 0.001)
    figures = recorder.figures()
    assert len(figures.calls) == MAX_METHODS + 1
    assert figures.calls[OTHER] == 50
    assert sum(figures.latency_counts) == MAX_METHODS + 50


def test_real_calls_are_counted_by_verb_code_and_connection(host: EmbeddedHost) -> None:
    before = host.api_metrics.figures()
    unknown = "0d4f6b0e-28a4-4c0f-8a43-1f1e0d1b9a77"
    with host.client() as cli:
        during = host.api_metrics.figures()
        for _ in range(3):
            cli.Host.ping()  # answered in the read callback (answer_now)
        cli.Host.getAllVmStats()  # answered after an actor's reply
        with pytest.raises(Exception, match="does not exist"):
            cli.VM.getStats(vmID=unknown)
    after = host.api_metrics.figures()
    assert after.calls["Host.ping"] - before.calls.get("Host.ping", 0) == 3
    assert after.calls["Host.getAllVmStats"] - before.calls.get("Host.getAllVmStats", 0) == 1
    assert after.errors[("VM.getStats", 1)] - before.errors.get(("VM.getStats", 1), 0) == 1
    assert during.connections_total == before.connections_total + 1
    wait_for(
        lambda: host.api_metrics.figures().connections_open == before.connections_open,
        5,
        "the closed connection to be counted",
    )
