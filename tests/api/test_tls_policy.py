"""The API's TLS policy on real sockets: forward-secret AEAD suites only, refusals logged.

The host here has an RSA certificate (as VDSM's are), so a client offering only RSA
key exchange (AES128-SHA) could be served if the policy let it: it must not be.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.front import Front
from harness.pki import Pki, make_pki
from harness.waiting import wait_for
from hostvisor.actors.clock import ManualClock
from hostvisor.api.client import connect
from hostvisor.api.rpc.dispatch import Origin
from hostvisor.api.stomp.frames import encode
from hostvisor.api.stomp.server import StompServer
from hostvisor.api.tls import RefusalLog, client_context, server_context

CONNECT = encode("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0"})
TLS_LOG = "hostvisor.api.tls"


# -- an RSA PKI (the harness's is EC P-256) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RsaPki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], capture_output=True, check=True, timeout=60)


def make_rsa_pki(directory: Path) -> RsaPki:
    """A CA, a server (SAN 127.0.0.1) and a client, RSA 2048 like vdsm-tool makes."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/O=Hostvisor tests/CN=rsa-ca", "-keyout", str(ca_key), "-out", str(ca),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    leaves = {}
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        cert, key, csr = (directory / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr"))
        ext = directory / f"{name}.ext"
        ext.write_text(
            f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1\n"
        )
        _openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        leaves[name] = (cert, key)
    return RsaPki(
        ca_cert=ca,
        server_cert=leaves["server"][0],
        server_key=leaves["server"][1],
        client_cert=leaves["client"][0],
        client_key=leaves["client"][1],
    )


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> RsaPki:
    return make_rsa_pki(tmp_path_factory.mktemp("rsa-pki"))


@pytest.fixture(scope="module")
def ec_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("ec-pki"))


@pytest.fixture
def front(tmp_path: Path, rsa_pki: RsaPki) -> Iterator[Front]:
    front = Front(
        tmp_path,
        ssl=True,
        cert_file=rsa_pki.server_cert,
        key_file=rsa_pki.server_key,
        ca_file=rsa_pki.ca_cert,
    )
    yield front
    front.stop()


def tls12(pki: RsaPki | Pki, ciphers: str) -> ssl.SSLContext:
    """A TLS 1.2 client with a good certificate offering only `ciphers`."""
    context = client_context(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def tls13(pki: RsaPki | Pki) -> ssl.SSLContext:
    context = client_context(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def stomp_over(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    """Connect, speak STOMP; return (TLS version, cipher) once CONNECTED arrives."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(CONNECT)
        received = b""
        while b"\x00" not in received:
            chunk = tls.recv(4096)
            assert chunk, f"closed before CONNECTED: {received!r}"
            received += chunk
        assert received.startswith(b"CONNECTED"), received
        version, cipher = tls.version(), tls.cipher()
        assert version is not None
        assert cipher is not None
        return version, cipher[0]


def refused_at_handshake(port: int, context: ssl.SSLContext) -> tuple[str, str]:
    """Return (the client's local address, the SSL error reason) of a refused handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        local = "{}:{}".format(*raw.getsockname())
        with pytest.raises(ssl.SSLError) as raised:
            context.wrap_socket(raw, server_hostname="127.0.0.1")
        return local, str(raised.value.reason)


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == TLS_LOG and r.levelno == logging.WARNING and "refused:" in r.getMessage()
    ]


# -- the cipher policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "ciphers",
    [
        "AES128-SHA",  # RSA key exchange, CBC, SHA-1: the probe
        "AES256-GCM-SHA384",  # AEAD but RSA key exchange: no forward secrecy
        "ECDHE-RSA-AES128-SHA",  # forward secret but CBC with SHA-1
        "ECDHE-RSA-AES256-SHA384",  # forward secret but CBC
    ],
)
def test_a_tls12_client_without_forward_secret_aead_suites_is_refused_with_an_alert(
    front: Front, rsa_pki: RsaPki, caplog: pytest.LogCaptureFixture, ciphers: str
):
    local, reason = refused_at_handshake(front.port, tls12(rsa_pki, ciphers))
    assert reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"  # the server's alert, not a bare close
    wait_for(lambda: any(local in line for line in refusal_lines(caplog)), 10, "the refusal logged")
    [line] = [line for line in refusal_lines(caplog) if local in line]
    assert line == f"TLS handshake from {local} refused: NO_SHARED_CIPHER"
    assert stomp_over(front.port, tls13(rsa_pki))[0] == "TLSv1.3"  # served on


def test_openssl_s_client_offering_only_aes128_sha_gets_a_handshake_failure_alert(
    front: Front, rsa_pki: RsaPki
):
    result = subprocess.run(
        [
            "openssl", "s_client", "-connect", f"127.0.0.1:{front.port}",
            "-tls1_2", "-cipher", "AES128-SHA",
            "-cert", str(rsa_pki.client_cert), "-key", str(rsa_pki.client_key),
            "-CAfile", str(rsa_pki.ca_cert),
        ],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "alert handshake failure" in result.stderr, result.stderr


@pytest.mark.parametrize("ciphers", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"])
def test_the_engines_tls12_suites_are_served(front: Front, rsa_pki: RsaPki, ciphers: str):
    """vdsm-jsonrpc-java takes the JDK's defaults; with an RSA host key on TLS 1.2 that is
    ECDHE-RSA with AES-GCM."""
    assert stomp_over(front.port, tls12(rsa_pki, ciphers)) == ("TLSv1.2", ciphers)
    with connect("127.0.0.1", front.port, tls=tls12(rsa_pki, ciphers), timeout=10) as cli:
        assert cli.Host.ping() is True


def test_tls13_is_served(front: Front, rsa_pki: RsaPki):
    version, cipher = stomp_over(front.port, tls13(rsa_pki))
    assert version == "TLSv1.3"
    assert cipher.startswith("TLS_")


def test_a_default_tls12_client_gets_an_ecdhe_aead_suite(front: Front, rsa_pki: RsaPki):
    context = client_context(ca=rsa_pki.ca_cert, cert=rsa_pki.client_cert, key=rsa_pki.client_key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = stomp_over(front.port, context)
    assert version == "TLSv1.2"
    assert re.fullmatch(r"ECDHE-RSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)", cipher)


def test_an_ecdsa_host_serves_ecdhe_ecdsa_gcm(tmp_path: Path, ec_pki: Pki):
    front = Front(
        tmp_path,
        ssl=True,
        cert_file=ec_pki.server_cert,
        key_file=ec_pki.server_key,
        ca_file=ec_pki.ca_cert,
    )
    try:
        suite = "ECDHE-ECDSA-AES256-GCM-SHA384"
        assert stomp_over(front.port, tls12(ec_pki, suite)) == ("TLSv1.2", suite)
        refused_at_handshake(front.port, tls12(ec_pki, "ECDHE-ECDSA-AES128-SHA"))
    finally:
        front.stop()


def test_the_server_offers_no_suite_outside_the_policy(rsa_pki: RsaPki):
    context = server_context(cert=rsa_pki.server_cert, key=rsa_pki.server_key, ca=rsa_pki.ca_cert)
    for suite in context.get_ciphers():
        name, protocol = suite["name"], suite["protocol"]
        if protocol == "TLSv1.3":
            continue
        assert protocol == "TLSv1.2", suite
        assert suite["aead"], suite
        assert suite["kea"] == "kx-ecdhe", suite
        assert "CBC" not in suite["description"], name
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


# -- refusals in the log -----------------------------------------------------------------


def test_refused_client_certificates_are_logged_with_peer_and_reason(
    tmp_path: Path, ec_pki: Pki, caplog: pytest.LogCaptureFixture
):
    """The strict mTLS matrix's refusals are no longer silent."""
    front = Front(
        tmp_path,
        ssl=True,
        cert_file=ec_pki.server_cert,
        key_file=ec_pki.server_key,
        ca_file=ec_pki.ca_cert,
    )
    try:
        no_cert = client_context(ca=ec_pki.ca_cert)
        no_cert.maximum_version = ssl.TLSVersion.TLSv1_2
        local, reason = refused_at_handshake(front.port, no_cert)
        assert reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"  # the alert OpenSSL sends
        wait_for(lambda: any(local in x for x in refusal_lines(caplog)), 10, "no-cert refusal")
        [line] = [x for x in refusal_lines(caplog) if local in x]
        assert line.endswith("PEER_DID_NOT_RETURN_A_CERTIFICATE")

        rogue = client_context(ca=ec_pki.ca_cert, cert=ec_pki.rogue_cert, key=ec_pki.rogue_key)
        rogue.maximum_version = ssl.TLSVersion.TLSv1_2
        local, reason = refused_at_handshake(front.port, rogue)
        assert reason == "TLSV1_ALERT_UNKNOWN_CA"
        wait_for(lambda: any(local in x for x in refusal_lines(caplog)), 10, "rogue refusal")
        [line] = [x for x in refusal_lines(caplog) if local in x]
        assert line.endswith("CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate)")
    finally:
        front.stop()


def test_plain_stomp_on_the_tls_port_is_logged_as_a_refusal(
    front: Front, caplog: pytest.LogCaptureFixture
):
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as raw:
        local = "{}:{}".format(*raw.getsockname())
        raw.sendall(CONNECT)
        assert b"CONNECTED" not in raw.recv(4096)
    wait_for(lambda: any(local in x for x in refusal_lines(caplog)), 10, "plain refusal")


class _NoAnswers:
    """A request handler for a listener whose clients never get past TLS."""

    def decode(self, body: bytes) -> bytes:
        return body

    async def answer(self, _body: object, _origin: Origin) -> bytes | None:
        return None


class _Listener:
    """A bare StompServer on its own loop thread, with a given RefusalLog."""

    def __init__(self, context: ssl.SSLContext, refusals: RefusalLog) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop")
        self.thread.start()

        self.server = StompServer(_NoAnswers(), ssl_context=context, refusals=refusals)
        listening = asyncio.run_coroutine_threadsafe(self.server.listen("127.0.0.1", 0), self.loop)
        self.port = listening.result(timeout=10)[1]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def test_a_scanner_cannot_flood_the_log(rsa_pki: RsaPki, caplog: pytest.LogCaptureFixture):
    """30 refused handshakes: at most `limit` lines per window, the rest in a summary."""
    context = server_context(cert=rsa_pki.server_cert, key=rsa_pki.server_key, ca=rsa_pki.ca_cert)
    listener = _Listener(context, RefusalLog(limit=3, window=1.0))
    try:
        probes = 30
        for _ in range(probes):
            refused_at_handshake(listener.port, tls12(rsa_pki, "AES128-SHA"))

        def accounted() -> int:
            summaries = [
                int(r.getMessage().split()[0])
                for r in caplog.records
                if r.name == TLS_LOG and "more TLS handshakes refused" in r.getMessage()
            ]
            return len(refusal_lines(caplog)) + sum(summaries)

        wait_for(lambda: accounted() == probes, 10, "every refusal logged or summarised")
        assert len(refusal_lines(caplog)) < probes
    finally:
        listener.close()


def test_refusal_log_limits_lines_per_window(caplog: pytest.LogCaptureFixture):
    clock = ManualClock()
    refusals = RefusalLog(limit=2, window=10.0, clock=clock.monotonic)
    assert refusals.refused("10.0.0.1:1", "NO_SHARED_CIPHER") is None
    clock.advance(1)
    assert refusals.refused("10.0.0.1:2", "NO_SHARED_CIPHER") is None
    assert refusals.refused("10.0.0.1:3", "NO_SHARED_CIPHER") == 9.0  # flush at window end
    assert refusals.refused("10.0.0.1:4", "NO_SHARED_CIPHER") is None  # flush already due
    assert len(refusal_lines(caplog)) == 2
    clock.advance(9)
    refusals.flush()
    summary = [r.getMessage() for r in caplog.records if "more TLS" in r.getMessage()]
    assert summary == ["2 more TLS handshakes refused in the last 10 s (not logged one by one)"]
    assert refusals.refused("10.0.0.1:5", "NO_SHARED_CIPHER") is None  # a new window
    assert len(refusal_lines(caplog)) == 3
    refusals.flush()  # nothing suppressed: no line
    assert len([r for r in caplog.records if "more TLS" in r.getMessage()]) == 1
