"""TLS contexts: mutual TLS as VDSM does it (the client must show a CA-signed cert)."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(*, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Return a server context that requires a client certificate signed by `ca`.

    Raises:
        OSError, ssl.SSLError: a file is missing or does not hold what it should.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    *, ca: Path | None, cert: Path | None = None, key: Path | None = None, verify: bool = True
) -> ssl.SSLContext:
    """Return a client context presenting `cert` and checking the server against `ca`.

    With `verify=False` (vdsm-client's --insecure) the server is not checked.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        context.load_verify_locations(cafile=ca)
        context.check_hostname = False  # hosts are addressed by IP; the CA is ours
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(certfile=cert, keyfile=key)
    return context
