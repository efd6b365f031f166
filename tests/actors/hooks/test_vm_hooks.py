"""VDSM hooks around a real VM's life, through an in-process host and its client.

The host's hooks directory (config `hooks_dir`) is this module's own; each test puts
its scripts there as an administrator would, and the guests are halting ones (KVM,
or TCG without /dev/kvm) created by VM.create as the Engine does.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.guests import Guests, StatusEvents
from harness.hosts import VM_TEST_SETTINGS, client_destroying_vms, embedded_host
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

ERROR, GENERIC_ERROR = 1, 1  # exitCode ERROR, exitReason GENERIC_ERROR (VDSM's on a hook)
MIGRATE_ERR, HOOK_ERROR = 12, 1500
CUSTOM = (
    "<ovirt-vm:custom><ovirt-vm:site_label>blue</ovirt-vm:site_label></ovirt-vm:custom>"
    "</ovirt-vm:vm>"
)


def script(hooks_dir: Path, point: str, name: str, body: str) -> Path:
    """Install `body` as the executable shell script `name` of hook point `point`."""
    directory = hooks_dir / point
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def hooks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hooks")


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, embed_root: Path, hooks_dir: Path
) -> Iterator[EmbeddedHost]:
    settings = {**VM_TEST_SETTINGS, "hooks_dir": hooks_dir, "hook_timeout": 20.0}
    with embedded_host(tmp_path_factory, embed_root, **settings) as running:
        yield running


@pytest.fixture
def cli(host: EmbeddedHost, hooks_dir: Path) -> Iterator[Client]:
    with client_destroying_vms(host) as client:
        yield client
    for point in hooks_dir.iterdir():  # the next test installs its own scripts
        shutil.rmtree(point)


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("guests"), accelerator.domain_type)


def _hook_files() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("hook-*")}


def test_a_before_vm_start_hook_edits_the_xml_the_guest_runs_with(
    host: EmbeddedHost, cli: Client, guests: Guests, hooks_dir: Path, tmp_path: Path
):
    seen = tmp_path / "seen"
    script(
        hooks_dir,
        "before_vm_start",
        "50_describe",
        f'echo "$vmId $site_label" > {seen}\n'
        'sed -i "s#</domain>#<description>set by a site hook</description></domain>#" '
        '"$_hook_domxml"',
    )
    vm_id, xml = guests.xml("hooked")
    xml = xml.replace("</ovirt-vm:vm>", CUSTOM)

    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})

    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "the VM to be Up")
    live = host.tree.connection().lookupByUUIDString(vm_id).XMLDesc(0)
    assert "<description>set by a site hook</description>" in live
    assert seen.read_text().split() == [vm_id, "blue"]  # vmId and its custom property
    assert "<description>set by a site hook</description>" not in xml  # the hook's doing


def test_a_failing_before_vm_start_hook_keeps_the_vm_from_starting(
    host: EmbeddedHost, cli: Client, guests: Guests, hooks_dir: Path, tmp_path: Path
):
    after = tmp_path / "after"
    script(hooks_dir, "before_vm_start", "10_refuse", "echo 'site policy says no' >&2; exit 1")
    script(hooks_dir, "after_vm_start", "10_mark", f"touch {after}")
    events = StatusEvents(cli)
    vm_id, xml = guests.xml("refused")
    files_before = _hook_files()

    assert cli.VM.create(vmID=vm_id, vmParams={"xml": xml})["status"] == "WaitForLaunch"

    entry, _params = events.next(vm_id)
    assert entry["status"] == "Down"
    assert (entry["exitCode"], entry["exitReason"]) == (ERROR, GENERIC_ERROR)
    assert entry["exitMessage"].startswith("Hook Error: ")  # VDSM's str(HookError)
    assert "site policy says no" in entry["exitMessage"]
    assert "before_vm_start" in entry["exitMessage"]
    # nothing left behind: no domain, no data file, no after_vm_start
    assert vm_id not in [d.UUIDString() for d in host.tree.connection().listAllDomains()]
    assert _hook_files() == files_before
    assert not after.exists()
    cli.VM.destroy(vmID=vm_id)
    assert vm_id not in cli.Host.getVMList()


def test_after_vm_start_and_the_destroy_hooks_run_with_the_domain_xml(
    cli: Client, guests: Guests, hooks_dir: Path, tmp_path: Path
):
    log = tmp_path / "log"
    script(hooks_dir, "after_vm_start", "10_log", f'echo "after_vm_start $vmId" >> {log}')
    script(hooks_dir, "before_vm_destroy", "10_log", f'echo "before_vm_destroy $vmId" >> {log}')
    script(
        hooks_dir,
        "after_vm_destroy",
        "10_log",
        f'echo "after_vm_destroy $vmId" >> {log}; cp "$_hook_domxml" {tmp_path}/destroyed.xml',
    )
    vm_id, xml = guests.xml("destroyed")
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "the VM to be Up")
    wait_for(log.exists, 10, "after_vm_start to run")  # it runs beside the VM

    cli.VM.destroy(vmID=vm_id)  # answers once the destroy hooks ran (as VDSM's)

    assert log.read_text().splitlines() == [
        f"after_vm_start {vm_id}",
        f"before_vm_destroy {vm_id}",
        f"after_vm_destroy {vm_id}",
    ]
    destroyed = (tmp_path / "destroyed.xml").read_text()
    assert f"<uuid>{vm_id}</uuid>" in destroyed  # the domain XML the VM ran with


def test_a_failing_destroy_hook_does_not_keep_the_vm_alive(
    host: EmbeddedHost, cli: Client, guests: Guests, hooks_dir: Path
):
    script(hooks_dir, "before_vm_destroy", "10_fails", "exit 1")
    script(hooks_dir, "after_vm_destroy", "10_fails", "exit 1")
    vm_id, xml = guests.xml("stubborn")
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "the VM to be Up")

    cli.VM.destroy(vmID=vm_id)

    assert vm_id not in cli.Host.getVMList()
    assert vm_id not in [d.UUIDString() for d in host.tree.connection().listAllDomains()]


def test_a_failing_before_vm_migrate_source_hook_fails_the_migration(
    cli: Client, guests: Guests, hooks_dir: Path, tmp_path: Path
):
    seen = tmp_path / "seen"
    script(
        hooks_dir,
        "before_vm_migrate_source",
        "10_refuse",
        f'echo "$vmId" > {seen}; grep -q "<uuid>$vmId</uuid>" "$_hook_domxml" && exit 1',
    )
    vm_id, xml = guests.xml("pinned")
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "the VM to be Up")
    params = {
        "vmId": vm_id,
        "dst": "198.51.100.99:54321",  # never reached: the hook says no first
        "method": "online",
        "tunneled": "false",
        "abortOnError": "true",
    }

    cli.VM.migrate(vmID=vm_id, params=params)  # answers at once, as VDSM's

    stats = wait_for(
        lambda: (s := cli.VM.getMigrationStatus(vmID=vm_id))["status"]["code"] != 0 and s,
        30,
        "the migration to fail",
    )
    assert stats["status"]["code"] == MIGRATE_ERR  # VDSM's SourceThread: migrateErr
    assert seen.read_text().strip() == vm_id  # it got the VM's id and its domain XML
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"


def test_pause_and_cont_hooks(cli: Client, guests: Guests, hooks_dir: Path, tmp_path: Path):
    log = tmp_path / "log"
    refuse = script(hooks_dir, "before_vm_pause", "10_refuse", "echo 'keep running' >&2; exit 1")
    for point in ("after_vm_pause", "before_vm_cont", "after_vm_cont"):
        script(hooks_dir, point, "10_log", f'echo "{point} $vmId" >> {log}')
    vm_id, xml = guests.xml("pausable")
    cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up", 30, "the VM to be Up")

    with pytest.raises(ServerError) as raised:
        cli.VM.pause(vmID=vm_id)
    assert raised.value.code == HOOK_ERROR  # VDSM's exception.HookError, as its pause answers
    assert "keep running" in str(raised.value)
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"

    refuse.unlink()
    cli.VM.pause(vmID=vm_id)
    wait_for(log.exists, 10, "after_vm_pause")
    cli.VM.cont(vmID=vm_id)
    expected = [f"after_vm_pause {vm_id}", f"before_vm_cont {vm_id}", f"after_vm_cont {vm_id}"]
    wait_for(lambda: log.read_text().splitlines() == expected, 10, "the cont hooks")


def test_capabilities_list_the_installed_hooks_with_checksums(host: EmbeddedHost, hooks_dir: Path):
    script(hooks_dir, "before_vm_start", "50_edit", "exit 0")
    script(hooks_dir, "after_network_setup", "10_log", "logger networks")

    with host.client(timeout=60) as cli:  # as the Engine reads them (VdsHooksParser)
        caps = cli.Host.getCapabilities()

    hooks = caps["hooks"]
    assert set(hooks) == {"before_vm_start", "after_network_setup"}
    assert set(hooks["before_vm_start"]) == {"50_edit"}
    checksum = hooks["after_network_setup"]["10_log"]["checksum"]
    assert len(checksum) == 64  # sha256, hex, as VDSM's HookScriptInfo
    int(checksum, 16)
    for point in hooks_dir.iterdir():
        shutil.rmtree(point)
