import uuid

import pytest

from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.errors import (
    IllegalVolumeSnapshot,
    ImageDoesNotExistInSD,
    ImageIsNotLegalChain,
    StorageInvalidParameter,
    VolumeAlreadyExists,
    VolumeCreationError,
    VolumeDoesNotExist,
    VolumeHasChildren,
)
from hostvisor.actors.storage.metadata import read_volume_metadata
from hostvisor.actors.storage.model import BLANK_UUID, Legality, Preallocation, VolumeFormat

MiB = 1024 * 1024
GiB = 1024 * MiB
COW, RAW = VolumeFormat.COW, VolumeFormat.RAW
SPARSE, PREALLOCATED = Preallocation.SPARSE, Preallocation.PREALLOCATED


def new_id():
    return str(uuid.uuid4())


def _volume(domain, img=None, vol=None, *, size=64 * MiB, fmt=RAW, prealloc=SPARSE, **kw):
    img, vol = img or new_id(), vol or new_id()
    domain.create_volume(img, vol, size=size, fmt=fmt, prealloc=prealloc, **kw)
    return img, vol


def _qemu(domain, img, vol):
    info = qemuimg.info(domain.volume_path(img, vol))
    assert isinstance(info, dict)
    return info


@pytest.mark.parametrize(
    ("fmt", "prealloc"), [(RAW, SPARSE), (RAW, PREALLOCATED), (COW, SPARSE), (COW, PREALLOCATED)]
)
def test_format_and_allocation_matrix(domain, fmt, prealloc):
    img, vol = _volume(domain, size=64 * MiB, fmt=fmt, prealloc=prealloc)
    info = domain.volume_info(img, vol)
    qemu = _qemu(domain, img, vol)
    assert qemu["format"] == fmt.qemu_format
    assert qemu["virtual-size"] == 64 * MiB
    assert (info["format"], info["type"]) == (fmt.name, prealloc.name)
    assert info["capacity"] == str(64 * MiB)
    path = domain.volume_path(img, vol)
    st = path.stat()
    assert info["apparentsize"] == str(st.st_size)
    assert info["truesize"] == str(st.st_blocks * 512)
    if prealloc is PREALLOCATED:
        assert int(info["truesize"]) >= 64 * MiB  # the space is really allocated
    else:
        assert int(info["truesize"]) < MiB
    assert oct(st.st_mode & 0o777) == "0o660"
    assert domain.volume_size(img, vol) == {
        "apparentsize": info["apparentsize"],
        "truesize": info["truesize"],
    }


def test_get_info_fields_and_types(domain):
    img, vol = _volume(domain, description="boot disk", disk_type="DATA")
    info = domain.volume_info(img, vol)
    lease = domain.volume_path(img, vol).with_name(f"{vol}.lease")
    expected_types = {
        "uuid": str, "image": str, "domain": str, "parent": str, "children": list,
        "format": str, "type": str, "voltype": str, "disktype": str, "capacity": str,
        "apparentsize": str, "truesize": str, "status": str, "legality": str,
        "description": str, "ctime": str, "mtime": str, "generation": int, "sequence": int,
        "pool": str,
    }  # fmt: skip
    assert {k: type(v) for k, v in info.items()} == expected_types
    assert info["uuid"] == vol
    assert info["image"] == img
    assert info["domain"] == domain.sd_uuid
    assert info["parent"] == BLANK_UUID
    assert info["children"] == []
    assert (info["voltype"], info["disktype"], info["description"]) == ("LEAF", "DATA", "boot disk")
    assert (info["status"], info["legality"], info["mtime"]) == ("OK", "LEGAL", "0")
    assert int(info["ctime"]) > 0
    # A local lock has no volume leases: VDSM reports none (the file is there, empty).
    assert "lease" not in info
    assert lease.stat().st_size == 0


def test_meta_file_has_the_v5_keys(domain):
    img, vol = _volume(domain, description="d")
    meta = read_volume_metadata(domain.volume_path(img, vol).with_name(f"{vol}.meta"))
    assert sorted(meta) == [
        "CAP", "CTIME", "DESCRIPTION", "DISKTYPE", "DOMAIN", "FORMAT", "GEN", "IMAGE",
        "LEGALITY", "PUUID", "SEQ", "TYPE", "VOLTYPE",
    ]  # fmt: skip
    assert meta["LEGALITY"] == "LEGAL"


def test_snapshot_chain_matches_qemu_img(domain):
    img, base = _volume(domain, size=GiB)
    _, mid = _volume(domain, img, size=0, fmt=COW, parent=base)
    _, top = _volume(domain, img, size=0, fmt=COW, parent=mid)
    assert domain.chain(img, top) == [base, mid, top]
    chain = qemuimg.info(domain.volume_path(img, top), backing_chain=True)
    assert isinstance(chain, list)
    assert [c.get("backing-filename") for c in chain] == [mid, base, None]
    assert [c["format"] for c in chain] == ["qcow2", "qcow2", "raw"]
    for vol, parent in ((top, mid), (mid, base), (base, BLANK_UUID)):
        assert domain.volume_info(img, vol)["parent"] == parent
    assert [domain.volume_info(img, v)["voltype"] for v in (base, mid, top)] == [
        "INTERNAL",
        "INTERNAL",
        "LEAF",
    ]
    assert domain.volume_info(img, base)["children"] == [mid]
    assert domain.volume_info(img, top)["capacity"] == str(GiB)  # the parent's capacity


def test_snapshot_chain_survives_another_mount_path(domain, root, tmp_path):
    img, base = _volume(domain)
    _, top = _volume(domain, img, size=0, fmt=COW, parent=base)
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    chain = qemuimg.info(moved / domain.sd_uuid / "images" / img / top, backing_chain=True)
    assert isinstance(chain, list)
    assert len(chain) == 2


def test_snapshot_rules(domain):
    img, base = _volume(domain, size=GiB)
    with pytest.raises(StorageInvalidParameter):  # smaller than the parent
        _volume(domain, img, size=GiB // 2, fmt=COW, parent=base)
    with pytest.raises(StorageInvalidParameter):  # a snapshot layer is qcow2
        _volume(domain, img, size=0, fmt=RAW, parent=base)
    with pytest.raises(VolumeDoesNotExist) as missing:
        _volume(domain, img, size=0, fmt=COW, parent=new_id())
    assert missing.value.code == 201
    _, bigger = _volume(domain, img, size=2 * GiB, fmt=COW, parent=base)
    assert domain.volume_info(img, bigger)["capacity"] == str(2 * GiB)


def test_snapshot_of_an_illegal_volume_is_refused(domain):
    img, base = _volume(domain)
    domain.set_legality(img, base, Legality.ILLEGAL)
    with pytest.raises(IllegalVolumeSnapshot) as caught:
        _volume(domain, img, size=0, fmt=COW, parent=base)
    assert caught.value.code == 226
    assert domain.volumes(img) == [base]


def test_template_parent_is_linked_into_the_new_image(domain):
    template_img, template = _volume(domain)
    with pytest.raises(StorageInvalidParameter):  # only a SHARED volume can be a template
        _volume(domain, size=0, fmt=COW, parent=template, parent_image=template_img)
    meta = domain.volume_path(template_img, template).with_name(f"{template}.meta")
    text = meta.read_text().replace("VOLTYPE=LEAF", "VOLTYPE=SHARED")
    meta.write_text(text)
    img, vol = _volume(domain, size=0, fmt=COW, parent=template, parent_image=template_img)
    linked = domain.volume_path(img, template)
    assert linked.samefile(domain.volume_path(template_img, template))
    assert domain.chain(img, vol) == [template, vol]
    assert domain.volumes(img) == [vol]
    assert domain.volume_info(template_img, template)["voltype"] == "SHARED"
    with pytest.raises(VolumeHasChildren):  # an image is based on the template
        domain.delete_volume(template_img, template)
    domain.delete_volume(img, vol)
    domain.delete_volume(img, template)  # just the link
    assert domain.volume_path(template_img, template).exists()
    domain.delete_volume(template_img, template)


def test_existing_volume_is_refused(domain):
    img, vol = _volume(domain)
    with pytest.raises(VolumeAlreadyExists) as caught:
        _volume(domain, img, vol)
    assert caught.value.code == 212


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": 0}, StorageInvalidParameter),
        ({"size": -1}, StorageInvalidParameter),
        ({"disk_type": "NOPE"}, StorageInvalidParameter),
        ({"description": "two\nlines"}, StorageInvalidParameter),
        ({"initial_size": -1, "prealloc": PREALLOCATED}, StorageInvalidParameter),
        ({"initial_size": MiB}, VolumeCreationError),  # sparse raw
        ({"initial_size": MiB, "fmt": COW}, VolumeCreationError),
        ({"initial_size": GiB, "prealloc": PREALLOCATED}, VolumeCreationError),
    ],
)
def test_bad_creation_parameters_leave_nothing(domain, kwargs, error):
    img = new_id()
    with pytest.raises(error):
        _volume(domain, img, **kwargs)
    assert domain.images() == []


def test_initial_size_allocates_part_of_a_preallocated_raw_volume(domain):
    img, vol = _volume(domain, size=64 * MiB, prealloc=PREALLOCATED, initial_size=8 * MiB)
    info = domain.volume_info(img, vol)
    assert info["capacity"] == info["apparentsize"] == str(64 * MiB)
    assert 8 * MiB <= int(info["truesize"]) < 64 * MiB


def test_a_failing_qemu_img_leaves_nothing(domain):
    img = new_id()
    with pytest.raises(VolumeCreationError) as caught:
        _volume(domain, img, size=2**62, fmt=COW)  # beyond qcow2's limit
    assert caught.value.code == 205
    assert domain.images() == []


def test_progress_of_a_preallocated_volume(domain):
    seen: list[float] = []
    _volume(domain, size=256 * MiB, prealloc=PREALLOCATED, progress=seen.append)
    assert seen[0] == 0.0
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert len(seen) >= 5  # 256 MiB in 64 MiB steps


def test_delete_rules(domain):
    img, base = _volume(domain)
    _, top = _volume(domain, img, size=0, fmt=COW, parent=base)
    with pytest.raises(VolumeHasChildren) as caught:
        domain.delete_volume(img, base)
    assert caught.value.code == 204
    domain.delete_volume(img, top)
    assert domain.volume_info(img, base)["voltype"] == "LEAF"
    assert sorted(p.name for p in domain.volume_path(img, base).parent.iterdir()) == [
        base,
        f"{base}.lease",
        f"{base}.meta",
    ]
    domain.delete_volume(img, base)
    with pytest.raises(VolumeDoesNotExist):
        domain.volume_info(img, base)


def test_extend(domain):
    for fmt, prealloc in ((COW, SPARSE), (RAW, PREALLOCATED)):
        img, vol = _volume(domain, size=64 * MiB, fmt=fmt, prealloc=prealloc)
        domain.extend_volume(img, vol, 128 * MiB)
        info = domain.volume_info(img, vol)
        assert info["capacity"] == str(128 * MiB)
        assert _qemu(domain, img, vol)["virtual-size"] == 128 * MiB
        if prealloc is PREALLOCATED:
            assert int(info["truesize"]) >= 128 * MiB
        with pytest.raises(StorageInvalidParameter):
            domain.extend_volume(img, vol, 32 * MiB)


def test_description_and_legality(domain):
    img, vol = _volume(domain)
    domain.set_volume_description(img, vol, "x" * 300)
    assert domain.volume_info(img, vol)["description"] == "x" * 210
    domain.set_legality(img, vol, Legality.ILLEGAL)
    info = domain.volume_info(img, vol)
    assert (info["legality"], info["status"]) == ("ILLEGAL", "ILLEGAL")
    assert domain.illegal_volumes() == [(img, vol)]
    domain.set_legality(img, vol, Legality.LEGAL)
    assert domain.illegal_volumes() == []


def test_missing_data_file_is_invalid(domain):
    img, vol = _volume(domain)
    domain.volume_path(img, vol).unlink()
    info = domain.volume_info(img, vol)
    assert (info["status"], info["apparentsize"], info["truesize"]) == ("INVALID", "0", "0")


def test_prepare_and_teardown(domain):
    img, base = _volume(domain)
    _, top = _volume(domain, img, size=0, fmt=COW, parent=base)
    assert domain.prepare_image(img, top) == domain.volume_path(img, top)
    domain.teardown_image(img, top)
    domain.teardown_image(img)
    domain.set_legality(img, base, Legality.ILLEGAL)
    with pytest.raises(ImageIsNotLegalChain) as caught:
        domain.prepare_image(img, top)
    assert caught.value.code == 262
    assert domain.prepare_image(img, top, allow_illegal=True) == domain.volume_path(img, top)
    domain.set_legality(img, base, Legality.LEGAL)
    domain.volume_path(img, base).unlink()
    with pytest.raises(ImageIsNotLegalChain):
        domain.prepare_image(img, top)


def test_prepare_repairs_a_capacity_an_interrupted_extend_left(domain):
    img, vol = _volume(domain, size=64 * MiB, fmt=COW)
    qemuimg.resize(domain.volume_path(img, vol), 128 * MiB, "qcow2")  # CAP not updated yet
    domain.prepare_image(img, vol)
    assert domain.volume_info(img, vol)["capacity"] == str(128 * MiB)


def test_images_volumes_and_delete_image(domain):
    img1, v1 = _volume(domain)
    _, v2 = _volume(domain, img1, size=0, fmt=COW, parent=v1)
    img2, v3 = _volume(domain)
    assert domain.images() == sorted([img1, img2])
    assert sorted(domain.volumes(img1)) == sorted([v1, v2])
    assert sorted(domain.volumes()) == sorted([v1, v2, v3])
    domain.delete_image(img1)
    assert domain.images() == [img2]
    with pytest.raises(ImageDoesNotExistInSD) as caught:
        domain.delete_image(img1)
    assert caught.value.code == 268


@pytest.mark.parametrize(
    "action",
    [
        lambda d, img: d.volume_info(img, new_id()),
        lambda d, img: d.volume_size(img, new_id()),
        lambda d, img: d.delete_volume(img, new_id()),
        lambda d, img: d.set_legality(img, new_id(), Legality.LEGAL),
        lambda d, img: d.set_volume_description(img, new_id(), "x"),
        lambda d, img: d.extend_volume(img, new_id(), GiB),
        lambda d, img: d.chain(img, new_id()),
        lambda d, img: d.prepare_image(img, new_id()),
        lambda d, img: d.teardown_image(img, new_id()),
    ],
)
def test_missing_volume_and_missing_image(domain, action):
    img, _ = _volume(domain)
    with pytest.raises(VolumeDoesNotExist) as missing_volume:
        action(domain, img)
    assert missing_volume.value.code == 201
    with pytest.raises(ImageDoesNotExistInSD) as missing_image:
        action(domain, new_id())
    assert missing_image.value.code == 268
