import os
import uuid

import pytest

from hostvisor.actors.storage.errors import (
    StorageDomainAccessError,
    StorageDomainAlreadyExists,
    StorageDomainDoesNotExist,
    StorageDomainFSNotMounted,
    StorageDomainMetadataError,
    StorageDomainNotEmpty,
    StorageDomainTypeError,
    StorageInvalidParameter,
    UnsupportedDomainVersion,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.metadata import read_domain_metadata
from hostvisor.actors.storage.model import DomainClass, DomainType

MiB = 1024 * 1024


def _create(root, sd=None, **overrides):
    args = {
        "name": "data-1",
        "domain_type": DomainType.NFS,
        "domain_class": DomainClass.DATA,
        "remote_path": "server.example:/export/data",
    }
    args.update(overrides)
    return FileDomain.create(root, sd or str(uuid.uuid4()), **args)


def test_v5_layout_on_disk(root):
    sd = str(uuid.uuid4())
    domain = _create(root, sd)
    assert domain.path == root / sd
    assert sorted(p.name for p in (root / sd).iterdir()) == ["dom_md", "images"]
    md = root / sd / "dom_md"
    sizes = {p.name: p.stat().st_size for p in md.iterdir()}
    assert sizes.keys() == {"metadata", "ids", "leases", "inbox", "outbox", "xleases"}
    assert sizes["ids"] == sizes["leases"] == 0
    assert sizes["inbox"] == sizes["outbox"] == 16 * MiB
    # xleases: an index after the 1 MiB lockspace slot, VDSM's INDEX_SIZE (62 x 4 KiB,
    # aligned for 4 KiB sectors too): one 512-byte header, then 3,960 records.
    assert sizes["xleases"] == MiB + 62 * 4096
    with (md / "xleases").open("rb") as xleases:
        xleases.seek(MiB)
        header = xleases.read(512)
        record = xleases.read(64)
    assert header[:4] == bytes.fromhex("12152016")
    assert header[5:9] == b"0001"
    assert header[10:58].rstrip(b"\0") == sd.encode()
    assert record == b"\0" * 48 + b"\x0000000000000\x00--\n"
    assert not list(root.glob(".*")), "no hidden build directory is left"


def test_metadata_keys_and_values(root):
    sd = str(uuid.uuid4())
    _create(root, sd, name="My Data")
    values = read_domain_metadata(root / sd / "dom_md" / "metadata")
    assert values == {
        "ALIGNMENT": "1048576",
        "BLOCK_SIZE": "512",
        "CLASS": "Data",
        "DESCRIPTION": "My Data",
        "IOOPTIMEOUTSEC": "10",
        "LEASERETRIES": "3",
        "LEASETIMESEC": "60",
        "LOCKPOLICY": "",
        "LOCKRENEWALINTERVALSEC": "5",
        "POOL_UUID": "",
        "REMOTE_PATH": "server.example:/export/data",
        "ROLE": "Regular",
        "SDUUID": sd,
        "TYPE": "NFS",
        "VERSION": "5",
    }
    text = (root / sd / "dom_md" / "metadata").read_text()
    assert text.splitlines()[-1].startswith("_SHA_CKSUM=")


@pytest.mark.parametrize(
    ("block_size", "max_hosts", "alignment"),
    [(512, 2000, MiB), (4096, 250, MiB), (4096, 500, 2 * MiB), (4096, 2000, 8 * MiB)],
)
def test_alignment_follows_block_size_and_hosts(root, block_size, max_hosts, alignment):
    domain = _create(root, block_size=block_size, max_hosts=max_hosts)
    info = domain.info()
    assert (info["block_size"], info["alignment"]) == (block_size, alignment)
    assert (domain.path / "dom_md" / "xleases").stat().st_size >= alignment


def test_block_size_zero_detects_the_file_system(root):
    assert _create(root, block_size=0).info()["block_size"] in (512, 4096)


def test_get_info_fields_and_types(domain, root):
    info = domain.info()
    assert info == {
        "uuid": domain.sd_uuid,
        "type": "LOCALFS",
        "class": "Data",
        "name": "data-1",
        "role": "Regular",
        "pool": [],
        "version": "5",
        "block_size": 512,
        "alignment": MiB,
        "remotePath": str(root),
    }


def test_get_stats_are_statvfs_strings(domain):
    stats = domain.stats()
    st = os.statvfs(domain.path)
    assert stats["disktotal"] == str(st.f_frsize * st.f_blocks)
    assert isinstance(stats["diskfree"], str)
    assert 0 < int(stats["diskfree"]) <= int(stats["disktotal"])
    assert (stats["mdasize"], stats["mdafree"], stats["mdavalid"], stats["mdathreshold"]) == (
        0,
        0,
        True,
        True,
    )


def test_update_metadata_attaches_to_a_pool(domain):
    pool = str(uuid.uuid4())
    domain.update_metadata(POOL_UUID=pool, ROLE="Master", POOL_DESCRIPTION="dc")
    info = domain.info()
    assert info["pool"] == [pool]
    assert info["role"] == "Master"
    assert read_domain_metadata(domain.metadata_path)["POOL_DESCRIPTION"] == "dc"


@pytest.mark.parametrize(
    "changes", [{"SDUUID": str(uuid.uuid4())}, {"ROLE": "Boss"}, {"DESCRIPTION": "a\nb"}]
)
def test_update_metadata_refuses_identity_and_bad_values(domain, changes):
    before = domain.metadata()
    with pytest.raises(StorageInvalidParameter):
        domain.update_metadata(**changes)
    assert domain.metadata() == before


def test_corrupted_metadata_is_refused(domain):
    path = domain.metadata_path
    path.write_text(path.read_text().replace("ROLE=Regular", "ROLE=Master"))
    for action in (domain.metadata, domain.info, domain.validate):
        with pytest.raises(StorageDomainMetadataError) as caught:
            action()
        assert caught.value.code == 750


def test_validate_reports_missing_special_files(domain):
    domain.validate()
    (domain.path / "dom_md" / "ids").unlink()
    with pytest.raises(StorageDomainAccessError) as caught:
        domain.validate()
    assert caught.value.code == 379
    assert caught.value.context["missing"] == ["ids"]


def test_find_and_scan(tmp_path, qemu_img):
    roots = [tmp_path / "a", tmp_path / "b", tmp_path / "missing"]
    for path in roots[:2]:
        path.mkdir()
    first, second = _create(roots[0]), _create(roots[1])
    (roots[1] / "lost+found").mkdir()
    assert FileDomain.find(roots, second.sd_uuid).path == second.path
    assert sorted(d.sd_uuid for d in FileDomain.scan(roots)) == sorted(
        [first.sd_uuid, second.sd_uuid]
    )
    with pytest.raises(StorageDomainDoesNotExist) as caught:
        FileDomain.find(roots, str(uuid.uuid4()))
    assert caught.value.code == 358


def test_format_removes_the_domain(domain, root):
    domain.format()
    assert list(root.iterdir()) == []
    with pytest.raises(StorageDomainDoesNotExist):
        FileDomain.find([root], domain.sd_uuid)


def test_create_errors(root, tmp_path):
    existing = _create(root)
    with pytest.raises(StorageDomainAlreadyExists) as exists:
        _create(root, existing.sd_uuid)
    assert exists.value.code == 365
    with pytest.raises(StorageDomainNotEmpty) as not_empty:
        _create(root)
    assert not_empty.value.code == 361
    other = tmp_path / "other"
    other.mkdir()
    cases = [
        ({"domain_type": DomainType.ISCSI}, StorageDomainTypeError, 372),
        ({"version": 4}, UnsupportedDomainVersion, 394),
        ({"block_size": 1024}, StorageInvalidParameter, 1000),
        ({"block_size": 512, "max_hosts": 4000}, StorageInvalidParameter, 1000),
        ({"name": "x" * 51}, StorageInvalidParameter, 1000),
    ]
    for overrides, error, code in cases:
        with pytest.raises(error) as caught:
            _create(other, **overrides)
        assert caught.value.code == code
        assert list(other.iterdir()) == [], "a refused create leaves nothing"
    with pytest.raises(StorageDomainFSNotMounted) as unmounted:
        _create(tmp_path / "not-mounted")
    assert unmounted.value.code == 360


def test_a_crashed_create_leaves_only_a_hidden_leftover_that_is_cleaned(root):
    sd = str(uuid.uuid4())
    leftover = root / f".{sd}.creating-deadbeef"
    (leftover / "dom_md").mkdir(parents=True)
    assert FileDomain.scan([root]) == []
    domain = _create(root, sd)
    assert not leftover.exists()
    assert [d.sd_uuid for d in FileDomain.scan([root])] == [domain.sd_uuid]
