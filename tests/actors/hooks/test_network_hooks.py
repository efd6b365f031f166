"""setupNetworks' hooks on a real network namespace (veth pairs as the host's NICs).

The network configurator is started on its own (no host around it) with a hooks
directory of the test's; the scripts are Python, as many of VDSM's network hooks
are, editing the `_hook_json` document VDSM hands them:
`{"request": {"networks", "bondings", "options"}}`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.netns import NO_CHECK, TestNamespace
from hostvisor.actors.hooks import HookFailed, Hooks
from hostvisor.actors.network.configurator import NetworkChildren, NetworkConfigurator
from hostvisor.actors.network.errors import NetworkError
from hostvisor.actors.network.persistence import NetStore

HOOK_ERROR = 78
ASK = 30.0


def script(hooks_dir: Path, point: str, name: str, body: str) -> None:
    """Install `body` as the executable Python script `name` of hook point `point`."""
    directory = hooks_dir / point
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    path.chmod(0o755)


class NoNetworkActors:
    """The configurator's children as a list of names: these tests look at the kernel only."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def children(self) -> NetworkChildren:
        def start(name: str, _attrs: Any, _links: Mapping[str, Any]) -> None:
            self.names.add(name)

        return NetworkChildren(
            running=lambda: set(self.names),
            start=start,
            stop=self.names.discard,
            ref=lambda _name: None,
        )


@pytest.fixture
def netns() -> Iterator[TestNamespace]:
    namespace = TestNamespace(nics=("eth0", "eth1"))
    try:
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    return tmp_path / "hooks"


@pytest.fixture
def configurator(
    netns: TestNamespace, hooks_dir: Path, tmp_path: Path
) -> Iterator[pykka.ActorProxy[NetworkConfigurator]]:
    ref = NetworkConfigurator.start(
        netns=netns.name,
        store=NetStore.under(tmp_path / "state"),
        children=NoNetworkActors().children(),
        hooks=Hooks(directory=hooks_dir, timeout=20.0),
    )
    try:
        yield ref.proxy()
    finally:
        ref.stop(timeout=ASK)


def setup(proxy: Any, networks: dict[str, Any]) -> Any:
    """Host.setupNetworks through the configurator: its answer, or the error it fails with."""
    return proxy.setup_networks(networks, {}, dict(NO_CHECK)).get(timeout=ASK).get(timeout=ASK)


STORAGE = {"nic": "eth1", "bridged": False, "ipaddr": "198.51.100.5", "prefix": 24}


def test_a_before_network_setup_hook_changes_what_is_applied(
    configurator: Any, netns: TestNamespace, hooks_dir: Path, tmp_path: Path
):
    seen = tmp_path / "after.json"
    script(
        hooks_dir,
        "before_network_setup",
        "50_jumbo",
        "path = os.environ['_hook_json']\n"
        "data = json.load(open(path))\n"
        "data['request']['networks']['storage']['mtu'] = 9000\n"
        "json.dump(data, open(path, 'w'))",
    )
    script(
        hooks_dir,
        "after_network_setup",
        "50_record",
        f"open({str(seen)!r}, 'w').write(open(os.environ['_hook_json']).read())",
    )

    assert setup(configurator, {"storage": dict(STORAGE)}) == {"code": 0, "message": "Done"}

    assert netns.links()["eth1"]["mtu"] == 9000  # the hook's MTU, not the default 1500
    assert netns.addresses()["eth1"] == ["198.51.100.5/24"]
    after = json.loads(seen.read_text())  # after_network_setup saw the hooked request
    assert after["request"]["networks"]["storage"]["mtu"] == 9000
    running = configurator.running_config().get(timeout=ASK)
    assert running.networks["storage"].mtu == 9000  # and it is the running config


def test_a_failing_before_network_setup_hook_fails_with_78_and_touches_nothing(
    configurator: Any, netns: TestNamespace, hooks_dir: Path
):
    script(hooks_dir, "before_network_setup", "10_refuse",
           "sys.stderr.write('change window closed'); sys.exit(1)")  # fmt: skip
    before = netns.state()

    with pytest.raises(HookFailed) as raised:
        setup(configurator, {"storage": dict(STORAGE)})

    assert raised.value.code == HOOK_ERROR
    assert "change window closed" in str(raised.value)
    assert netns.state() == before
    assert "storage" not in configurator.running_config().get(timeout=ASK).networks


def test_after_network_setup_fail_runs_when_the_setup_fails(
    configurator: Any, netns: TestNamespace, hooks_dir: Path, tmp_path: Path
):
    seen = tmp_path / "failed.json"
    script(
        hooks_dir,
        "after_network_setup_fail",
        "50_record",
        f"open({str(seen)!r}, 'w').write(open(os.environ['_hook_json']).read())",
    )
    before = netns.state()

    with pytest.raises(NetworkError):
        setup(configurator, {"storage": {**STORAGE, "nic": "eth9"}})  # no such NIC

    assert json.loads(seen.read_text())["request"]["networks"]["storage"]["nic"] == "eth9"
    assert netns.state() == before
