"""`hostvisor collect-logs` and the sos plugin, on a real agent with every kind of resource.

One agent process (TLS, DEBUG logs to a file) runs a KVM guest with a VNC password, a
container VM on a private dockerd, a bridged network in a namespace and a local storage
domain; the archive must hold each part, and none of the test's secrets (the VNC
password, a console ticket, the host key's content) may be found in it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.agent import Agent, free_port
from harness.components import need
from harness.dockerd import IMAGE, NETWORK, PrivateDockerd, container_xml
from harness.engine import local_data_center
from harness.guests import Guests
from harness.netns import MANAGEMENT, NO_CHECK, TestNamespace
from harness.pki import Pki, host_cert, make_pki
from harness.waiting import wait_for
from hostvisor.actors.hypervisor.connection import detect_accelerator
from hostvisor.api.client import Client, ServerError, connect
from hostvisor.api.tls import client_context
from hostvisor.api.tools.archive import Progress
from hostvisor.api.tools.collect import parse_since
from hostvisor.api.tools.redact import MASK, Redactor

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

HOSTVISOR = [sys.executable, "-m", "hostvisor.api.cli"]
VNC_PASSWORD = "v" + uuid.uuid4().hex[:7]  # QEMU takes at most 8 characters
TICKET = "t" + uuid.uuid4().hex[:7]
SOS_PLUGINS = Path(__file__).parents[3] / "contrib" / "sos"
RUN_SOS = (
    "import sys, sos.report.plugins as p; p.__path__.append(sys.argv.pop(1)); "
    "from sos import SoS; SoS(sys.argv[1:]).execute()"
)
"""sos with one more plugin directory: what installing contrib/sos/hostvisor.py does."""


class Site:
    """The running agent and what the test made on it."""

    def __init__(self, agent: Agent, pki: Pki, cert: Path, key: Path) -> None:
        self.agent = agent
        self.pki = pki
        self.cert = cert
        self.key = key
        self.guest_id = ""
        self.container_id = ""
        self.sd = ""
        self.secrets = [VNC_PASSWORD, TICKET]

    def client(self) -> Client:
        tls = client_context(
            ca=self.pki.ca_cert, cert=self.pki.client_cert, key=self.pki.client_key
        )
        return connect("127.0.0.1", self.agent.port, tls=tls, timeout=60)

    def answers(self) -> bool:
        try:
            with self.client() as cli:
                cli.Host.ping()
        except (OSError, ServerError):
            return False
        return True


def agent_config(agent: Agent, pki: Pki, cert: Path, key: Path, **extra: str) -> None:
    lines = "".join(f"{name} = {value}\n" for name, value in extra.items())
    agent.config.write_text(
        "[vars]\nssl = true\nvm_sample_interval = 0.5\nhost_sample_stats_interval = 1\n"
        f"[addresses]\nmanagement_port = {agent.port}\n"
        f"[hostvisor]\nvm_powering_up_seconds = 0\nlog_level = DEBUG\n"
        f"log_file = {agent.directory / 'log' / 'vdsm.log'}\n"
        f"cert_file = {cert}\nkey_file = {key}\nca_file = {pki.ca_cert}\n{lines}"
    )


@pytest.fixture(scope="module")
def dockerd() -> Iterator[PrivateDockerd]:
    engine = PrivateDockerd()
    try:
        yield engine.start().prepare()
    finally:
        engine.close()


@pytest.fixture(scope="module")
def netns() -> Iterator[TestNamespace]:
    namespace = TestNamespace(nics=("eth0", "eth1"))
    try:
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, dockerd: PrivateDockerd, netns: TestNamespace
) -> Iterator[Site]:
    need(Path("/usr/bin/qemu-system-x86_64").exists(), "qemu-system-x86 is not installed")
    directory = Path(tmp_path_factory.mktemp("collect"))
    pki = make_pki(directory / "pki")
    cert, key = host_cert(pki, "host", "127.0.0.1")
    agent = Agent(directory)
    agent_config(
        agent,
        pki,
        cert,
        key,
        docker_socket=dockerd.socket,
        container_network=NETWORK,
        net_namespace=netns.name,
    )
    site = Site(agent, pki, cert, key)
    daemon = agent.start()
    try:
        daemon.wait_ready(site.answers, timeout=90)
        with site.client() as cli:
            populate(site, cli, directory)
        yield site
    finally:
        with site.client() as cli:
            for vm_id in cli.Host.getVMList():
                cli.VM.destroy(vmID=vm_id)
        agent.stop_all()


def populate(site: Site, cli: Client, directory: Path) -> None:
    """A network, a storage domain, a guest with a VNC password, a container VM."""
    cli.Host.setupNetworks(networks={"ovirtmgmt": MANAGEMENT}, bondings={}, options=NO_CHECK)
    dc = local_data_center(directory / "domain")
    dc.setup(cli)
    site.sd = dc.sd
    guests = Guests(directory, detect_accelerator().domain_type)
    site.guest_id, xml = guests.xml("collected")
    graphics = f"<graphics type='vnc' autoport='yes' passwd='{VNC_PASSWORD}' listen='127.0.0.1'/>"
    xml = xml.replace("<memballoon", f"{graphics}\n    <memballoon")
    cli.VM.create(vmID=site.guest_id, vmParams={"vmId": site.guest_id, "xml": xml})
    site.container_id = str(uuid.uuid4())
    ct_xml = container_xml(site.container_id, name="collected-ct", image=f"{IMAGE}:latest")
    cli.VM.create(vmID=site.container_id, vmParams={"vmId": site.container_id, "xml": ct_xml})
    for vm_id in (site.guest_id, site.container_id):
        stats = wait_for(lambda vm_id=vm_id: settled(cli, vm_id), 60, f"{vm_id} up or down")
        assert stats["status"] == "Up", stats
    # A console ticket, where VM.updateDevice sets graphics passwords (where it does not
    # yet, the log line of `leak_into_the_log` stands in for it).
    with contextlib.suppress(ServerError):
        cli.VM.updateDevice(
            vmID=site.guest_id,
            params={"deviceType": "graphics", "graphicsType": "vnc", "password": TICKET,
                    "ttl": 120, "existingConnAction": "keep", "params": {}},
        )  # fmt: skip


def settled(cli: Client, vm_id: str) -> dict[str, Any] | None:
    stats: dict[str, Any] = cli.VM.getStats(vmID=vm_id)[0]
    return stats if stats["status"] in {"Up", "Down"} else None


def collect(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *HOSTVISOR,
            "collect-logs",
            "--config",
            str(site.agent.config),
            "--state-dir",
            str(site.agent.state_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def unpack(archive: Path) -> dict[str, bytes]:
    """Every file of the archive, by its path under the archive's top folder."""
    files = {}
    with tarfile.open(archive) as tar:
        tops = {member.name.split("/")[0] for member in tar.getmembers()}
        assert len(tops) == 1, tops
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[member.name.split("/", 1)[1]] = extracted.read()
    return files


def secrets_of(site: Site) -> list[bytes]:
    key_lines = [
        line.strip().encode()
        for line in site.key.read_text().splitlines()
        if line.strip() and not line.startswith("-----")
    ]
    assert key_lines
    return [secret.encode() for secret in site.secrets] + key_lines


def assert_no_secret(files: dict[str, bytes], site: Site) -> None:
    for secret in secrets_of(site):
        leaks = [name for name, data in files.items() if secret in data]
        assert not leaks, f"{secret!r} found in {leaks}"


def manifest(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {entry["part"]: entry for entry in json.loads(files["MANIFEST.json"])["parts"]}


def leak_into_the_log(site: Site) -> None:
    """Lines as a careless log would hold them: each secret in a shape the collector knows.

    libvirt's live XML never shows a graphics password, and the agent logs none, so
    without these lines the grep below would pass even with no redaction at all.
    """
    key_body = [line for line in site.key.read_text().splitlines() if not line.startswith("---")]
    lines = [
        f"<graphics type='vnc' autoport='yes' passwd='{VNC_PASSWORD}'/>",
        f"VM.updateDevice params={{'deviceType': 'graphics', 'password': '{TICKET}'}}",
        f'{{"ticket": "{TICKET}", "vmID": "{site.guest_id}"}}',
        *site.key.read_text().splitlines(),  # a whole PEM private key
        f"a stray line of the host key: {key_body[1]}",
    ]
    with (site.agent.directory / "log" / "vdsm.log").open("a") as log:
        log.writelines(f"2026-12-07 00:00:00,000 DEBUG (test) [leak] {line}\n" for line in lines)


def test_the_archive_holds_every_part_and_no_secret(site: Site, tmp_path: Path) -> None:
    leak_into_the_log(site)
    archive = tmp_path / "logs.tar.gz"
    result = collect(site, "-o", str(archive))
    assert result.returncode == 0, result.stderr
    assert f"wrote {archive}" in result.stdout
    assert archive.stat().st_mode & 0o777 == 0o600
    files = unpack(archive)
    parts = manifest(files)
    failed = {name: entry["detail"] for name, entry in parts.items() if entry["status"] != "ok"}
    assert failed == {}, failed
    # The progress went to stderr as plain lines (not a terminal): one per part.
    assert result.stderr.count("\n") == len(parts)

    assert b"hostvisor is up" in files["logs/vdsm.log"]
    assert f"passwd='{MASK}'".encode() in files["logs/vdsm.log"]
    assert b"ssl = true" in files["config/vdsm.conf"]
    assert b"api/front" in files["supervision.txt"]
    assert "ovirtmgmt" in json.loads(files["capabilities.json"])["networks"]
    assert {vm["vmId"] for vm in json.loads(files["stats/vms.json"])} == {
        site.guest_id,
        site.container_id,
    }
    guest_xml = files[f"vms/{site.guest_id}.xml"].decode()
    assert "<graphics" in guest_xml
    assert f"vms/{site.container_id}.xml" in files
    inspected = json.loads(files[f"containers/{site.container_id}.json"])
    assert inspected["Config"]["Labels"]["org.ovirt.hostvisor.vm-id"] == site.container_id
    assert "ovirtmgmt" in {link["ifname"] for link in json.loads(files["network/links.json"])}
    assert "ovirtmgmt" in json.loads(files["network/netconf/running.json"])["networks"]
    assert any(a.get("addr_info") for a in json.loads(files["network/addresses.json"]))
    assert "connections.json" in str(parts["storage"]["files"])
    assert f"storage/domains/{site.sd}/metadata" in files
    assert json.loads(files[f"storage/domains/{site.sd}/info.json"])["uuid"] == site.sd
    assert json.loads(files["storage/domains.json"]) == [site.sd]
    assert b"qemu-system-x86_64" in files[f"libvirt/qemu/{site.guest_id}.log"]
    assert_no_secret(files, site)


def test_since_keeps_only_recent_log_lines(site: Site, tmp_path: Path) -> None:
    archive = tmp_path / "recent.tar.xz"
    result = collect(site, "--since", "1d", "-o", str(archive), "--no-progress")
    assert result.returncode == 0, result.stderr
    everything = unpack(archive)["logs/vdsm.log"]
    assert b"hostvisor is up" in everything

    future = tmp_path / "future.tar.xz"
    result = collect(site, "--since", "2999-01-01 00:00", "-o", str(future))
    assert result.returncode == 0, result.stderr
    assert unpack(future).get("logs/vdsm.log", b"") == b""


def test_a_down_agent_fails_its_parts_and_the_rest_are_collected(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "netconf").mkdir(parents=True)
    (state / "netconf" / "running.json").write_text('{"networks": {}, "bonds": {}}')
    config = tmp_path / "vdsm.conf"
    config.write_text(
        f"[addresses]\nmanagement_port = {free_port()}\n[hostvisor]\nstate_dir = {state}\n"
        f"docker_socket = unix://{tmp_path}/no-docker.sock\n"
    )
    archive = tmp_path / "down.tar.xz"
    result = subprocess.run(
        [*HOSTVISOR, "collect-logs", "--config", str(config), "-o", str(archive)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "failed" in result.stdout
    parts = manifest(unpack(archive))
    for name in ("supervision", "capabilities", "stats", "vms", "storage-domains"):
        assert parts[name]["status"] == "failed", parts[name]
    assert "ConnectionError" in parts["capabilities"]["detail"]
    for name in ("system", "config", "network", "storage"):
        assert parts[name]["status"] == "ok", parts[name]
    assert parts["containers"]["status"] == "skipped"
    assert parts["libvirt-logs"]["status"] == "skipped"


def test_bad_options_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*HOSTVISOR, "collect-logs", "--since", "yesterday-ish", "-o", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "yesterday-ish" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(shutil.which("sos") is None, reason="Debian sosreport is not installed")
def test_sos_report_runs_the_plugin_and_gathers_the_same_parts(site: Site, tmp_path: Path) -> None:
    need(os.geteuid() == 0, "sos report runs as root")
    direct = tmp_path / "direct.tar.xz"
    assert collect(site, "-o", str(direct)).returncode == 0
    reports = tmp_path / "sos"
    reports.mkdir()
    hostvisor = Path(sys.executable).with_name("hostvisor")
    result = subprocess.run(
        ["/usr/bin/python3", "-c", RUN_SOS, str(SOS_PLUGINS),
         "report", "-o", "hostvisor", "--batch", "--tmp-dir", str(reports),
         "-k", f"hostvisor.command={hostvisor}", "-k", f"hostvisor.config={site.agent.config}",
         "-k", f"hostvisor.state_dir={site.agent.state_dir}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = reports.glob("sosreport-*.tar.xz")
    everything = unpack(report)
    inside = "sos_commands/hostvisor/collect-logs/"
    via_sos = {
        name[len(inside) :]: data for name, data in everything.items() if name.startswith(inside)
    }
    expected = {name: entry["status"] for name, entry in manifest(unpack(direct)).items()}
    assert {name: e["status"] for name, e in manifest(via_sos).items()} == expected
    assert set(unpack(direct)) == set(via_sos)
    assert b"wrote " in everything["sos_commands/hostvisor/collect-logs.txt"]
    assert_no_secret(everything, site)


@pytest.mark.unit
def test_redaction_masks_keys_attributes_pem_and_learned_literals() -> None:
    redactor = Redactor()
    data = redactor.structure(
        {
            "xml": "<graphics type='vnc' passwd='s3cr3t-vnc'/>",
            "params": {"password": "hunter2-pw", "user": "admin"},
            "Env": ["PATH=/bin", "DB_PASSWORD=env-secret"],
        }
    )
    assert data["params"] == {"password": MASK, "user": "admin"}
    assert data["Env"] == ["PATH=/bin", f"DB_PASSWORD={MASK}"]
    assert "s3cr3t-vnc" not in data["xml"]
    log = (
        "INFO set ticket s3cr3t-vnc for vm; later hunter2-pw\npassword=plain123 token: 'tok-777'\n"
    )
    masked = redactor.text(log)
    for secret in ("s3cr3t-vnc", "hunter2-pw", "plain123", "tok-777"):
        assert secret not in masked
    xml = "<vm><ovirt-vm:graphicsPassword a='1'>el-secret-9</ovirt-vm:graphicsPassword></vm>"
    assert "el-secret-9" not in redactor.text(xml)
    assert redactor.text(xml).startswith("<vm><ovirt-vm:graphicsPassword a='1'>")
    body = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"
    pem = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
    assert "MIGHAgEA" not in redactor.text(f"a {pem} b")


@pytest.mark.unit
def test_since_accepts_relative_and_absolute_times() -> None:
    now = parse_since("2026-12-07 03:00")
    assert parse_since("2h", now=now).hour == 1
    assert parse_since("30m", now=now).minute == 30
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_since("soon")


def test_progress_draws_a_bar_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            progress = Progress(2, stream=terminal)
            progress.start("capabilities")
            progress.end("capabilities", "ok", 0.1)
            progress.close()
        chunks = []
        while select.select([master], [], [], 0.5)[0]:
            chunks.append(os.read(master, 65536))
        drawn = b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        os.close(slave)
    assert "capabilities: ok" in drawn
    assert "━" in drawn  # the bar itself
    plain = io.StringIO()
    Progress(1, stream=plain).end("vms", "failed", 0.2, "ConnectionError")
    assert plain.getvalue() == "[1/1] vms: failed (0.2 s): ConnectionError\n"
