import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hostvisor.actors.storage.errors import (
    StorageDomainAccessError,
    StorageDomainMetadataError,
    VolumeMetadataReadError,
)
from hostvisor.actors.storage.metadata import (
    atomic_write,
    domain_checksum,
    read_domain_metadata,
    read_volume_metadata,
    write_domain_metadata,
    write_volume_metadata,
)

VALUES = {"VERSION": "5", "SDUUID": "0f8e8e2a-3c1d-4a4e-9f57-6a8b2c1d0e9f", "DESCRIPTION": "data"}


def test_domain_metadata_is_sorted_lines_with_vdsm_checksum(tmp_path):
    path = tmp_path / "metadata"
    write_domain_metadata(path, VALUES)

    lines = path.read_text().splitlines()
    assert lines[:-1] == ["DESCRIPTION=data", f"SDUUID={VALUES['SDUUID']}", "VERSION=5"]
    # VDSM's seal: sha1 of the KEY=VALUE strings in key order, with no separators.
    expected = hashlib.sha1(  # noqa: S324
        "".join(lines[:-1]).encode("ascii")
    ).hexdigest()
    assert lines[-1] == f"_SHA_CKSUM={expected}"
    assert read_domain_metadata(path) == VALUES
    assert oct(path.stat().st_mode & 0o777) == "0o660"


def test_non_ascii_values_are_sealed_as_xml_character_references(tmp_path):
    path = tmp_path / "metadata"
    values = {"DESCRIPTION": "données"}
    write_domain_metadata(path, values)
    assert path.read_bytes().startswith("DESCRIPTION=données\n".encode())
    sealed = hashlib.sha1(b"DESCRIPTION=donn&#233;es").hexdigest()  # noqa: S324
    assert domain_checksum(values) == sealed
    assert read_domain_metadata(path) == values


def test_a_changed_value_breaks_the_seal(tmp_path):
    path = tmp_path / "metadata"
    write_domain_metadata(path, VALUES)
    path.write_text(path.read_text().replace("DESCRIPTION=data", "DESCRIPTION=evil"))
    with pytest.raises(StorageDomainMetadataError) as caught:
        read_domain_metadata(path)
    assert caught.value.code == 750


def test_a_missing_checksum_is_refused(tmp_path):
    path = tmp_path / "metadata"
    path.write_text("VERSION=5\n")
    with pytest.raises(StorageDomainMetadataError, match="no checksum"):
        read_domain_metadata(path)


def test_a_missing_domain_metadata_file_is_an_access_error(tmp_path):
    with pytest.raises(StorageDomainAccessError) as caught:
        read_domain_metadata(tmp_path / "metadata")
    assert caught.value.code == 379


def test_volume_metadata_ends_with_eof(tmp_path):
    path = tmp_path / "v.meta"
    write_volume_metadata(path, {"PUUID": "x", "CAP": "1024"})
    assert path.read_text() == "CAP=1024\nPUUID=x\nEOF\n"
    assert read_volume_metadata(path) == {"CAP": "1024", "PUUID": "x"}


def test_volume_metadata_without_eof_is_refused(tmp_path):
    path = tmp_path / "v.meta"
    path.write_text("CAP=1024\nPUUID=x\n")
    with pytest.raises(VolumeMetadataReadError) as caught:
        read_volume_metadata(path)
    assert caught.value.code == 207


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


_WRITER = """
import sys
from pathlib import Path
from hostvisor.actors.storage.metadata import write_domain_metadata
path = Path(sys.argv[1])
big = {"A": "a" * 400_000, "B": "b" * 400_000}
count = 0
while True:
    key = "A" if count % 2 else "B"
    write_domain_metadata(path, {"DESCRIPTION": big[key], "GEN": key})
    count += 1
    print(count, flush=True)
"""


@pytest.mark.parametrize("kill_after", [1, 3, 7, 12, 20])
def test_a_writer_killed_mid_write_never_leaves_a_broken_file(tmp_path, kill_after):
    """SIGKILL a process that rewrites a 400 kB metadata file in a loop.

    The kill lands while the writer is in the middle of later writes; whatever
    the moment, the file is one whole version with a valid seal.
    """
    path = tmp_path / "metadata"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        for line in writer.stdout:
            if int(line) >= kill_after:
                break
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    values = read_domain_metadata(path)
    assert values["GEN"] in {"A", "B"}
    assert values["DESCRIPTION"] == values["GEN"].lower() * 400_000
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(name.startswith(".metadata.") for name in leftovers)


def test_fresh_reads_ignore_a_leftover_temporary_file(tmp_path):
    path = tmp_path / "metadata"
    write_domain_metadata(path, VALUES)
    (tmp_path / ".metadata.abc.tmp").write_bytes(b"VERSION=torn")
    assert read_domain_metadata(Path(path)) == VALUES
