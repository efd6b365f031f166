"""Host.fenceNode with Debian's real fence_virsh, fencing a guest that stands for a host.

The set-up is the one an Engine would drive: the agent logs in over ssh (a test
sshd on loopback, started and stopped by its pid) to the "hypervisor" of the
host to fence (a private libvirtd) and runs virsh there. The guest's real state
is read from that libvirtd after each action. The ssh key has a passphrase, and
it is the fence password: it reaches the agent only on stdin, and the test
watches every process's command line while the agent runs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psutil
import pytest

from harness.components import need
from harness.daemons import Daemon
from harness.guests import domain_xml, make_halting_base, make_overlay
from harness.hosts import embedded_host
from harness.waiting import wait_for
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.libvirt, pytest.mark.kvm, pytest.mark.slow]

PASSWORD = "fence-Pa55-" + uuid.uuid4().hex[:8]
TARGET = "hv-fence-target"
SSH_OPTIONS = (
    "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR "
    "-t '/bin/bash -c \"PS1=\\\\[EXPECT\\\\]# /bin/bash --noprofile --norc\"'"
)
"""fence_virsh's default ssh options, plus: trust the test's host key, write no known_hosts."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Sshd:
    port: int
    identity: Path


@pytest.fixture(scope="module")
def sshd(system_libvirt, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd on loopback whose sessions' virsh reaches the private libvirtd."""
    need(Path("/usr/sbin/sshd").exists(), "openssh-server is not installed")
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed")
    directory = tmp_path_factory.mktemp("sshd")
    host_key, identity = directory / "host_key", directory / "identity"
    for key, passphrase in ((host_key, ""), (identity, PASSWORD)):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(key)], check=True
        )
    (directory / "authorized_keys").write_text(Path(f"{identity}.pub").read_text())
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"PidFile {directory}/sshd.pid\nAuthorizedKeysFile {directory}/authorized_keys\n"
        "PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "StrictModes no\nUsePAM no\n"
        f"SetEnv LIBVIRT_DEFAULT_URI={system_libvirt.uri}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    daemon = Daemon(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], directory / "sshd.log")
    try:
        daemon.wait_ready(lambda: _accepts(port), timeout=20)
        yield Sshd(port=port, identity=identity)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def target(system_libvirt, accelerator, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The guest that stands for the host to fence, running on the private libvirtd."""
    directory = tmp_path_factory.mktemp("target")
    disk = make_overlay(make_halting_base(directory), directory / "target.qcow2")
    xml = domain_xml(
        name=TARGET, uuid=str(uuid.uuid4()), disk=disk, domain_type=accelerator.domain_type
    )
    domain = system_libvirt.conn.defineXML(xml)
    domain.create()
    return domain


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[EmbeddedHost]:
    with embedded_host(tmp_path_factory, embed_root) as running:
        yield running


def params(sshd: Sshd, action: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Host.fenceNode's params as the Engine sends them (port, secure as strings)."""
    return {
        "addr": "127.0.0.1",
        "port": TARGET,
        "agent": "virsh",
        "username": "root",
        "password": PASSWORD,
        "action": action,
        "secure": "",
        "options": f"ipport={sshd.port}\nidentity_file={sshd.identity}\nssh_options={SSH_OPTIONS}",
        **(changes or {}),
    }


class ArgvWatch:
    """Reads every process's command line while a call runs; remembers what it saw."""

    def __init__(self) -> None:
        self.saw_agent = False
        self.leaked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="argv-watch", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            for process in psutil.process_iter(["cmdline"]):
                line = " ".join(process.info["cmdline"] or ())
                if "fence_virsh" in line:
                    self.saw_agent = True
                if PASSWORD in line:
                    self.leaked.append(line)


def fence(host: EmbeddedHost, call: dict[str, Any]) -> Any:
    with host.client(timeout=120) as cli:
        return cli.call("Host.fenceNode", call)


def test_status_off_on_and_reboot_follow_the_guests_real_state(
    host, sshd, target, system_libvirt, caplog
):
    assert target.isActive()
    with ArgvWatch() as watch:
        assert fence(host, params(sshd, "status")) == {"power": "on"}
    assert watch.saw_agent
    assert watch.leaked == []

    assert fence(host, params(sshd, "off")) == {"power": "unknown", "operationStatus": "initiated"}
    assert not target.isActive()
    assert fence(host, params(sshd, "status")) == {"power": "off"}

    assert fence(host, params(sshd, "on")) == {"power": "unknown", "operationStatus": "initiated"}
    assert target.isActive()
    assert fence(host, params(sshd, "status")) == {"power": "on"}

    run = system_libvirt.conn.lookupByName(TARGET).ID()  # a fresh lookup: IDs are cached
    assert fence(host, params(sshd, "reboot"))["operationStatus"] == "initiated"
    wait_for(target.isActive, 30, "the target to run again")
    assert system_libvirt.conn.lookupByName(TARGET).ID() != run  # really off, then on
    assert PASSWORD not in caplog.text


def test_a_failing_agent_answers_its_status_and_output_and_changes_nothing(host, sshd, target):
    assert target.isActive()
    for action in ("off", "status"):
        with pytest.raises(ServerError) as raised:
            fence(host, params(sshd, action, {"password": "not-the-passphrase"}))
        assert raised.value.code == 1
        assert "Unable to connect/login" in raised.value.message
    assert target.isActive()


def test_bad_input_answers_vdsms_codes_and_fences_nothing(host, sshd, target, system_libvirt):
    run = system_libvirt.conn.lookupByName(TARGET).ID()
    bad = (
        ({"agent": "nosuchagent"}, 43),
        ({"agent": "../../bin/true"}, 43),
        ({"action": "explode"}, -32602),
        ({"action": 1}, -32602),
        ({"port": [TARGET]}, -32602),
        ({"password": None}, -32602),
        ({"addr": "127.0.0.1\naction=off"}, 91),
        ({"username": "root\naction=off"}, 91),
        ({"policy": {"storageDomainHostIdMap": {"sd": "one"}}}, 91),
        ({"policy": "skip"}, -32602),
        ({"secure": ["yes"]}, 91),
    )
    for change, code in bad:
        with pytest.raises(ServerError) as raised:
            fence(host, params(sshd, "off", change))
        assert raised.value.code == code, change
    for missing in ("addr", "agent", "password", "action"):
        call = params(sshd, "off")
        del call[missing]
        with pytest.raises(ServerError) as raised:
            fence(host, call)
        assert raised.value.code == -32602, missing
    assert target.isActive()
    assert system_libvirt.conn.lookupByName(TARGET).ID() == run
