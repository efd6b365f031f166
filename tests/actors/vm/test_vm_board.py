"""The VM board: listings over every VM are one ask, and never lose a VM.

Each VmActor posts what it reports to the board; Host.getAllVmStats, getVMList,
getVMFullList and dumpxmls answer from it. The board is only a cache: a VM it has no
entry for is asked directly, so a board restarted empty still lists every VM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.actors.actor import ask, call
from hostvisor.actors.guest.board import Post
from hostvisor.actors.vm.addresses import VM_BOARD
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config
from hostvisor.supervision.supervisor import RestartChild, TerminateChild

COUNT = 20


def _without_clock(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "elapsedTime"}


@pytest.fixture
def host(tmp_path: Path) -> Any:
    domains = [td_domain_xml(name=f"b{n}") for n in range(COUNT)]
    uri = write_test_node(tmp_path / "node.xml", domains)
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=uri,
        management_port=0,
        vm_sample_interval=0.3,
        vm_powering_up_seconds=0,
    )
    with EmbeddedHost(config) as running:
        yield running


def _board_size(host: EmbeddedHost) -> int:
    size: int = call(host.registry.lookup(VM_BOARD), "size").get(timeout=5)
    return size


@pytest.mark.libvirt
def test_the_board_answers_what_each_vm_answers(host: EmbeddedHost):
    with host.client() as cli:
        wait_for(
            lambda: all("cpuUsage" in e for e in cli.Host.getAllVmStats()), 10, "first samples"
        )
        sampler = host.registry.lookup("hosts/vmstats")
        samples = call(sampler, "counters").get(timeout=5)["samples"]
        wait_for(
            lambda: call(sampler, "counters").get(timeout=5)["samples"] > samples,
            10,
            "another sample",
        )
        # Between two samples nothing changes: the board and each actor agree.
        everything = {e["vmId"]: _without_clock(e) for e in cli.Host.getAllVmStats()}
        one_by_one = {vm_id: _without_clock(cli.VM.getStats(vmID=vm_id)[0]) for vm_id in everything}
        if everything != one_by_one:  # a sample landed between the two reads: once more
            everything = {e["vmId"]: _without_clock(e) for e in cli.Host.getAllVmStats()}
        assert len(everything) == COUNT
        assert everything == one_by_one
        full = cli.Host.getVMFullList()
        assert {vm["vmId"]: vm["xml"] for vm in full} == cli.Host.dumpxmls()
        assert _board_size(host) == COUNT


@pytest.mark.libvirt
def test_a_board_restarted_empty_still_lists_every_vm(host: EmbeddedHost):
    hosts = host.registry.lookup("hosts")
    with host.client() as cli:
        wait_for(lambda: _board_size(host) == COUNT, 10, "every VM on the board")
        # Without the sampler nothing posts, so the restarted board stays empty.
        ask(hosts, TerminateChild("vmstats"), timeout=10)
        board = host.registry.lookup(VM_BOARD)
        board.tell(Post(entry=None))  # type: ignore[arg-type]  # a bug: the board crashes
        restarted = wait_for(
            lambda: (ref := host.registry.get(VM_BOARD)) is not None and ref is not board and ref,
            10,
            "the board to be restarted",
        )
        assert host.registry.status(VM_BOARD).restarts.count == 1
        assert call(restarted, "size").get(timeout=5) == 0
        # Every listing is complete all the same: VMs missing there are asked directly.
        assert len(cli.Host.getAllVmStats()) == COUNT
        assert len(cli.Host.getVMList(onlyUUID=False)) == COUNT
        assert len(cli.Host.getVMFullList()) == COUNT
        # Each VM posts again on its next sample.
        ask(hosts, RestartChild("vmstats"), timeout=10)
        wait_for(lambda: call(restarted, "size").get(timeout=5) == COUNT, 10, "the board refilled")


@pytest.mark.libvirt
def test_a_destroyed_vm_leaves_the_board(host: EmbeddedHost):
    with host.client() as cli:
        wait_for(lambda: _board_size(host) == COUNT, 10, "every VM on the board")
        gone = cli.Host.getVMList()[0]
        cli.VM.destroy(vmID=gone)
        assert gone not in {e["vmId"] for e in cli.Host.getAllVmStats()}
        wait_for(lambda: _board_size(host) == COUNT - 1, 10, "the entry forgotten")
