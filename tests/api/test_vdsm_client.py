"""The real `vdsm-client` console script, run as an operator runs it, against a real host."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.components import need
from harness.daemons import Daemon
from harness.front import Front
from harness.pki import make_pki
from hostvisor.actors.hypervisor.connection import embed_uri
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

BIN = Path(sys.executable).parent
VDSM_CLIENT = BIN / "vdsm-client"
HOSTVISOR = BIN / "hostvisor"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[int]:
    """The API port of an embedded host (plain STOMP on 127.0.0.1) for this module."""
    need(VDSM_CLIENT.exists(), f"{VDSM_CLIENT} is missing: run .venv/bin/pip install -e .")
    config = load_config(
        state_dir=tmp_path_factory.mktemp("state"),
        libvirt_uri=embed_uri(embed_root),
        management_port=0,
        host_sample_interval=0.2,
    )
    with EmbeddedHost(config) as host:
        yield host.address[1]


def vdsm_client(*args: str, port: int | None = None, stdin: str | None = None) -> Any:
    address = ["--insecure", "-a", "127.0.0.1", "-p", str(port)] if port is not None else []
    return subprocess.run(
        [str(VDSM_CLIENT), *address, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def answer(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON printed by a successful run, checked to be VDSM's layout."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    value = json.loads(result.stdout)
    assert result.stdout == json.dumps(value, indent=4, sort_keys=True) + "\n"
    return value


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def lscpu(columns: str) -> list[str]:
    need(shutil.which("lscpu") is not None, "lscpu is not installed (util-linux)")
    out = subprocess.run(
        ["lscpu", f"-p={columns}"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [line for line in out.splitlines() if line and not line.startswith("#")]


def kvm_usable() -> str:
    return "true" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "false"


def check_capabilities(caps: dict[str, Any]) -> None:
    """Values that must describe this machine, read here independently."""
    online = lscpu("CPU,SOCKET,CORE")
    assert caps["cpuThreads"] == str(len(online))
    assert caps["cpuCores"] == str(len({line.split(",")[2] for line in online}))
    assert caps["cpuSockets"] == str(len({line.split(",")[1] for line in online}))
    assert caps["kvmEnabled"] == kvm_usable()
    assert caps["kvmEnabled"] in {"true", "false"}
    assert caps["onlineCpus"] == ",".join(line.split(",")[0] for line in online)
    assert caps["kernelArgs"] == Path("/proc/cmdline").read_text().strip()
    assert caps["boot_uuid"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert caps["lastClientIface"] == "lo"


def check_stats(stats: dict[str, Any]) -> None:
    for key in ("cpuUser", "cpuSys", "cpuIdle"):
        assert isinstance(stats[key], str), key
        assert 0.0 <= float(stats[key]) <= 100.0, (key, stats[key])
    assert isinstance(stats["memFree"], int)
    assert stats["memFree"] > 0
    assert float(stats["elapsedTime"]) >= 0


@pytest.mark.libvirt
def test_get_capabilities_prints_this_machine(port: int):
    check_capabilities(answer(vdsm_client("Host", "getCapabilities", port=port)))


@pytest.mark.libvirt
def test_get_stats(port: int):
    check_stats(answer(vdsm_client("Host", "getStats", port=port)))


@pytest.mark.libvirt
def test_echo_with_a_name_value_param(port: int):
    result = vdsm_client("Host", "echo", "message=hi", port=port)
    assert answer(result) == "hi"
    assert result.stdout == '"hi"\n'
    assert answer(vdsm_client("Host", "echo", "message=a=b c", port=port)) == "a=b c"


@pytest.mark.libvirt
def test_params_from_a_json_file(port: int, tmp_path: Path):
    message = {"nested": [1, 2.5, None, True, {"ü": "日本"}], "empty": {}}
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"message": message}), encoding="utf-8")
    assert answer(vdsm_client("-f", str(params), "Host", "echo", port=port)) == message


@pytest.mark.libvirt
def test_params_from_stdin(port: int):
    stdin = json.dumps({"message": ["from", "stdin", 3]})
    assert answer(vdsm_client("-f", "-", "Host", "echo", port=port, stdin=stdin)) == [
        "from",
        "stdin",
        3,
    ]


@pytest.mark.libvirt
def test_name_value_params_override_the_file(port: int, tmp_path: Path):
    params = tmp_path / "params.json"
    params.write_text('{"message": "from the file"}')
    result = vdsm_client("-f", str(params), "Host", "echo", "message=from argv", port=port)
    assert answer(result) == "from argv"


def test_an_unknown_verb_is_rejected_by_the_parser():
    result = vdsm_client("Host", "noSuchVerb", port=1)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "noSuchVerb" in result.stderr
    result = vdsm_client("NoSuchNamespace", "ping", port=1)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.mark.libvirt
def test_a_server_error_is_reported_on_stderr_with_status_1(port: int):
    result = vdsm_client("Host", "setLogLevel", "level=NOPE", port=port)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("vdsm-client: ")
    assert "NOPE" in result.stderr
    assert "code 91" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "No such file"),
        ("{not json", "Expecting property name"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_a_bad_params_file_is_a_clear_error(tmp_path: Path, content: str | None, expected: str):
    params = tmp_path / "params.json"
    if content is not None:
        params.write_text(content)
    result = vdsm_client("-f", str(params), "Host", "echo", port=free_port())
    assert result.returncode == 1
    assert result.stderr.startswith("vdsm-client: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_param_without_equals_is_a_clear_error():
    result = vdsm_client("Host", "echo", "hi", port=free_port())
    assert result.returncode == 1
    assert "expected name=value" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dead_port_is_a_clear_error():
    result = vdsm_client("Host", "ping", port=free_port())
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("vdsm-client: ")
    assert "refused" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_help_lists_namespaces_and_verbs():
    top = vdsm_client("-h")
    assert top.returncode == 0
    assert "Host" in top.stdout
    assert "--insecure" in top.stdout
    host = vdsm_client("Host", "-h")
    assert host.returncode == 0
    for verb in ("getCapabilities", "getStats", "echo", "ping", "setLogLevel"):
        assert verb in host.stdout, verb


def test_verb_help_shows_its_params_and_a_json_template():
    result = vdsm_client("Host", "setLogLevel", "-h")
    assert result.returncode == 0
    text = result.stdout
    assert "level" in text
    assert "optional" in text  # `name` has a default
    assert json_template(text) == {"level": "string|integer", "name": "string"}
    echo = vdsm_client("Host", "echo", "-h")
    assert echo.returncode == 0
    assert "message" in echo.stdout
    assert json_template(echo.stdout) == {"message": "any"}
    ping = vdsm_client("Host", "ping", "-h")
    assert json_template(ping.stdout) == {}


def json_template(help_text: str) -> Any:
    start = help_text.index("{", help_text.index("JSON template"))
    return json.JSONDecoder().raw_decode(help_text, start)[0]


def test_mutual_tls_with_the_pki_options(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    front = Front(
        tmp_path, ssl=True, cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert
    )
    try:
        address = ["-a", "127.0.0.1", "-p", str(front.port), "--cafile", str(pki.ca_cert)]
        good = ["--certfile", str(pki.client_cert), "--keyfile", str(pki.client_key)]
        assert answer(vdsm_client(*address, *good, "Host", "echo", "message=tls")) == "tls"
        rogue = ["--certfile", str(pki.rogue_cert), "--keyfile", str(pki.rogue_key)]
        refused = vdsm_client(*address, *rogue, "Host", "ping")
        assert refused.returncode == 1
        assert refused.stderr.startswith("vdsm-client: ")
        assert "Traceback" not in refused.stderr
        plain = vdsm_client("--insecure", *address, "Host", "ping")
        assert plain.returncode == 1
        assert "Traceback" not in plain.stderr
    finally:
        front.stop()


@pytest.mark.slow
@pytest.mark.libvirt
def test_against_hostvisor_serve(tmp_path: Path):
    """The `make run` path: a real `hostvisor serve`, reached by `vdsm-client`."""
    need(HOSTVISOR.exists(), f"{HOSTVISOR} is missing: run .venv/bin/pip install -e .")
    need(VDSM_CLIENT.exists(), f"{VDSM_CLIENT} is missing: run .venv/bin/pip install -e .")
    need(Path("/usr/bin/qemu-system-x86_64").exists(), "qemu-system-x86 is not installed")
    port = free_port()
    conf = tmp_path / "vdsm.conf"
    conf.write_text(f"[addresses]\nmanagement_port = {port}\n")
    # Short: QEMU's monitor sockets live under it, and a UNIX socket path has 107 bytes.
    state = Path(tempfile.mkdtemp(prefix="hv-"))
    daemon = Daemon(
        [str(HOSTVISOR), "serve", "--config", str(conf), "--state-dir", str(state)],
        tmp_path / "serve.log",
    )
    try:
        daemon.wait_ready(lambda: "hostvisor is up" in daemon.log_text(), timeout=90)
        check_capabilities(answer(vdsm_client("Host", "getCapabilities", port=port)))
        check_stats(answer(vdsm_client("Host", "getStats", port=port)))
        assert answer(vdsm_client("Host", "ping", port=port)) is True
        os.kill(daemon.pid, signal.SIGINT)
        assert daemon.process.wait(timeout=15) == 0
    finally:
        daemon.stop()
        shutil.rmtree(state, ignore_errors=True)
    log = daemon.log_text()
    assert "Traceback" not in log
    assert vdsm_client("Host", "ping", port=port).returncode == 1  # it is gone
