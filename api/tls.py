"""TLS contexts: mutual TLS as VDSM does it (the client must show a CA-signed cert).

Cipher policy of the server (`server_context`): TLS 1.2 and 1.3 only. On TLS 1.2
only forward-secret AEAD suites (ECDHE key exchange with an RSA or ECDSA host key,
AES-GCM or ChaCha20-Poly1305) — no RSA key exchange, no CBC, no SHA-1 MAC; a client
that offers nothing else (say only AES128-SHA) is refused with a handshake_failure
alert. TLS 1.3 uses OpenSSL's suites, which are all AEAD and forward-secret. The
Engine's client (vdsm-jsonrpc-java) builds `SSLContext.getInstance("TLS")` with the
JDK's defaults, which offer TLS 1.3 and, on TLS 1.2,
TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128,256}_GCM_SHA*: it is served.

A refused handshake is logged by the STOMP server through `RefusalLog` (one
WARNING per refusal with the peer and OpenSSL's reason, at most `limit` lines per
window, then one summary line), and the TLS alert OpenSSL wrote is sent to the
peer (`alert_of`), which asyncio alone would drop when it aborts the transport.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from hostvisor.actors.errors import InvalidArgument

log = logging.getLogger(__name__)

TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
)
"""The TLS 1.2 suites the server accepts, strongest first (Mozilla's "intermediate" without
DHE: Python's ssl sets no DH parameters, so OpenSSL 3 would never pick a DHE suite)."""


class _AlertKeepingObject(ssl.SSLObject):
    """An SSLObject that keeps the alert OpenSSL wrote when its handshake failed.

    asyncio aborts the transport on a failed handshake without sending what is
    left in the outgoing BIO: the alert. This object moves those bytes onto the
    exception (`alert_of(error)`), so the server can send them itself.
    """

    _outgoing_bio: ssl.MemoryBIO | None = None

    def do_handshake(self) -> None:
        """Run a handshake step (the loop's thread; never blocks).

        Raises:
            ssl.SSLWantReadError, ssl.SSLWantWriteError: more bytes are needed.
            ssl.SSLError: the handshake failed; the alert rides on the error.
        """
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLSyscallError):
            raise  # not a verdict (asyncio retries a syscall error): the bytes are its to send
        except ssl.SSLError as error:
            bio = self._outgoing_bio
            if bio is not None and bio.pending:
                error.hostvisor_alert = bio.read()  # type: ignore[attr-defined]
            raise


class _ServerContext(ssl.SSLContext):
    """A server context whose memory-BIO objects keep their failure alert."""

    sslobject_class = _AlertKeepingObject

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,  # noqa: FBT001, FBT002 - the stdlib's signature
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Wrap a BIO pair as the stdlib does, remembering the outgoing BIO."""
        obj = super().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        if isinstance(obj, _AlertKeepingObject):
            obj._outgoing_bio = outgoing  # noqa: SLF001 - our own subclass
        return obj


def alert_of(error: BaseException) -> bytes:
    """Return the TLS alert record(s) OpenSSL wrote for a failed handshake (or b"")."""
    alert = getattr(error, "hostvisor_alert", b"")
    return alert if isinstance(alert, bytes) else b""


def server_context(*, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Return a server context that requires a client certificate signed by `ca`.

    TLS 1.2 with forward-secret AEAD suites only (`TLS12_CIPHERS`), or TLS 1.3.

    Raises:
        OSError, ssl.SSLError: a file is missing or does not hold what it should.
    """
    context = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    context.load_cert_chain(certfile=cert, keyfile=key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def check_server_files(*, cert: Path, key: Path, ca: Path) -> None:
    """Check that the server's TLS files load: readable, PEM, the key matches the cert.

    Runs on the caller's thread (reads three small files).

    Raises:
        InvalidArgument: naming the file and what is wrong with it.
    """
    for setting, path in (("cert_file", cert), ("key_file", key), ("ca_file", ca)):
        try:
            with path.open("rb") as stream:
                stream.read(1)
        except OSError as error:
            raise InvalidArgument(
                setting=setting, path=str(path), reason=f"cannot read: {error.strerror}"
            ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise InvalidArgument(
                setting="key_file",
                path=str(key),
                cert_file=str(cert),
                reason="the key does not match the certificate",
            ) from None
        raise InvalidArgument(
            setting="cert_file/key_file",
            cert_file=str(cert),
            key_file=str(key),
            reason=f"not a PEM certificate and its key: {error.reason or error}",
        ) from None
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as error:
        raise InvalidArgument(
            setting="ca_file",
            path=str(ca),
            reason=f"not a PEM CA certificate: {error.reason or error}",
        ) from None


def refusal_reason(error: BaseException) -> str:
    """Say why a handshake failed, in OpenSSL's words where it has some."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"{error.reason} ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return error.reason or error.__class__.__name__
    if isinstance(error, TimeoutError | ConnectionAbortedError):
        return "handshake not finished in time"
    return f"{error.__class__.__name__}: {error}".rstrip(": ")


class RefusalLog:
    """Logs refused handshakes: one WARNING each, at most `limit` per `window` seconds.

    Past the limit, refusals are counted and one summary line is logged when the
    window ends (`flush`), so a scanner cannot flood the log. Runs on the loop's
    thread only (not thread-safe).

    Args:
        limit: lines per window before refusals are only counted.
        window: seconds of one window.
        clock: a monotonic clock (tests inject a manual one).
    """

    def __init__(
        self,
        *,
        limit: int = 10,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start with an empty window."""
        self.limit = limit
        self.window = window
        self._clock = clock
        self._window_start = -float("inf")
        self._logged = 0
        self.suppressed = 0

    def refused(self, peer: str, reason: str) -> float | None:
        """Log (or count) one refusal (the loop's thread; never blocks).

        Returns:
            None, or, when this refusal is the first one not logged in its window,
            the seconds after which the caller should call `flush` (the loop's
            call_later) so the summary appears even if the refusals stop.
        """
        now = self._clock()
        if now - self._window_start >= self.window:
            self.flush()
            self._window_start = now
            self._logged = 0
        if self._logged < self.limit:
            self._logged += 1
            log.warning("TLS handshake from %s refused: %s", peer, reason)
            return None
        self.suppressed += 1
        if self.suppressed > 1:
            return None
        return max(self._window_start + self.window - now, 0.0)

    def flush(self) -> None:
        """Log how many refusals were not logged since the last summary, if any."""
        if self.suppressed:
            log.warning(
                "%d more TLS handshakes refused in the last %g s (not logged one by one)",
                self.suppressed,
                self.window,
            )
            self.suppressed = 0


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
