"""`hostvisor serve` refuses a bad configuration before anything starts: exit 2, one line.

"Before anything starts" is checked from outside: no state directory (the tree's
first act is to make it, and the libvirt embed root lives in it), no log line of
the tree, and an exit well under what a tree start takes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.pki import Pki, make_pki
from hostvisor.actors.errors import InvalidArgument
from hostvisor.api.server import EXIT_BAD_CONFIG, check_config, serve
from hostvisor.supervision.config import load_config

SERVE = [sys.executable, "-m", "hostvisor.api.cli", "serve"]
QUICK = 10.0
"""Seconds a refusal may take: an interpreter start and a few file reads (a tree start
with libvirt takes longer, and the test also proves nothing of it ran)."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_conf(pki: Pki, **files: Path) -> str:
    paths = {
        "key_file": pki.server_key,
        "cert_file": pki.server_cert,
        "ca_file": pki.ca_cert,
        **files,
    }
    lines = "".join(f"{name} = {path}\n" for name, path in paths.items())
    return f"[vars]\nssl = true\n[addresses]\nmanagement_ip = 0.0.0.0\n[hostvisor]\n{lines}"


def _plain_remote(_pki: Pki, _tmp: Path) -> str:
    return "[vars]\nssl = false\n[addresses]\nmanagement_ip = 0.0.0.0\n"


def _missing_key(pki: Pki, tmp: Path) -> str:
    return tls_conf(pki, key_file=tmp / "no-such.key")


def _unreadable_cert(pki: Pki, tmp: Path) -> str:
    (tmp / "cert-dir").mkdir()  # root reads any file: a directory cannot be read as one
    return tls_conf(pki, cert_file=tmp / "cert-dir")


def _missing_ca(pki: Pki, tmp: Path) -> str:
    return tls_conf(pki, ca_file=tmp / "no-such-ca.pem")


def _mismatched_key(pki: Pki, _tmp: Path) -> str:
    return tls_conf(pki, key_file=pki.client_key)


def _garbage_cert(pki: Pki, tmp: Path) -> str:
    (tmp / "garbage.pem").write_text("not a certificate\n")
    return tls_conf(pki, cert_file=tmp / "garbage.pem")


def _garbage_ca(pki: Pki, tmp: Path) -> str:
    (tmp / "garbage-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
    return tls_conf(pki, ca_file=tmp / "garbage-ca.pem")


BAD_CONFIGS: dict[str, tuple[Callable[[Pki, Path], str], list[str]]] = {
    "plain-off-loopback": (_plain_remote, ["plain STOMP only on loopback", "0.0.0.0"]),  # noqa: S104
    "missing-key": (_missing_key, ["key_file", "no-such.key", "No such file"]),
    "unreadable-cert": (_unreadable_cert, ["cert_file", "cert-dir", "Is a directory"]),
    "missing-ca": (_missing_ca, ["ca_file", "no-such-ca.pem", "No such file"]),
    "key-not-of-cert": (_mismatched_key, ["key_file", "does not match the certificate"]),
    "cert-not-pem": (_garbage_cert, ["garbage.pem", "not a PEM certificate"]),
    "ca-not-pem": (_garbage_ca, ["ca_file", "garbage-ca.pem", "not a PEM CA"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_serve_refuses_a_bad_config_before_the_tree_starts(tmp_path: Path, pki: Pki, case: str):
    write, expected = BAD_CONFIGS[case]
    conf = tmp_path / "vdsm.conf"
    conf.write_text(write(pki, tmp_path))
    state = tmp_path / "state"
    started = time.monotonic()
    result = subprocess.run(
        [*SERVE, "--config", str(conf), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()  # one clear line, no traceback, no tree log
    assert line.startswith("hostvisor: bad configuration: Invalid parameter")
    for words in expected:
        assert words in line
    assert not state.exists()  # the tree's first act; the libvirt embed root lives there
    assert elapsed < QUICK


def test_tls_off_loopback_with_good_files_passes_the_check(tmp_path: Path, pki: Pki):
    conf = tmp_path / "vdsm.conf"
    conf.write_text(tls_conf(pki))
    check_config(load_config(conf))


def test_plain_off_loopback_when_forced_passes_the_check(tmp_path: Path):
    check_config(
        load_config(state_dir=tmp_path, management_ip="0.0.0.0", allow_plain_remote=True)  # noqa: S104
    )


def test_serve_itself_refuses_a_bad_config_with_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Callers of `serve` other than the CLI get the same refusal (and no tree)."""
    config = load_config(state_dir=tmp_path / "state", management_ip="192.0.2.1")
    with pytest.raises(InvalidArgument):
        check_config(config)
    assert serve(config) == EXIT_BAD_CONFIG
    assert "plain STOMP only on loopback" in caplog.text
    assert not (tmp_path / "state").exists()


def test_the_api_memory_budgets_are_read_from_the_config(tmp_path: Path):
    conf = tmp_path / "vdsm.conf"
    conf.write_text("[hostvisor]\nconnection_memory_bytes = 4194304\napi_memory_bytes = 8388608\n")
    config = load_config(conf)
    assert (config.connection_memory_bytes, config.api_memory_bytes) == (4 << 20, 8 << 20)
    defaults = load_config()
    assert (defaults.connection_memory_bytes, defaults.api_memory_bytes) == (32 << 20, 96 << 20)
    conf.write_text("[hostvisor]\napi_memory_bytes = lots\n")
    with pytest.raises(InvalidArgument) as bad:
        load_config(conf)
    assert "api_memory_bytes" in str(bad.value)
