"""The admin socket (bad input, permissions, drills) and the log lines of actors.

On a host of libvirt test-driver VMs: the channel and the logs do not need a guest
that runs, only VM actors.
"""

from __future__ import annotations

import json
import logging
import socket
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.vms import td_domain_xml, write_test_node
from harness.waiting import wait_for
from hostvisor.actors.actor import WorkDone
from hostvisor.actors.errors import NotFound
from hostvisor.actors.vm.addresses import vm_path
from hostvisor.api.admin.channel import socket_path
from hostvisor.api.admin.client import AdminClient, AdminError
from hostvisor.api.admin.logs import LOG_FORMAT, actor_of
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

pytestmark = [pytest.mark.libvirt]

VM_IDS = [str(uuid.uuid4()) for _ in range(3)]
"""One VM per test that drills it: a restarted actor is swept up when its test ends."""


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
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHost]:
    directory = tmp_path_factory.mktemp("admin")
    domains = [td_domain_xml(name=f"a{n}", vm_id=vm_id) for n, vm_id in enumerate(VM_IDS)]
    uri = write_test_node(directory / "node.xml", domains)
    config = load_config(
        state_dir=directory / "state", libvirt_uri=uri, management_port=0, vm_powering_up_seconds=0
    )
    with EmbeddedHost(config) as running:
        yield running


@pytest.fixture
def admin(host: EmbeddedHost) -> Iterator[AdminClient]:
    with AdminClient(socket_path(host.config.state_dir)) as client:
        yield client


def vm_paths(host: EmbeddedHost) -> list[str]:
    return [vm_path(vm_id) for vm_id in VM_IDS]


def test_the_socket_is_for_its_owner_only(host: EmbeddedHost) -> None:
    mode = socket_path(host.config.state_dir).stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert host.registry.get("api/metrics") is None  # metrics are off unless configured


def test_snapshot_holds_every_actor_and_the_pools(host: EmbeddedHost, admin: AdminClient) -> None:
    snapshot = admin.snapshot()
    paths = {actor["path"] for actor in snapshot["actors"]}
    assert set(host.registry.paths()) <= paths | {"/"}
    assert {"/", "api/admin", *vm_paths(host)} <= paths
    assert snapshot["scheduler"]["workers"] >= 1
    assert "queued" in snapshot["work"]
    detail = admin.detail("hosts/host")
    assert len(snapshot["latency_bounds"]) + 1 == len(detail["latency_counts"])
    assert sum(detail["latency_counts"]) > 0


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"op": "nope"}, 91),
        ({"op": "detail"}, 91),
        ({"op": "detail", "path": 7}, 91),
        ({"op": "detail", "path": "vms/guests/no-such-vm"}, 1),
        ({"op": "kill", "path": "no/such/actor"}, 1),
        ({"op": "restart", "path": "no/such/actor"}, 1),
        ({"op": "kill", "path": "/"}, 91),
        ({"op": "restart", "path": "/"}, 91),
    ],
)
def test_bad_requests_get_vdsm_codes_and_change_nothing(
    host: EmbeddedHost, admin: AdminClient, request_: dict[str, object], code: int
) -> None:
    before = {s.path: s.restarts.count for s in host.registry.snapshot()}
    with pytest.raises(AdminError) as raised:
        admin.request(**request_)  # type: ignore[arg-type]
    assert raised.value.code == code
    assert {s.path: s.restarts.count for s in host.registry.snapshot()} == before
    assert admin.snapshot()["actors"]  # the connection carries on


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'"op"\n'])
def test_malformed_lines_are_refused(host: EmbeddedHost, line: bytes) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path(host.config.state_dir)))
        sock.sendall(line)
        reply = json.loads(sock.makefile("rb").readline())
    assert reply == {"ok": False, "error": {"code": 91, "message": reply["error"]["message"]}}


def test_kill_then_restart_a_vm_actor(host: EmbeddedHost, admin: AdminClient) -> None:
    path = vm_paths(host)[0]
    admin.kill(path, reason="drill")
    wait_for(lambda: restarts(host, path) == 1, 20, "the kill's restart")
    status = host.registry.status(path)
    assert status.restarts.last_reason is not None
    assert "Killed: drill" in status.restarts.last_reason
    old = host.registry.lookup(path)
    assert admin.restart(path) == {"path": path, "restarted": True}
    assert host.registry.lookup(path) is not old
    wait_for(lambda: state(host, path) == "running", 20, "the VM actor running")
    detail = admin.detail(path)
    assert detail["vm_id"] == path.rsplit("/", 1)[-1]
    assert detail["vm"]["status"] == "Up"


def test_a_crash_is_logged_with_the_actor_and_vm(
    host: EmbeddedHost, admin: AdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    path = vm_paths(host)[1]
    before = restarts(host, path)
    admin.kill(path)
    wait_for(lambda: restarts(host, path) > before, 20, "the restart")
    crashed = [r for r in caplog.records if "crashed" in r.getMessage() and path in r.getMessage()]
    assert crashed
    assert crashed[0].actor == path  # type: ignore[attr-defined]
    assert crashed[0].vm_id == path.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
    line = logging.Formatter(LOG_FORMAT).format(crashed[0])
    assert f"actor={path} vm={path.rsplit('/', 1)[-1]}" in line


def _log_on_turn(host: EmbeddedHost, path: str, logger: str, text: str) -> None:
    """Log `text` at DEBUG from the actor's own turn; return once it has run."""
    done = threading.Event()

    def emit(_outcome: object) -> None:
        logging.getLogger(logger).debug(text)
        done.set()

    host.registry.lookup(path).tell(WorkDone(then=emit, outcome=None))
    assert done.wait(10)


def test_set_log_level_changes_what_actors_log_at_runtime(
    host: EmbeddedHost, caplog: pytest.LogCaptureFixture
) -> None:
    name = "hostvisor.actors.vm.drill"
    path = vm_paths(host)[2]
    try:
        with host.client() as cli:
            assert cli.Host.setLogLevel(level="INFO", name=name) is True
            _log_on_turn(host, path, name, "quiet line")
            assert cli.Host.setLogLevel(level="DEBUG", name=name) is True
            _log_on_turn(host, path, name, "loud line")
            with pytest.raises(ServerError) as raised:
                cli.Host.setLogLevel(level="CHATTY", name=name)
            assert raised.value.code == 91
    finally:
        logging.getLogger(name).setLevel(logging.NOTSET)
    lines = [r for r in caplog.records if r.name == name]
    assert [r.getMessage() for r in lines] == ["loud line"]
    assert lines[0].actor == path  # type: ignore[attr-defined]
    assert logging.getLogger(name).level == logging.NOTSET


@pytest.mark.parametrize(
    ("thread", "actor"),
    [
        ("actor:vms/guests/v1", "vms/guests/v1"),
        ("work-3:vms/guests/v1:launch", "vms/guests/v1"),
        ("work-3", None),
        ("sched-4", None),
        ("MainThread", None),
    ],
)
def test_actor_of_thread_names(thread: str, actor: str | None) -> None:
    assert actor_of(thread) == actor


def test_logs_outside_actors_say_so(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    logging.getLogger("hostvisor.tests").warning("from the test thread")
    record = caplog.records[-1]
    assert (record.actor, record.vm_id) == ("-", "-")  # type: ignore[attr-defined]
