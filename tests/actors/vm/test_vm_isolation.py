"""One frozen QEMU never stalls another VM, the sampler or the API (DESIGN rule 3).

A real guest's QEMU is stopped with SIGSTOP (the test's own guest, by its pid): libvirt
calls that reach its monitor hang. Only that VM's operations may time out; every other
VM, Host.getAllVmStats and the bulk sampler carry on, and the frozen VM reports
monitorResponse -1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.guests import make_halting_base, make_overlay
from harness.vms import ovirt_guest_xml, qemu_pid, statuses
from harness.waiting import wait_for
from hostvisor.actors.actor import call
from hostvisor.actors.hypervisor.connection import embed_uri
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

INTERVAL = 0.5
OPERATION_TIMEOUT = 2.0
FAST = 1.0  # what "answers within its normal time" means here, in seconds


@pytest.fixture
def host(tmp_path: Path, embed_root: Path) -> Iterator[EmbeddedHost]:
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=embed_uri(embed_root),
        management_port=0,
        vm_sample_interval=INTERVAL,
        vm_operation_timeout=OPERATION_TIMEOUT,
        vm_powering_up_seconds=0,
    )
    with EmbeddedHost(config) as running:
        yield running


@pytest.fixture
def unsampled_host(tmp_path: Path, embed_root: Path) -> Iterator[EmbeddedHost]:
    """A host whose stats sampler waits an hour: monitorResponse comes from operations."""
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=embed_uri(embed_root),
        management_port=0,
        vm_sample_interval=3600,
        vm_operation_timeout=OPERATION_TIMEOUT,
        vm_powering_up_seconds=0,
    )
    with EmbeddedHost(config) as running:
        yield running


def _create(cli: Any, tmp_path: Path, accelerator: Any, name: str) -> str:
    base = tmp_path / "halt.qcow2"
    if not base.exists():
        make_halting_base(tmp_path)
    vm_id = str(uuid.uuid4())
    disk = make_overlay(base, tmp_path / f"{name}.qcow2")
    xml = ovirt_guest_xml(name=name, vm_id=vm_id, disk=disk, domain_type=accelerator.domain_type)
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    return vm_id


def _stats(cli: Any, vm_id: str) -> dict[str, Any]:
    stats: dict[str, Any] = cli.VM.getStats(vmID=vm_id)[0]
    return stats


def _timed(action: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.kvm
@pytest.mark.libvirt
def test_a_frozen_qemu_times_out_only_its_own_operations(
    host: EmbeddedHost, embed_root: Path, accelerator: Any, tmp_path: Path
):
    sampler = host.registry.lookup("hosts/vmstats")
    with host.client() as cli:
        frozen = _create(cli, tmp_path, accelerator, "iso-frozen")
        healthy = _create(cli, tmp_path, accelerator, "iso-healthy")
        try:
            wait_for(
                lambda: statuses(cli) == {frozen: "Up", healthy: "Up"}, 30, "both VMs to be Up"
            )
            wait_for(
                lambda: all("cpuUsage" in _stats(cli, vm) for vm in (frozen, healthy)),
                10,
                "the first stats samples",
            )
            pid = qemu_pid(embed_root, "iso-frozen", frozen)
            os.kill(pid, signal.SIGSTOP)
            try:
                _check_isolation(cli, sampler, frozen, healthy)
            finally:
                os.kill(pid, signal.SIGCONT)
            # Thawed: the stuck call returns, the skip expires, the VM is sampled again.
            wait_for(
                lambda: _stats(cli, frozen)["monitorResponse"] == "0",
                15,
                "the thawed VM to answer its monitor again",
            )
            wait_for(
                lambda: call(sampler, "counters").get(timeout=5)["stuck_in_flight"] == 0,
                10,
                "the stuck stats call to return",
            )
        finally:
            for vm_id in (frozen, healthy):
                with contextlib.suppress(ServerError):
                    cli.VM.destroy(vmID=vm_id)
        assert cli.Host.getVMList() == []


def _check_isolation(cli: Any, sampler: Any, frozen: str, healthy: str) -> None:
    # The next bulk call takes the frozen domain's job and hangs in its monitor; the
    # sampler marks it stuck and samples the responsive VMs only.
    wait_for(
        lambda: _stats(cli, frozen)["monitorResponse"] == "-1",
        10,
        "the frozen VM to report monitorResponse -1",
    )
    counters = call(sampler, "counters").get(timeout=5)
    assert counters["stuck_in_flight"] >= 1
    assert call(sampler, "unresponsive").get(timeout=5) == [frozen]
    samples = counters["samples"]
    wait_for(
        lambda: call(sampler, "counters").get(timeout=5)["samples"] >= samples + 2,
        10,
        "samples of the healthy VM to go on",
    )
    assert _stats(cli, healthy)["monitorResponse"] == "0"

    # The frozen VM's own operation times out with a clear error, within its timeout.
    with pytest.raises(ServerError) as raised:
        _timed(lambda: cli.VM.pause(vmID=frozen))
    assert raised.value.code == 40
    assert "timed out" in raised.value.message

    # Everything else answers within its normal time, while that operation still hangs.
    all_stats, took = _timed(cli.Host.getAllVmStats)
    assert took < FAST
    by_id = {entry["vmId"]: entry for entry in all_stats}
    assert by_id[frozen]["monitorResponse"] == "-1"
    assert by_id[healthy]["monitorResponse"] == "0"
    _, took = _timed(lambda: _stats(cli, frozen))
    assert took < FAST  # its actor still answers status and stats
    _, took = _timed(lambda: _stats(cli, healthy))
    assert took < FAST
    _, took = _timed(lambda: cli.VM.pause(vmID=healthy))
    assert took < FAST
    assert statuses(cli)[healthy] == "Paused"
    _, took = _timed(lambda: cli.VM.cont(vmID=healthy))
    assert took < FAST
    _, took = _timed(cli.Host.getStats)
    assert took < FAST


@pytest.mark.slow
@pytest.mark.kvm
@pytest.mark.libvirt
def test_the_frozen_vms_operation_fails_within_the_verb_timeout(
    unsampled_host: EmbeddedHost, embed_root: Path, accelerator: Any, tmp_path: Path
):
    with unsampled_host.client() as cli:
        vm_id = _create(cli, tmp_path, accelerator, "iso-timeout")
        try:
            wait_for(lambda: statuses(cli) == {vm_id: "Up"}, 30, "the VM to be Up")
            pid = qemu_pid(embed_root, "iso-timeout", vm_id)
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(ServerError) as raised:
                    cli.VM.pause(vmID=vm_id)
                took = time.monotonic() - started
                assert raised.value.code == 40
                assert "timed out" in raised.value.message
                assert OPERATION_TIMEOUT <= took < OPERATION_TIMEOUT + FAST
                stats, took = _timed(lambda: _stats(cli, vm_id))
                assert took < FAST
                # No sample was taken: the overdue operation alone says QEMU is stuck.
                assert "cpuUsage" not in stats
                assert stats["monitorResponse"] == "-1"
            finally:
                os.kill(pid, signal.SIGCONT)
            # The pause that timed out on the API still reaches QEMU once it thaws.
            wait_for(lambda: statuses(cli)[vm_id] == "Paused", 30, "the late pause")
            assert _stats(cli, vm_id)["monitorResponse"] == "0"
        finally:
            with contextlib.suppress(ServerError):
                cli.VM.destroy(vmID=vm_id)
