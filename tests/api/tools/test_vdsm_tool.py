"""`vdsm-tool configure / is-configured / validate-config` on a temporary root (`--prefix`).

Never the machine's /etc: every run configures a fresh tree holding a minimal
passwd/group/shadow, and the last test starts a real libvirtd (its own mount and
network namespaces, the tree's files bind-mounted over libvirt's paths) and the
agent from that tree, with TLS from the PKI vdsm-tool made.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.agent import free_port
from harness.components import need
from harness.daemons import Daemon
from harness.pki import host_cert, make_pki
from hostvisor.api.client import connect
from hostvisor.api.tls import client_context
from hostvisor.api.tools import pki

TOOL = [sys.executable, "-m", "hostvisor.api.tools.vdsm_tool"]
MODULES = ("certificates", "libvirt", "sanlock", "hostvisor")


def vdsm_tool(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOOL, "--prefix", str(prefix), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    """A fresh root: only root's user and the disk group exist."""
    need(shutil.which("useradd") is not None, "shadow's useradd is not installed (passwd)")
    root = tmp_path / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndisk:x:6:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndisk:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes | str, int]]:
    """Every file and link under `root`: its content (or target) and mtime."""
    found: dict[str, tuple[bytes | str, int]] = {}
    for path in root.rglob("*"):
        stat = path.lstat()
        if path.is_symlink():
            found[str(path)] = (str(path.readlink()), stat.st_mtime_ns)
        elif path.is_file():
            found[str(path)] = (path.read_bytes(), stat.st_mtime_ns)
    return found


def seed_agent_config(root: Path, port: int) -> Path:
    config = root / "etc" / "vdsm" / "vdsm.conf"
    config.parent.mkdir(parents=True)
    config.write_text(
        "# written by the operator\n[addresses]\nmanagement_ip = 127.0.0.1\n"
        f"management_port = {port}\n"
    )
    return config


def test_a_fresh_host_is_configured_once_and_a_second_run_changes_nothing(prefix: Path) -> None:
    before = vdsm_tool(prefix, "is-configured")
    assert before.returncode == 1
    assert "Modules certificates, libvirt, sanlock, hostvisor are not configured" in before.stdout

    first = vdsm_tool(prefix, "configure")
    assert first.returncode == 0, first.stdout + first.stderr
    for module in MODULES:
        assert f"Reconfiguration of {module} is done." in first.stdout
    assert vdsm_tool(prefix, "is-configured").returncode == 0
    valid = vdsm_tool(prefix, "validate-config")
    assert valid.returncode == 0, valid.stdout

    configured = snapshot(prefix)
    second = vdsm_tool(prefix, "configure")
    assert second.returncode == 0
    assert snapshot(prefix) == configured
    for module in MODULES:
        assert f"{module} is already configured for vdsm" in second.stdout
    assert "wrote" not in second.stdout

    etc = prefix / "etc"
    qemu = (etc / "libvirt" / "qemu.conf").read_text()
    assert 'user = "libvirt-qemu"' in qemu
    assert f'spice_tls_x509_cert_dir = "{etc}/pki/vdsm/libvirt-spice"' in qemu
    assert "our_host_name = " in (etc / "sanlock" / "sanlock.conf").read_text()
    groups = (etc / "group").read_text()
    assert "kvm:x:" in groups
    assert "libvirt-qemu:x:" in (etc / "passwd").read_text()
    assert any(line.startswith("kvm:") and "sanlock" in line for line in groups.splitlines()), (
        groups
    )
    files = pki.PkiFiles(etc / "pki" / "vdsm")
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert files.ca_key.stat().st_mode & 0o777 == 0o600
    assert pki.problems(files) == []
    assert (etc / "pki" / "vdsm" / "libvirt-spice" / "server-cert.pem").resolve() == files.cert


def test_force_rewrites_keeps_the_ca_and_names_the_services_to_restart(prefix: Path) -> None:
    assert vdsm_tool(prefix, "configure").returncode == 0
    files = pki.PkiFiles(prefix / "etc" / "pki" / "vdsm")
    ca = files.ca_cert.read_bytes()
    cert = files.cert.read_bytes()
    configured = snapshot(prefix)

    forced = vdsm_tool(prefix, "configure", "--force")
    assert forced.returncode == 0, forced.stderr
    after = snapshot(prefix)
    conf = str(prefix / "etc" / "libvirt" / "libvirtd.conf")
    assert after[conf][0] == configured[conf][0]  # the same settings...
    assert after[conf][1] != configured[conf][1]  # ...written again
    assert files.ca_cert.read_bytes() == ca
    assert files.cert.read_bytes() != cert  # re-issued by the same CA
    assert pki.problems(files) == []
    for service in ("libvirtd", "sanlock", "hostvisor"):
        assert f"{service}: no service manager here; restart it" in forced.stdout
    assert vdsm_tool(prefix, "is-configured").returncode == 0


def test_an_operators_settings_stay_and_conflicting_lines_are_commented_out(prefix: Path) -> None:
    config = seed_agent_config(prefix, 12345)
    qemu = prefix / "etc" / "libvirt" / "qemu.conf"
    qemu.parent.mkdir(parents=True)
    qemu.write_text('# the distribution\'s comments\nuser = "root"\nvnc_listen = "0.0.0.0"\n')

    assert vdsm_tool(prefix, "configure").returncode == 0
    text = config.read_text()
    assert text.startswith("# written by the operator\n[addresses]\nmanagement_ip = 127.0.0.1\n")
    assert "management_port = 12345" in text
    assert "management_port = 54321" not in text
    assert "ssl = true" in text
    qemu_text = qemu.read_text()
    assert '#hostvisor# user = "root"' in qemu_text
    assert 'vnc_listen = "0.0.0.0"' in qemu_text.splitlines()
    assert "# the distribution's comments" in qemu_text
    configured = snapshot(prefix)
    assert vdsm_tool(prefix, "configure").returncode == 0
    assert snapshot(prefix) == configured


def test_libvirt_follows_the_agents_ssl_setting(prefix: Path) -> None:
    config = seed_agent_config(prefix, 12345)
    config.write_text(config.read_text() + "[vars]\nssl = false\n")
    assert vdsm_tool(prefix, "configure").returncode == 0
    etc = prefix / "etc" / "libvirt"
    assert 'auth_tcp = "none"' in (etc / "libvirtd.conf").read_text()
    assert "spice_tls = 0" in (etc / "qemu.conf").read_text()
    assert vdsm_tool(prefix, "validate-config").returncode == 0

    config.write_text(config.read_text().replace("ssl = false", "ssl = true"))
    stale = vdsm_tool(prefix, "validate-config")
    assert stale.returncode == 1
    assert "Modules certificates, libvirt, hostvisor contains invalid configuration" in stale.stdout
    assert "spice_tls" in stale.stdout
    assert vdsm_tool(prefix, "is-configured").returncode == 1
    assert vdsm_tool(prefix, "configure").returncode == 0
    assert "spice_tls = 1" in (etc / "qemu.conf").read_text()
    assert 'auth_tcp = "none"' not in (etc / "libvirtd.conf").read_text()
    assert vdsm_tool(prefix, "validate-config").returncode == 0


def test_the_engines_pki_is_used_as_it_is(prefix: Path, tmp_path: Path) -> None:
    engine = make_pki(tmp_path / "engine")
    cert, key = host_cert(engine, "enrolled", "127.0.0.1")
    files = pki.PkiFiles(prefix / "etc" / "pki" / "vdsm")
    for source, target in ((engine.ca_cert, files.ca_cert), (cert, files.cert), (key, files.key)):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    enrolled = {path: path.read_bytes() for path in (files.ca_cert, files.cert, files.key)}

    for args in (("configure",), ("configure", "--force")):
        result = vdsm_tool(prefix, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert {path: path.read_bytes() for path in enrolled} == enrolled
    assert not files.ca_key.exists()
    assert vdsm_tool(prefix, "validate-config").returncode == 0


def test_a_certificate_of_another_ca_is_invalid_and_ours_is_issued_again(
    prefix: Path, tmp_path: Path
) -> None:
    assert vdsm_tool(prefix, "configure").returncode == 0
    files = pki.PkiFiles(prefix / "etc" / "pki" / "vdsm")
    rogue = make_pki(tmp_path / "rogue")
    shutil.copyfile(rogue.rogue_cert, files.cert)

    invalid = vdsm_tool(prefix, "validate-config")
    assert invalid.returncode == 1
    assert "is not signed by" in invalid.stdout
    assert "Modules certificates, hostvisor contains invalid configuration" in invalid.stdout
    not_configured = vdsm_tool(prefix, "is-configured")
    assert not_configured.returncode == 1
    assert "Modules certificates are not configured" in not_configured.stdout

    assert vdsm_tool(prefix, "configure").returncode == 0
    assert vdsm_tool(prefix, "validate-config").returncode == 0


def test_an_engine_certificate_that_does_not_match_is_never_replaced(
    prefix: Path, tmp_path: Path
) -> None:
    engine = make_pki(tmp_path / "engine")
    files = pki.PkiFiles(prefix / "etc" / "pki" / "vdsm")
    files.cert.parent.mkdir(parents=True)
    files.key.parent.mkdir(parents=True)
    shutil.copyfile(engine.ca_cert, files.ca_cert)
    shutil.copyfile(engine.rogue_cert, files.cert)  # not signed by the Engine's CA
    shutil.copyfile(engine.rogue_key, files.key)
    result = vdsm_tool(prefix, "configure")
    assert result.returncode == 1
    assert "enroll the host from the Engine again" in result.stderr
    assert files.cert.read_bytes() == engine.rogue_cert.read_bytes()


def test_one_module_at_a_time_with_its_requirements(prefix: Path) -> None:
    result = vdsm_tool(prefix, "configure", "--module", "sanlock")
    assert result.returncode == 0
    assert "Reconfiguration of sanlock is done." in result.stdout
    assert "libvirt" not in result.stdout
    assert not (prefix / "etc" / "libvirt").exists()
    assert vdsm_tool(prefix, "is-configured", "--module", "sanlock").returncode == 0
    assert vdsm_tool(prefix, "is-configured").returncode == 1

    result = vdsm_tool(prefix, "configure", "--module", "libvirt")
    assert "Reconfiguration of certificates is done." in result.stdout  # libvirt requires it
    assert vdsm_tool(prefix, "is-configured", "--module", "libvirt").returncode == 0


def test_bad_usage_exits_2_and_changes_nothing(prefix: Path) -> None:
    before = snapshot(prefix)
    for args in (("configure", "--module", "nosuch"), ("frobnicate",), ()):
        result = vdsm_tool(prefix, *args)
        assert result.returncode == 2, args
    assert "invalid choice: 'nosuch'" in vdsm_tool(prefix, "configure", "--module", "nosuch").stderr
    assert snapshot(prefix) == before


@pytest.fixture
def system_libvirtd(prefix: Path) -> Iterator[tuple[Path, int]]:
    """vdsm-tool configures the tree; a real libvirtd then runs from its files."""
    need(shutil.which("libvirtd") is not None, "libvirtd is not installed")
    need(shutil.which("unshare") is not None, "unshare is not installed (util-linux)")
    port = free_port()
    config = seed_agent_config(prefix, port)
    result = vdsm_tool(prefix, "configure")
    assert result.returncode == 0, result.stdout + result.stderr
    mounts = []
    private = (
        "/etc/libvirt",
        "/run/libvirt",
        "/var/lib/libvirt",
        "/var/log/libvirt",
        "/var/cache/libvirt",
    )
    for folder in private:
        Path(folder).mkdir(parents=True, exist_ok=True)  # the mount point
        mounts.append(f"mount --bind {prefix}{folder} {folder}")
    pid_file = prefix / "run" / "libvirtd.pid"
    script = " && ".join([*mounts, f"exec libvirtd --pid-file {pid_file}"])
    daemon = Daemon(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script],
        prefix.parent / "libvirtd.log",
    )
    try:
        daemon.wait_ready((prefix / "run" / "libvirt" / "libvirt-sock").exists, timeout=60)
        yield config, port
    finally:
        daemon.stop()


@pytest.mark.libvirt
@pytest.mark.slow
def test_the_agent_serves_tls_from_the_generated_pki_on_the_system_libvirtd(
    prefix: Path, system_libvirtd: tuple[Path, int], tmp_path: Path
) -> None:
    config, port = system_libvirtd
    files = pki.PkiFiles(prefix / "etc" / "pki" / "vdsm")
    engine_key, engine_cert = tmp_path / "engine.key", tmp_path / "engine.pem"
    key = pki.new_key()
    pki.write_key(engine_key, key)
    pki.write_cert(
        engine_cert,
        pki.issue(
            ca_cert=pki.load_cert(files.ca_cert),
            ca_key=pki.load_key(files.ca_key),
            key=key,
            name="engine",
            server=False,
        ),
    )
    agent = Daemon(
        [sys.executable, "-m", "hostvisor.api.cli", "serve", "--config", str(config)],
        tmp_path / "agent.log",
    )
    engine = client_context(ca=files.ca_cert, cert=engine_cert, key=engine_key)

    def answers() -> bool:
        try:
            with connect("127.0.0.1", port, tls=engine, timeout=10) as cli:
                cli.Host.ping()
        except OSError:
            return False
        return True

    try:
        agent.wait_ready(answers, timeout=120)
        with connect("127.0.0.1", port, tls=engine, timeout=60) as cli:
            caps = cli.Host.getCapabilities()
            assert caps["uuid"]
            assert cli.Host.getVMList() == []
        rogue = make_pki(tmp_path / "rogue")
        stranger = client_context(ca=files.ca_cert, cert=rogue.rogue_cert, key=rogue.rogue_key)
        with pytest.raises(OSError, match=r"certificate|closed|reset"):
            connect("127.0.0.1", port, tls=stranger, timeout=10).Host.ping()
        log = (prefix / "var" / "log" / "vdsm" / "vdsm.log").read_text()
        assert "hostvisor is up" in log
        assert f"qemu+unix:///system?socket={prefix}/run/libvirt/libvirt-sock" in config.read_text()
    finally:
        assert agent.stop() == 0, agent.log_text()
