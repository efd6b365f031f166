"""The host's tree: built from config, started and stopped as a whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.probes import Crash, Journal, probe_start
from hostvisor.actors.actor import ExitReason
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.hypervisor.connection import embed_uri
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.clock import ManualClock
from hostvisor.supervision.config import Config, load_config
from hostvisor.supervision.registry import ROOT, Registry
from hostvisor.supervision.runner import TreeRunner
from hostvisor.supervision.spec import ChildSpec, SupervisorFlags


@pytest.mark.libvirt
def test_the_embedded_host_runs_the_tree_of_the_design(tmp_path: Path, embed_root: Path):
    config = load_config(
        state_dir=tmp_path / "state", libvirt_uri=embed_uri(embed_root), management_port=0
    )
    with EmbeddedHost(config) as host:
        paths = [status.path for status in host.status()]
        assert paths == [
            ROOT,
            "infra",
            "infra/hypervisor",
            "infra/events",
            "infra/docker",
            "hosts",
            "hosts/host",
            "hosts/vmstats",
            "hosts/vmboard",
            "hosts/containerstats",
            "vms",
            "vms/guests",
            "vms/recoverer",
            "containers",
            "containers/guests",
            "containers/recoverer",
            "storage",
            "storage/connections",
            "storage/pool",
            "storage/tasks",
            "storage/domains",
            "storage/recoverer",
            "networks",
            "networks/nets",
            "networks/monitor",
            "networks/netconf",
            "networks/recoverer",
            "admin",
            "admin/memory",
            "admin/devices",
            "admin/fencer",
            "api",
            "api/front",
            "api/admin",
        ]
        hypervisor = host.registry.lookup("infra/hypervisor").proxy()
        assert hypervisor.connection().get(timeout=5).isAlive()
        facts = host.registry.lookup("hosts/host").proxy().facts().get(timeout=5)
        assert facts.cpu_count >= 1
        assert all(status.state == "running" for status in host.status())
    assert host.registry.paths() == ()


def test_escalation_at_the_root_is_reported_as_a_failure():
    journal = Journal()
    registry = Registry()
    runner = TreeRunner(
        [ChildSpec(id="w", start=probe_start("w", journal))],
        registry=registry,
        clock=ManualClock(),
        flags=SupervisorFlags(intensity=0),
    )
    runner.start(timeout=5)
    registry.lookup("w").tell(Crash())
    failure = runner.wait_failed(timeout=5)
    assert failure is not None
    assert failure.reason is ExitReason.SHUTDOWN
    assert "intensity" in (failure.error or "")
    assert runner.stop(timeout=5)


def test_a_requested_stop_is_not_a_failure():
    runner = TreeRunner([], registry=Registry())
    runner.start(timeout=5)
    assert runner.stop(timeout=5)
    assert runner.failed() is None


def test_config_reads_vdsm_style_ini_and_ignores_unknown_keys(tmp_path: Path):
    conf = tmp_path / "vdsm.conf"
    conf.write_text(
        "[vars]\nssl = true\nvm_sample_interval = 5\nsome_vdsm_only_key = x\n"
        "[addresses]\nmanagement_port = 54322\n"
        "[hostvisor]\nstate_dir = /srv/hv\n"
    )
    config = load_config(conf)
    assert config.ssl is True
    assert config.vm_sample_interval == 5.0
    assert config.management_port == 54322
    assert config.state_dir == Path("/srv/hv")
    assert config.embed_root == Path("/srv/hv/libvirt")


def test_the_embedded_default_is_local_and_plain():
    config = Config()
    assert config.management_ip == "127.0.0.1"
    assert config.ssl is False
    assert config.libvirt_uri == ""


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[vars]\nssl = maybe\n", "ssl"),
        ("[addresses]\nmanagement_port = 70000\n", "management_port"),
        ("[vars]\nvm_sample_interval = -1\n", "vm_sample_interval"),
        ("no section header\n", "vdsm.conf"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str):
    conf = tmp_path / "vdsm.conf"
    conf.write_text(text)
    with pytest.raises(InvalidArgument, match=key):
        load_config(conf)
