"""A throwaway PKI for TLS tests, made with the `openssl` command line (EC P-256).

pki = make_pki(tmp_path / "pki")
pki.server_cert, pki.server_key   # the host's, signed by pki.ca_cert, SAN IP:127.0.0.1
pki.client_cert, pki.client_key   # an Engine's, signed by pki.ca_cert
pki.rogue_cert, pki.rogue_key     # a client signed by another CA (pki.rogue_ca_cert)
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.components import need

_DAYS = "2"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True, slots=True)
class Pki:
    """The files of one test PKI."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca_cert: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_CURVE, "-days", _DAYS,
        "-subj", f"/O=Hostvisor tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-new", *_CURVE, "-subj", f"/O=Hostvisor tests/CN={name}",
        "-keyout", str(key), "-out", str(csr),
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", _DAYS, "-extfile", str(ext), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return cert, key


_SERVER_EXT = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=serverAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
)
_CLIENT_EXT = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
)


def make_pki(directory: Path) -> Pki:
    """Make a CA, a server and a client signed by it, and a client of another CA."""
    if shutil.which("openssl") is None:
        need(False, "openssl is not installed (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    rogue_ca = _ca(directory, "rogue-ca")
    server = _leaf(directory, "server", ca, _SERVER_EXT)
    client = _leaf(directory, "client", ca, _CLIENT_EXT)
    rogue = _leaf(directory, "rogue-client", rogue_ca, _CLIENT_EXT)
    return Pki(
        ca_cert=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        rogue_ca_cert=rogue_ca[0],
        rogue_cert=rogue[0],
        rogue_key=rogue[1],
    )


def host_cert(pki: Pki, name: str, address: str) -> tuple[Path, Path]:
    """Sign a certificate for one more host of `pki`, valid as server and client at `address`.

    A host's agent serves the Engine and, during migration, calls the other host's
    agent with the same identity, as VDSM's host certificate does.
    """
    directory = pki.ca_cert.parent
    extensions = (
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName=IP:{address}\n"
    )
    return _leaf(directory, name, (pki.ca_cert, directory / "ca.key"), extensions)
