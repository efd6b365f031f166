"""The host's PKI at VDSM's paths: a standalone CA and host certificate, made with `cryptography`.

A host the Engine enrolled holds the Engine's CA certificate and a host certificate
the Engine signed (`certs/cacert.pem`, `certs/vdsmcert.pem`, `keys/vdsmkey.pem` under
/etc/pki/vdsm); it is used as it is. A standalone host gets its own CA, whose key is
kept beside the host key (`keys/cakey.pem`, mode 0600): whoever holds it can sign
the Engine-side (client) certificates the agent will accept (`issue`).

Keys are RSA 2048 (what the Engine's own CA issues, and what every TLS stack of the
hosts' peers — the Engine's Java client, libvirt's GnuTLS, QEMU — accepts). Every
function runs on the caller's thread and blocks on file I/O only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_BITS = 2048
CA_DAYS = 3650
HOST_DAYS = 1825
ORGANIZATION = "Hostvisor standalone host"


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """The PKI files of one host (VDSM's names under its PKI directory)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate the agent trusts clients by (the Engine's, or ours)."""
        return self.directory / "certs" / "cacert.pem"

    @property
    def cert(self) -> Path:
        """The host's certificate (server and client)."""
        return self.directory / "certs" / "vdsmcert.pem"

    @property
    def key(self) -> Path:
        """The host's private key (mode 0600)."""
        return self.directory / "keys" / "vdsmkey.pem"

    @property
    def ca_key(self) -> Path:
        """A standalone host's CA key (absent on a host the Engine enrolled)."""
        return self.directory / "keys" / "cakey.pem"


def new_key() -> rsa.RSAPrivateKey:
    """A new RSA key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """Write `key` as PEM, mode 0600, atomically (never readable by others, even briefly)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    """Write `cert` as PEM, mode 0644, atomically."""
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
    partial.chmod(mode)
    partial.replace(path)


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""The keys a host may hold: ours are RSA; an Engine's (or a test's) may be EC."""


def load_key(path: Path) -> PrivateKey:
    """Read an RSA or EC private key. Raises OSError, ValueError (not such a PEM key)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: neither an RSA nor an EC key")  # noqa: TRY004 - content
    return key


def same_key(first: object, second: object) -> bool:
    """Whether two public keys are the same key."""
    der, info = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(first.public_bytes(der, info) == second.public_bytes(der, info))  # type: ignore[attr-defined]


def load_cert(path: Path) -> x509.Certificate:
    """Read a PEM certificate. Raises OSError, ValueError."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(key: rsa.RSAPrivateKey, name: str) -> x509.Certificate:
    """A self-signed CA certificate for `key`."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA"),
        ]
    )
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def issue(  # noqa: PLR0913 - the certificate's fields, keyword-only
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    key: PrivateKey,
    name: str,
    server: bool = True,
    client: bool = True,
    names: tuple[str, ...] = (),
    days: int = HOST_DAYS,
) -> x509.Certificate:
    """A certificate for `key` signed by the CA, for TLS servers and/or clients.

    `names` become subject alternative names (IP literals as IP addresses).
    """
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def host_names() -> tuple[str, ...]:
    """The names a host certificate carries: its FQDN, localhost and the loopbacks."""
    fqdn = socket.getfqdn() or "localhost.localdomain"
    return tuple(dict.fromkeys((fqdn, socket.gethostname(), "localhost", "127.0.0.1", "::1")))


def problems(files: PkiFiles) -> list[str]:
    """What is wrong with the host's PKI (empty: a usable CA, certificate and key).

    The certificate must be signed by the CA, match the key, and be valid now.
    """
    try:
        ca = load_cert(files.ca_cert)
        cert = load_cert(files.cert)
        key = load_key(files.key)
    except (OSError, ValueError) as error:
        return [f"cannot read the PKI: {error}"]
    found = []
    if not same_key(cert.public_key(), key.public_key()):
        found.append(f"{files.key} does not match {files.cert}")
    if not signed_by(cert, ca):
        found.append(f"{files.cert} is not signed by {files.ca_cert}")
    now = _now()
    for path, each in ((files.cert, cert), (files.ca_cert, ca)):
        if not each.not_valid_before.replace(tzinfo=dt.UTC) <= now:
            found.append(f"{path} is not valid yet")
        if not now <= each.not_valid_after.replace(tzinfo=dt.UTC):
            found.append(f"{path} expired on {each.not_valid_after:%Y-%m-%d}")
    return found


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca`'s key signed `cert` (RSA PKCS#1 v1.5 or ECDSA)."""
    public, algorithm = ca.public_key(), cert.signature_hash_algorithm
    if cert.issuer != ca.subject or algorithm is None:
        return False
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def ours(files: PkiFiles) -> bool:
    """Whether the CA is this host's own (its key is here and matches the CA certificate)."""
    try:
        ca = load_cert(files.ca_cert)
        ca_key = load_key(files.ca_key)
    except (OSError, ValueError):
        return False
    return same_key(ca.public_key(), ca_key.public_key())


def make_standalone(files: PkiFiles, *, reissue: bool = False) -> list[Path]:
    """Make what is missing of a standalone PKI; return the files written.

    A CA (and its key) only when there is no CA certificate; the host key when
    missing; the host certificate when missing, not matching, or `reissue`.

    Raises:
        ValueError: a CA certificate is present without its key (the Engine's) and
            the host certificate must be made: only the Engine can sign it.
    """
    written: list[Path] = []
    if not files.ca_cert.exists():
        ca_key = new_key()
        write_key(files.ca_key, ca_key)
        write_cert(files.ca_cert, make_ca(ca_key, socket.gethostname()))
        written += [files.ca_key, files.ca_cert]
    if not files.key.exists():
        write_key(files.key, new_key())
        written.append(files.key)
    if reissue or problems(files):
        if not ours(files):
            raise ValueError(
                f"{files.cert} must be signed by {files.ca_cert}, whose key is not here: "
                "enroll the host from the Engine again"
            )
        cert = issue(
            ca_cert=load_cert(files.ca_cert),
            ca_key=load_key(files.ca_key),
            key=load_key(files.key),
            name=socket.getfqdn() or "localhost",
            names=host_names(),
        )
        write_cert(files.cert, cert)
        written.append(files.cert)
    return written
