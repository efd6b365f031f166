"""Mutual TLS on the API port, as VDSM does it: only clients of the host's CA are served."""

from __future__ import annotations

import gc
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.front import Front
from harness.pki import Pki, make_pki
from harness.stompclient import StompPyClient
from hostvisor.actors.errors import StartFailed
from hostvisor.api.client import ClientClosed, connect
from hostvisor.api.stomp.frames import encode
from hostvisor.api.tls import client_context

CONNECT = encode("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0"})
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - the point of these tests
TLS_VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def front(tmp_path: Path, pki: Pki) -> Iterator[Front]:
    front = Front(
        tmp_path,
        ssl=True,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        ca_file=pki.ca_cert,
    )
    yield front
    front.stop()


def good_context(pki: Pki) -> ssl.SSLContext:
    return client_context(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)


def pinned(context: ssl.SSLContext, version: str) -> ssl.SSLContext:
    context.minimum_version = context.maximum_version = TLS_VERSIONS[version]
    return context


def assert_refused(port: int, context: ssl.SSLContext) -> str:
    """Speak STOMP over TLS with `context`; the server must end it before any STOMP answer.

    Returns how it ended: the handshake failed, a TLS alert, or a plain close.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except ssl.SSLError as error:
            return f"handshake: {error.reason}"
        with tls:
            received = b""
            try:
                tls.sendall(CONNECT)
                while chunk := tls.recv(4096):
                    received += chunk
            except ssl.SSLError as error:
                outcome = f"alert: {error.reason}"
            except (ConnectionResetError, BrokenPipeError) as error:
                outcome = f"reset: {error}"
            else:
                outcome = "closed"
            assert received == b"", f"the server answered an unauthenticated peer: {received!r}"
            return outcome


def assert_served(port: int, pki: Pki) -> None:
    with connect("127.0.0.1", port, tls=good_context(pki), timeout=10) as cli:
        assert cli.Host.ping() is True
        assert cli.Host.echo(message="über") == "über"


@pytest.mark.parametrize("version", sorted(TLS_VERSIONS))
def test_a_client_without_a_certificate_is_refused(front: Front, pki: Pki, version: str):
    no_cert = pinned(client_context(ca=pki.ca_cert), version)
    outcome = assert_refused(front.port, no_cert)
    if version == "tls1.2":
        assert outcome.startswith("handshake")  # TLS 1.2 fails inside the handshake
    assert_served(front.port, pki)


@pytest.mark.parametrize("version", sorted(TLS_VERSIONS))
def test_a_certificate_from_another_ca_is_refused(front: Front, pki: Pki, version: str):
    rogue = pinned(client_context(ca=pki.ca_cert, cert=pki.rogue_cert, key=pki.rogue_key), version)
    outcome = assert_refused(front.port, rogue)
    if version == "tls1.2":
        assert outcome.startswith("handshake")
    assert_served(front.port, pki)


def test_the_client_library_fails_fast_on_a_refused_certificate(front: Front, pki: Pki):
    """With TLS 1.3 the refusal arrives after the client's handshake: still an error, not a
    wait for CONNECTED until the call timeout."""
    rogue = client_context(ca=pki.ca_cert, cert=pki.rogue_cert, key=pki.rogue_key)
    with pytest.raises((ssl.SSLError, ClientClosed)):  # not CallTimeout after 30 s
        connect("127.0.0.1", front.port, tls=rogue, timeout=30)
    assert_served(front.port, pki)


def test_a_good_certificate_is_served(front: Front, pki: Pki):
    assert_served(front.port, pki)


def test_the_client_checks_the_server_against_its_ca(front: Front, pki: Pki):
    """A client that trusts another CA does not talk to this host (and the host serves on)."""
    wrong_trust = client_context(ca=pki.rogue_ca_cert, cert=pki.client_cert, key=pki.client_key)
    with pytest.raises(ssl.SSLCertVerificationError):
        connect("127.0.0.1", front.port, tls=wrong_trust, timeout=10)
    assert_served(front.port, pki)


def test_stomp_py_with_a_good_certificate_is_served(front: Front, pki: Pki):
    client = StompPyClient(
        front.port,
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
        ca_certs=str(pki.ca_cert),
    ).connect()
    try:
        reply = client.call("Host.ping", request_id="tls-1")
        assert reply == {"jsonrpc": "2.0", "id": "tls-1", "result": True}
        assert client.call("Host.echo", {"message": [1, {"a": "é"}]})["result"] == [1, {"a": "é"}]
    finally:
        client.close()


def test_stopping_with_tls_clients_connected_leaves_nothing_behind(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
):
    """A TLS connection's handler must end with the front, not be destroyed pending later
    (which raised "Event loop is closed" at garbage collection)."""
    front = Front(
        tmp_path, ssl=True, cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert
    )
    clients = [connect("127.0.0.1", front.port, tls=good_context(pki), timeout=10) for _ in "ab"]
    assert [cli.Host.ping() for cli in clients] == [True, True]
    front.stop()
    for cli in clients:
        with pytest.raises(ClientClosed):
            cli.Host.ping()
        cli.close()
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def test_plain_stomp_is_refused_on_a_non_loopback_address(tmp_path: Path):
    with pytest.raises(StartFailed) as raised:
        Front(tmp_path, management_ip=ANY_ADDRESS)
    message = str(raised.value)
    assert "InvalidArgument" in message
    assert "plain STOMP only on loopback" in message
    assert ANY_ADDRESS in message


def test_plain_stomp_on_a_non_loopback_address_when_forced(tmp_path: Path):
    front = Front(tmp_path, management_ip=ANY_ADDRESS, allow_plain_remote=True)
    try:
        with connect("127.0.0.1", front.port, timeout=10) as cli:
            assert cli.Host.ping() is True
    finally:
        front.stop()


def test_tls_on_a_non_loopback_address_needs_no_forcing(tmp_path: Path, pki: Pki):
    front = Front(
        tmp_path,
        management_ip=ANY_ADDRESS,
        ssl=True,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        ca_file=pki.ca_cert,
    )
    try:
        assert_served(front.port, pki)
    finally:
        front.stop()


def test_a_missing_key_file_fails_the_start_clearly(tmp_path: Path, pki: Pki):
    with pytest.raises(StartFailed) as raised:
        Front(
            tmp_path,
            ssl=True,
            cert_file=pki.server_cert,
            key_file=tmp_path / "no-such.key",
            ca_file=pki.ca_cert,
        )
    assert "api/front" in str(raised.value)
