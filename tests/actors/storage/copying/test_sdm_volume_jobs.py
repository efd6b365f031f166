"""SDM.update_volume, SDM.amend_volume, SDM.sparsify_volume, SDM.copy_data's `legal`.

Jobs under the caller's id, polled with Host.getJobs, as UpdateVolumeVDSCommand,
AmendVolumeVDSCommand, SparsifyImageVDSCommand and CopyVolumeDataVDSCommand send
them (JsonRpcVdsServer): `vol_info` {sd_id, img_id, vol_id, generation?}. Each
advances the volume's generation; a wrong generation fails the job with 911 and
changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from actors.storage.copying.conftest import (
    Pool,
    error_code,
    finished,
    job_ended,
    new_ids,
    qemu_info,
    same_data,
    write,
)

from harness.engine import COW, RAW, MiB

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

INVALID_PARAMS = -32602
SIZE = 16 * MiB


def _vol(pool: Pool, img: str, vol: str, **extra: Any) -> dict[str, Any]:
    return {"sd_id": pool.a, "img_id": img, "vol_id": vol, **extra}


def _run(pool: Pool, verb: str, **params: Any) -> dict[str, Any]:
    job_id = new_ids(1)[0]
    assert getattr(pool.cli.SDM, verb)(job_id=job_id, **params) is True
    job = job_ended(pool.cli, job_id)
    assert job["description"].startswith(verb)
    return job


def test_update_volume_changes_attributes_and_the_generation(pool: Pool):
    img, vol = new_ids(2)
    pool.create(pool.a, img, vol, fmt=RAW, size=SIZE)
    job = _run(
        pool,
        "update_volume",
        vol_info=_vol(pool, img, vol, generation=0),
        vol_attr={"legality": "ILLEGAL", "description": "d" * 300},
    )
    assert job["status"] == "done"
    info = pool.info(pool.a, img, vol)
    assert (info["legality"], info["generation"]) == ("ILLEGAL", 1)
    assert info["description"] == "d" * 210
    # A stale generation fails the job (911) and changes nothing.
    stale = _run(
        pool,
        "update_volume",
        vol_info=_vol(pool, img, vol, generation=0),
        vol_attr={"legality": "LEGAL"},
    )
    assert (stale["status"], stale["error"]["code"]) == ("failed", 911)
    assert pool.info(pool.a, img, vol)["legality"] == "ILLEGAL"
    # LEGAL again, a generation set by the caller; then SHARED (a template).
    _run(
        pool,
        "update_volume",
        vol_info=_vol(pool, img, vol),
        vol_attr={"legality": "LEGAL", "generation": 7},
    )
    assert pool.info(pool.a, img, vol)["generation"] == 7
    _run(pool, "update_volume", vol_info=_vol(pool, img, vol), vol_attr={"type": "SHARED"})
    assert (pool.info(pool.a, img, vol)["voltype"], pool.info(pool.a, img, vol)["generation"]) == (
        "SHARED",
        8,
    )
    # Wrong state: the same legality again, SHARED twice (not a leaf): 235.
    for attrs in ({"legality": "LEGAL"}, {"type": "SHARED"}):
        failed = _run(pool, "update_volume", vol_info=_vol(pool, img, vol), vol_attr=attrs)
        assert (failed["status"], failed["error"]["code"]) == ("failed", 235), attrs
    assert pool.info(pool.a, img, vol)["generation"] == 8


def test_amend_volume_changes_the_qcow2_compat(pool: Pool):
    img, base, top = new_ids(3)
    pool.create(pool.a, img, base, fmt=RAW, size=SIZE)
    pool.create(pool.a, img, top, fmt=COW, parent=base)
    path = pool.path(pool.a, img, top)
    assert qemu_info(path)["format-specific"]["data"]["compat"] == "1.1"
    job = _run(pool, "amend_volume", vol_info=_vol(pool, img, top), qcow2_attr={"compat": "0.10"})
    assert job["status"] == "done"
    assert qemu_info(path)["format-specific"]["data"]["compat"] == "0.10"
    info = pool.info(pool.a, img, top)
    assert (info["legality"], info["generation"]) == ("LEGAL", 1)
    assert pool.cli.Volume.getQemuImageInfo(**pool.ids(pool.a, img, top))["compat"] == "0.10"
    # A raw volume cannot be amended (2009); a wrong generation fails with 911.
    raw = _run(pool, "amend_volume", vol_info=_vol(pool, img, base), qcow2_attr={"compat": "1.1"})
    assert (raw["status"], raw["error"]["code"]) == ("failed", 2009)
    stale = _run(
        pool,
        "amend_volume",
        vol_info=_vol(pool, img, top, generation=0),
        qcow2_attr={"compat": "1.1"},
    )
    assert (stale["status"], stale["error"]["code"]) == ("failed", 911)
    assert qemu_info(path)["format-specific"]["data"]["compat"] == "0.10"


def _allocated(path: str) -> int:
    return Path(path).stat().st_blocks * 512


def test_sparsify_returns_zero_blocks_and_keeps_the_data(pool: Pool):
    img, base, top = new_ids(3)
    pool.create(pool.a, img, base, fmt=RAW, size=SIZE)
    raw = pool.path(pool.a, img, base)
    with Path(raw).open("r+b") as disk:  # 8 MiB written, 6 of them zeros
        disk.write(os.urandom(2 * MiB) + bytes(6 * MiB))
        os.fsync(disk.fileno())
    pool.create(pool.a, img, top, fmt=COW, parent=base)
    top_path = pool.path(pool.a, img, top)
    write(top_path, "qcow2", 10 * MiB, 4 * MiB, 0)  # zeros written as data clusters
    write(top_path, "qcow2", 15 * MiB, MiB, 0x71)
    img2, snapshot = new_ids(2)
    task = pool.cli.Volume.copy(  # keep what the disk reads, to compare after
        **pool.ids(pool.a, img, top),
        dstSdUUID=pool.a,
        dstImgUUID=img2,
        dstVolUUID=snapshot,
        desc="",
        volType=8,
        volFormat=RAW,
        preallocate=2,
        postZero="false",
        force="false",
    )
    finished(pool.cli, task)
    # Only a leaf: the raw base is not one.
    not_leaf = _run(pool, "sparsify_volume", vol_info=_vol(pool, img, base))
    assert (not_leaf["status"], not_leaf["error"]["code"]) == ("failed", 2009)

    before = _allocated(top_path)
    job = _run(pool, "sparsify_volume", vol_info=_vol(pool, img, top, generation=0))
    assert job["status"] == "done"
    assert _allocated(top_path) < before - 3 * MiB
    identical, why = same_data(pool.path(pool.a, img2, snapshot), top_path)
    assert identical, why
    info = pool.info(pool.a, img, top)
    assert (info["legality"], info["generation"], info["parent"]) == ("LEGAL", 1, base)
    assert qemu_info(top_path)["backing-filename"] == base

    # A raw leaf: holes punched in place.
    r_img, r_vol = new_ids(2)
    pool.create(pool.a, r_img, r_vol, fmt=RAW, size=SIZE)
    r_path = pool.path(pool.a, r_img, r_vol)
    with Path(r_path).open("r+b") as disk:
        disk.write(bytes(8 * MiB) + os.urandom(MiB))
        os.fsync(disk.fileno())
    assert _allocated(r_path) >= 9 * MiB
    assert _run(pool, "sparsify_volume", vol_info=_vol(pool, r_img, r_vol))["status"] == "done"
    assert _allocated(r_path) <= MiB + 64 * 1024
    assert Path(r_path).read_bytes()[8 * MiB : 8 * MiB + 16] != bytes(16)


def test_copy_data_honours_legal_and_the_generation(pool: Pool):
    src_img, src, dst_img, dst = new_ids(4)
    pool.create(pool.a, src_img, src, fmt=RAW, size=SIZE)
    write(pool.path(pool.a, src_img, src), "raw", MiB, MiB, 0x81)
    pool.create(pool.b, dst_img, dst, fmt=COW, size=SIZE)
    endpoint = {"endpoint_type": "div", "sd_id": pool.a, "img_id": src_img, "vol_id": src}
    target = {"endpoint_type": "div", "sd_id": pool.b, "img_id": dst_img, "vol_id": dst}

    # The Engine's live storage migration copies with legal=false: the copy stays ILLEGAL.
    job = _run(
        pool,
        "copy_data",
        source=endpoint,
        destination={**target, "generation": 0},
        copy_bitmaps=False,
        legal=False,
    )
    assert job["status"] == "done"
    info = pool.info(pool.b, dst_img, dst)
    assert (info["legality"], info["generation"]) == ("ILLEGAL", 1)
    # A stale generation: the job fails (911) before anything is written.
    stale = _run(
        pool,
        "copy_data",
        source=endpoint,
        destination={**target, "generation": 0},
        copy_bitmaps=False,
        legal=True,
    )
    assert (stale["status"], stale["error"]["code"]) == ("failed", 911)
    assert pool.info(pool.b, dst_img, dst)["legality"] == "ILLEGAL"
    # Then it marks it LEGAL (UpdateVolume), as the Engine does at the end.
    _run(
        pool,
        "update_volume",
        vol_info={"sd_id": pool.b, "img_id": dst_img, "vol_id": dst},
        vol_attr={"legality": "LEGAL"},
    )
    identical, why = same_data(pool.path(pool.a, src_img, src), pool.path(pool.b, dst_img, dst))
    assert identical, why


def test_copy_data_into_a_layer_keeps_its_parent(pool: Pool):
    img, base, top = new_ids(3)
    pool.create(pool.a, img, base, fmt=RAW, size=SIZE)
    write(pool.path(pool.a, img, base), "raw", 0, 2 * MiB, 0x91)
    pool.create(pool.a, img, top, fmt=COW, parent=base)
    write(pool.path(pool.a, img, top), "qcow2", 4 * MiB, MiB, 0x92)
    # The Engine's copy of a chain: the structure first, then copy_data per volume.
    pool.create(pool.b, img, base, fmt=RAW, size=SIZE)
    pool.create(pool.b, img, top, fmt=COW, parent=base)
    for vol in (base, top):
        ends = [
            {"endpoint_type": "div", "sd_id": sd, "img_id": img, "vol_id": vol}
            for sd in (pool.a, pool.b)
        ]
        job = _run(
            pool, "copy_data", source=ends[0], destination=ends[1], copy_bitmaps=False, legal=True
        )
        assert job["status"] == "done"
    leaf = pool.path(pool.b, img, top)
    assert qemu_info(leaf)["backing-filename"] == base
    assert qemu_info(leaf)["actual-size"] < 2 * MiB
    identical, why = same_data(pool.path(pool.a, img, top), leaf)
    assert identical, why


def test_bad_input_to_the_sdm_jobs(pool: Pool):
    img, vol = new_ids(2)
    pool.create(pool.a, img, vol, fmt=COW, size=SIZE)
    good = _vol(pool, img, vol)
    sdm = pool.cli.SDM
    other = new_ids(1)[0]
    refused: list[tuple[Any, dict[str, Any], int]] = [
        (sdm.update_volume, {"vol_info": good, "vol_attr": {}}, 91),  # nothing to update
        (sdm.update_volume, {"vol_info": good, "vol_attr": {"type": "LEAF"}}, 91),
        (sdm.update_volume, {"vol_info": good, "vol_attr": {"legality": "FAKE"}}, 91),
        (sdm.update_volume, {"vol_info": good, "vol_attr": {"generation": 1000}}, 91),
        (
            sdm.update_volume,
            {"vol_info": {**good, "vol_id": "x"}, "vol_attr": {"legality": "LEGAL"}},
            91,
        ),
        (
            sdm.update_volume,
            {"vol_info": {**good, "sd_id": other}, "vol_attr": {"description": ""}},
            358,
        ),
        (sdm.update_volume, {"vol_info": good, "vol_attr": "LEGAL"}, INVALID_PARAMS),
        (sdm.update_volume, {"vol_info": good}, INVALID_PARAMS),
        (sdm.amend_volume, {"vol_info": good, "qcow2_attr": {"compat": "2.0"}}, 91),
        (sdm.amend_volume, {"vol_info": good, "qcow2_attr": {}}, 91),
        (
            sdm.amend_volume,
            {"vol_info": {**good, "generation": "0"}, "qcow2_attr": {"compat": "1.1"}},
            91,
        ),
        (sdm.amend_volume, {"vol_info": good}, INVALID_PARAMS),
        (sdm.sparsify_volume, {"vol_info": {**good, "sd_id": other}}, 358),
        (sdm.sparsify_volume, {"vol_info": [good]}, INVALID_PARAMS),
        (sdm.sparsify_volume, {}, INVALID_PARAMS),
    ]
    for call, params, code in refused:
        assert error_code(call, job_id=new_ids(1)[0], **params) == code, params
    # Unknown volume or image: the job fails with VDSM's code (as VDSM: the job, not the verb).
    for verb, extra in (
        ("update_volume", {"vol_attr": {"description": "x"}}),
        ("amend_volume", {"qcow2_attr": {"compat": "1.1"}}),
        ("sparsify_volume", {}),
    ):
        for vol_info, code in (({**good, "vol_id": other}, 201), ({**good, "img_id": other}, 268)):
            job = _run(pool, verb, vol_info=vol_info, **extra)
            assert (job["status"], job["error"]["code"]) == ("failed", code), (verb, vol_info)
    # A job id in use: 69 (JobExists).
    job_id = new_ids(1)[0]
    sdm.update_volume(job_id=job_id, vol_info=good, vol_attr={"description": "a"})
    job_ended(pool.cli, job_id)
    assert (
        error_code(sdm.update_volume, job_id=job_id, vol_info=good, vol_attr={"description": "b"})
        == 69
    )
    info = pool.info(pool.a, img, vol)
    assert (info["description"], info["generation"], info["legality"]) == ("a", 1, "LEGAL")
