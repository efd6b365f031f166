"""A thousand VMs on libvirt's test driver: created, listed, sampled, recovered, weighed.

The test driver is not a hypervisor, but its domains go through the same libvirt API,
so the actors, the sampler, the recovery and the API are exercised at scale. Each host
opens a `test:///<file>` node: every connection to such a URI gets a fresh in-memory
driver holding the file's domains (running, or paused where the file says so), which
is what an agent restarted over surviving guests sees. (`test:///default` is one driver
shared by every connection of the process, so tests would see each other's domains.)
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.vms import statuses, td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import Config, load_config

COUNT = 1000
RSS_PER_ACTOR_LIMIT = 128 * 1024  # a sanity bound; bench_vms.py measures it cleanly

log = logging.getLogger("hostvisor.tests")


def _config(tmp_path: Path, uri: str) -> Config:
    return load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=uri,
        management_port=0,
        vm_sample_interval=0.5,
        vm_powering_up_seconds=0,
    )


def _rss() -> int:
    rss: int = psutil.Process().memory_info().rss
    return rss


def _all_sampled(cli: Client, count: int) -> bool:
    stats = cli.Host.getAllVmStats(_timeout=30)
    return len(stats) == count and all("cpuUsage" in entry for entry in stats)


def _p50_all_stats(cli: Client, rounds: int = 5) -> float:
    took = []
    for _ in range(rounds):
        started = time.monotonic()
        assert len(cli.Host.getAllVmStats(_timeout=30)) == COUNT
        took.append(time.monotonic() - started)
    return statistics.median(took)


@pytest.fixture
def empty_node(tmp_path: Path) -> str:
    return write_test_node(tmp_path / "empty.xml", [])


@pytest.mark.slow
@pytest.mark.libvirt
def test_a_thousand_vms_created_through_the_api_are_listed_and_sampled(
    tmp_path: Path, empty_node: str, record_property
):
    vm_ids = [str(uuid.uuid4()) for _ in range(COUNT)]
    with EmbeddedHost(_config(tmp_path, empty_node)) as host, host.client(timeout=60) as cli:
        before = _rss()
        started = time.monotonic()

        def create(index: int) -> None:
            xml = td_domain_xml(name=f"scale-{index}", vm_id=vm_ids[index])
            cli.VM.create(vmID=vm_ids[index], vmParams={"xml": xml})

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, range(COUNT)))
        wait_for(
            lambda: statuses(cli) == dict.fromkeys(vm_ids, "Up"), 30, f"{COUNT} VMs to be Up", 0.2
        )
        created = time.monotonic() - started
        per_vm = (_rss() - before) / COUNT
        wait_for(lambda: _all_sampled(cli, COUNT), 30, "every VM's first stats sample", 0.2)
        p50 = _p50_all_stats(cli)
        assert sorted(cli.Host.getVMList()) == sorted(vm_ids)

        # The API still serves single VMs and refuses duplicates at this size.
        assert cli.VM.getStats(vmID=vm_ids[-1])[0]["status"] == "Up"
        with pytest.raises(ServerError) as raised:
            cli.VM.create(vmParams={"xml": td_domain_xml(name="dup", vm_id=vm_ids[0])})
        assert raised.value.code == 4
        cli.VM.destroy(vmID=vm_ids[0])
        assert len(cli.Host.getVMList()) == COUNT - 1

    log.warning(
        "%d VMs via VM.create: Up in %.1f s; RSS %.1f KiB per VM (actor and test domain); "
        "getAllVmStats p50 %.0f ms",
        COUNT,
        created,
        per_vm / 1024,
        p50 * 1000,
    )
    record_property("create_seconds", round(created, 2))
    record_property("rss_per_vm_kib", round(per_vm / 1024, 1))
    record_property("all_vm_stats_p50_ms", round(p50 * 1000, 1))
    assert per_vm < RSS_PER_ACTOR_LIMIT


@pytest.fixture
def thousand_node(tmp_path: Path) -> tuple[str, list[str]]:
    vm_ids = [str(uuid.uuid4()) for _ in range(COUNT)]
    domains = [
        td_domain_xml(name=f"node-{i}", vm_id=vm_id, paused=i % 100 == 0)
        for i, vm_id in enumerate(vm_ids)
    ]
    # A domain without oVirt metadata is not Hostvisor's: it is left alone.
    foreign = td_domain_xml(name="foreign", ovirt=False)
    return write_test_node(tmp_path / "node.xml", [*domains, foreign]), vm_ids


def _expected(vm_ids: list[str]) -> dict[str, str]:
    return {vm_id: "Paused" if i % 100 == 0 else "Up" for i, vm_id in enumerate(vm_ids)}


@pytest.mark.slow
@pytest.mark.libvirt
def test_a_thousand_running_vms_are_recovered_at_every_start(
    tmp_path: Path, thousand_node: tuple[str, list[str]], record_property
):
    uri, vm_ids = thousand_node
    config = _config(tmp_path, uri)
    timings = []
    for run in range(2):  # the first start, then a restart over the same "surviving" guests
        host = EmbeddedHost(config)
        try:
            before = _rss()
            started = time.monotonic()
            host.start()  # the tree, then the vms branch's recoverer adopts every VM
            gate_open = time.monotonic()
            per_actor = (_rss() - before) / COUNT
            assert len(host.tree.vms.refs()) == COUNT
            timings.append((gate_open - started, gate_open - started))
            with host.client(timeout=60) as cli:
                assert statuses(cli) == _expected(vm_ids)
                wait_for(lambda: _all_sampled(cli, COUNT), 30, "stats of every recovered VM", 0.2)
        finally:
            host.stop()
        log.warning(
            "start %d: gate open in %.2f s, %d VMs recovered in %.2f s; RSS %.1f KiB per VM actor",
            run,
            timings[-1][0],
            COUNT,
            timings[-1][1],
            per_actor / 1024,
        )
        record_property(f"recovery_seconds_{run}", round(timings[-1][1], 2))
        record_property(f"rss_per_vm_actor_kib_{run}", round(per_actor / 1024, 1))
        assert per_actor < RSS_PER_ACTOR_LIMIT


@pytest.mark.slow
@pytest.mark.libvirt
def test_the_gate_stays_closed_while_a_thousand_vms_are_recovered(
    tmp_path: Path, thousand_node: tuple[str, list[str]]
):
    """Nothing but 99 or the whole list, from the moment the API listens."""
    uri, vm_ids = thousand_node
    host = EmbeddedHost(_config(tmp_path, uri))
    starting = threading.Thread(target=host.start, name="host-start")
    starting.start()
    answers: list[Any] = []
    try:
        front = wait_for(lambda: host.registry.get("api/front"), 60, "the API to listen", 0.001)
        assert front is not None
        with host.client(timeout=60) as cli:

            def answer() -> dict[str, str] | None:
                try:
                    listed = statuses(cli)
                except ServerError as error:
                    answers.append(error.code)
                    return None
                answers.append(len(listed))
                return listed

            listed = wait_for(answer, 60, "the end of recovery", 0.005)
        assert set(answers[:-1]) == {99}
        assert listed == _expected(vm_ids)
    finally:
        starting.join(60)
        host.stop()
    log.warning("answers while recovering: %d x 99, then the full list", answers.count(99))
    assert answers[0] == 99  # the API listened well before 1000 VMs were recovered
