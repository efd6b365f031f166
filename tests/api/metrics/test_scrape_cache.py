"""Scrapes keep lines between them, yet follow every VM that changes, arrives or leaves.

An embedded host of test-driver VMs, scraped over HTTP as Prometheus does: the
endpoint's collector keeps each actor's and VM's lines from one scrape to the next,
so each check here is made on a warm cache, against a collector built fresh.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.api.metrics.collector import Collector
from hostvisor.api.metrics.endpoint import METRICS_ID
from hostvisor.api.metrics.text import render
from hostvisor.supervision.config import load_config

pytestmark = [pytest.mark.libvirt]

VMS = 3


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHost]:
    directory = tmp_path_factory.mktemp("scrapes")
    uri = write_test_node(directory / "node.xml", [td_domain_xml(name=f"s{n}") for n in range(VMS)])
    config = load_config(
        state_dir=directory / "state",
        libvirt_uri=uri,
        management_port=0,
        vm_sample_interval=0.3,
        vm_powering_up_seconds=0,
        metrics_address="127.0.0.1:0",
    )
    with EmbeddedHost(config) as running:
        with running.client() as cli:
            wait_for(lambda: len(cli.Host.getAllVmStats()) == VMS, 30, "every VM listed")
        yield running


def scrape(host: EmbeddedHost) -> str:
    """One scrape over HTTP; its Content-Length must match the body written in chunks."""
    _addr, port = host.registry.lookup(f"api/{METRICS_ID}").proxy().address().get(timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        body: bytes = answer.read()
        assert int(answer.headers["Content-Length"]) == len(body)
    return body.decode()


def vm_lines(text: str, vm_id: str | None = None) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith("hostvisor_vm_") and (vm_id is None or f'vm_id="{vm_id}"' in line)
    ]


def fresh(host: EmbeddedHost) -> str:
    return render(Collector(registry=host.registry, runtime=host.runtime).collect()).decode()


def vm_ids(host: EmbeddedHost) -> list[str]:
    with host.client() as cli:
        return sorted(e["vmId"] for e in cli.Host.getAllVmStats())


def test_a_warm_scrape_shows_what_a_fresh_one_shows(host: EmbeddedHost) -> None:
    scrape(host)
    warm = scrape(host)
    assert len(vm_lines(warm)) >= VMS
    assert vm_lines(warm) == vm_lines(fresh(host))


def test_a_status_change_reaches_the_next_scrape(host: EmbeddedHost) -> None:
    vm_id = vm_ids(host)[0]
    scrape(host)
    with host.client() as cli:
        cli.VM.pause(vmID=vm_id)
        wait_for(
            lambda: any('status="Paused"' in line for line in vm_lines(scrape(host), vm_id)),
            10,
            "the pause in the scrape",
        )
        assert not any('status="Up"' in line for line in vm_lines(scrape(host), vm_id))
        cli.VM.cont(vmID=vm_id)
        wait_for(
            lambda: any('status="Up"' in line for line in vm_lines(scrape(host), vm_id)),
            10,
            "the resume in the scrape",
        )
    assert vm_lines(scrape(host)) == vm_lines(fresh(host))


def test_a_vm_that_goes_leaves_no_line_and_one_that_comes_appears(host: EmbeddedHost) -> None:
    gone = vm_ids(host)[-1]
    assert vm_lines(scrape(host), gone)
    with host.client() as cli:
        cli.VM.destroy(vmID=gone)
        wait_for(lambda: gone not in scrape(host), 10, "every line of the destroyed VM gone")
        new = str(uuid.uuid4())
        cli.VM.create(vmID=new, vmParams={"xml": td_domain_xml(name="newcomer", vm_id=new)})
        wait_for(
            lambda: any('vm_name="newcomer"' in line for line in vm_lines(scrape(host), new)),
            10,
            "the new VM in the scrape",
        )
    text = scrape(host)
    assert f'path="vms/guests/{new}"' in text  # its actor's lines too
    assert gone not in text
    assert vm_lines(text) == vm_lines(fresh(host))


def test_the_scrape_is_still_valid_exposition(host: EmbeddedHost) -> None:
    families = {family.name for family in text_string_to_metric_families(scrape(host))}
    assert {"hostvisor_vm_status", "hostvisor_actor_messages_handled"} <= families
