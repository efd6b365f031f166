"""Image.move, Image.cloneStructure, Image.syncData: a chain copied as a chain.

MoveImageGroupVDSCommand (JsonRpcIIrsServer.moveImage: `operation` 1 COPY or 2 MOVE,
postZero and force as strings), CloneImageGroupStructureVDSCommand and
SyncImageGroupDataVDSCommand (cold "copy disk" in the old flow; live storage
migration's data sync). The destination chain keeps the ids and the parents, each
volume holding its own layer only; the data is checked with `qemu-img compare`.
"""

from __future__ import annotations

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
from harness.waiting import wait_for

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

COPY, MOVE = 1, 2
INVALID_PARAMS = -32602
SIZE = 8 * MiB


def chain(pool: Pool, sd: str) -> tuple[str, list[str]]:
    """An image of three volumes, each layer with its own data: (img, [base, mid, top])."""
    img, base, mid, top = new_ids(4)
    pool.create(sd, img, base, fmt=RAW, size=SIZE)
    write(pool.path(sd, img, base), "raw", 0, 3 * MiB, 0x31)
    pool.create(sd, img, mid, fmt=COW, parent=base)
    write(pool.path(sd, img, mid), "qcow2", 2 * MiB, 2 * MiB, 0x32)
    pool.create(sd, img, top, fmt=COW, parent=mid)
    write(pool.path(sd, img, top), "qcow2", 5 * MiB, 1 * MiB, 0x33)
    return img, [base, mid, top]


def move(pool: Pool, img: str, src: str, dst: str, op: int, force: str = "false") -> str:
    task: str = pool.cli.Image.move(
        imageID=img,
        storagepoolID=pool.dc.sp,
        storagedomainID=src,
        dstSdUUID=dst,
        operation=op,
        postZero="false",
        force=force,
    )
    return task


def _same_chain(pool: Pool, img: str, vols: list[str], src: str, dst: str) -> None:
    for vol in vols:
        there = pool.info(dst, img, vol)
        here = pool.info(src, img, vol) if src else None
        assert there["legality"] == "LEGAL"
        if here is not None:
            for key in ("parent", "voltype", "format", "capacity", "type", "disktype"):
                assert there[key] == here[key], key


def test_move_copies_the_chain_layer_by_layer_then_drops_the_source(pool: Pool):
    img, vols = chain(pool, pool.a)
    before = {vol: pool.info(pool.a, img, vol) for vol in vols}
    # Keep a copy of the source's data to compare with once the source is gone.
    keep_img, keep_vol = new_ids(2)
    finished(
        pool.cli,
        pool.cli.Volume.copy(
            **pool.ids(pool.a, img, vols[-1]),
            dstSdUUID=pool.a,
            dstImgUUID=keep_img,
            dstVolUUID=keep_vol,
            desc="kept",
            volType=8,
            volFormat=RAW,
            preallocate=2,
            postZero="false",
            force="false",
        ),
    )

    status = finished(pool.cli, move(pool, img, pool.a, pool.b, MOVE))

    assert (status["taskResult"], status["code"]) == ("success", 0)
    assert img not in pool.images(pool.a)
    assert sorted(
        pool.cli.Image.getVolumes(storagepoolID=pool.dc.sp, storagedomainID=pool.b, imageID=img)
    ) == sorted(vols)
    for vol in vols:
        info = pool.info(pool.b, img, vol)
        assert info["legality"] == "LEGAL"
        for key in ("parent", "voltype", "format", "capacity", "type", "disktype"):
            assert info[key] == before[vol][key], (vol, key)
    leaf = pool.path(pool.b, img, vols[-1])
    identical, why = same_data(pool.path(pool.a, keep_img, keep_vol), leaf)
    assert identical, why
    # Each layer holds only its own data, its parent as backing file.
    top = qemu_info(leaf)
    assert top["backing-filename"] == vols[1]
    assert top["actual-size"] < 2 * MiB + 512 * 1024


def test_copy_keeps_the_source_and_force_replaces_the_destination(pool: Pool):
    img, vols = chain(pool, pool.a)
    assert finished(pool.cli, move(pool, img, pool.a, pool.b, COPY))["taskResult"] == "success"
    assert img in pool.images(pool.a)
    _same_chain(pool, img, vols, pool.a, pool.b)
    identical, why = same_data(pool.path(pool.a, img, vols[-1]), pool.path(pool.b, img, vols[-1]))
    assert identical, why

    # The image is in the destination now: a second copy needs force.
    assert (
        error_code(
            pool.cli.Image.move,
            imageID=img,
            storagepoolID=pool.dc.sp,
            storagedomainID=pool.a,
            dstSdUUID=pool.b,
            operation=COPY,
            postZero="false",
            force="false",
        )
        == 212
    )
    write(pool.path(pool.a, img, vols[-1]), "qcow2", 7 * MiB, MiB, 0x44)
    assert (
        finished(pool.cli, move(pool, img, pool.a, pool.b, COPY, "true"))["taskResult"] == "success"
    )
    identical, why = same_data(pool.path(pool.a, img, vols[-1]), pool.path(pool.b, img, vols[-1]))
    assert identical, why


def test_an_image_on_a_template_moves_where_the_template_is(pool: Pool):
    t_img, t_vol = new_ids(2)
    pool.create(pool.a, t_img, t_vol, fmt=RAW, size=SIZE)
    write(pool.path(pool.a, t_img, t_vol), "raw", 0, MiB, 0x51)
    job = new_ids(1)[0]
    pool.cli.SDM.update_volume(
        job_id=job,
        vol_info={"sd_id": pool.a, "img_id": t_img, "vol_id": t_vol},
        vol_attr={"type": "SHARED"},
    )
    assert job_ended(pool.cli, job)["status"] == "done"
    v_img, v_vol = new_ids(2)
    pool.create(pool.a, v_img, v_vol, parent=t_vol, parent_img=t_img)
    write(pool.path(pool.a, v_img, v_vol), "qcow2", MiB, MiB, 0x52)
    params: dict[str, Any] = {
        "imageID": v_img,
        "storagepoolID": pool.dc.sp,
        "storagedomainID": pool.a,
        "dstSdUUID": pool.b,
        "operation": MOVE,
        "postZero": "false",
        "force": "false",
    }
    # The template is not in the destination yet: VDSM's 268.
    assert error_code(pool.cli.Image.move, **params) == 268
    # A template others are based on does not move away (266); it can be copied.
    assert error_code(pool.cli.Image.move, **{**params, "imageID": t_img}) == 266
    assert finished(pool.cli, move(pool, t_img, pool.a, pool.b, COPY))["taskResult"] == "success"
    assert pool.info(pool.b, t_img, t_vol)["voltype"] == "SHARED"

    assert finished(pool.cli, move(pool, v_img, pool.a, pool.b, MOVE))["taskResult"] == "success"
    info = pool.info(pool.b, v_img, v_vol)
    assert (info["parent"], info["legality"]) == (t_vol, "LEGAL")
    identical, why = same_data(pool.path(pool.b, t_img, t_vol), pool.path(pool.b, v_img, v_vol))
    assert not identical, why  # the VM's own layer differs from the template
    assert qemu_info(pool.path(pool.b, v_img, v_vol))["backing-filename"] == t_vol


def test_clone_structure_then_sync_data_copies_the_chain(pool: Pool):
    img, vols = chain(pool, pool.a)
    ids = {"imageID": img, "storagepoolID": pool.dc.sp, "storagedomainID": pool.a}
    status = finished(pool.cli, pool.cli.Image.cloneStructure(**ids, dstSdUUID=pool.b))
    assert status["taskResult"] == "success"
    _same_chain(pool, img, vols, pool.a, pool.b)
    empty, _ = same_data(pool.path(pool.a, img, vols[-1]), pool.path(pool.b, img, vols[-1]))
    assert not empty  # a structure, no data yet

    # INTERNAL leaves the leaf out (a VM would be mirroring into it).
    task = pool.cli.Image.syncData(**ids, dstSdUUID=pool.b, syncType="INTERNAL")
    assert finished(pool.cli, task)["taskResult"] == "success"
    identical, why = same_data(pool.path(pool.a, img, vols[1]), pool.path(pool.b, img, vols[1]))
    assert identical, why
    assert qemu_info(pool.path(pool.b, img, vols[1]))["actual-size"] < 3 * MiB  # its layer only
    leaf_info = pool.info(pool.b, img, vols[-1])
    assert leaf_info["generation"] == 0
    assert pool.info(pool.b, img, vols[1])["generation"] == 1  # written: one operation

    task = pool.cli.Image.syncData(**ids, dstSdUUID=pool.b, syncType="LEAF")
    assert finished(pool.cli, task)["taskResult"] == "success"
    identical, why = same_data(pool.path(pool.a, img, vols[-1]), pool.path(pool.b, img, vols[-1]))
    assert identical, why
    _same_chain(pool, img, vols, pool.a, pool.b)


# -- bad input: VDSM's code, nothing changed ---------------------------------------------------


def test_bad_input_to_move_clone_and_sync_changes_nothing(pool: Pool):
    img, vols = chain(pool, pool.a)
    sp = pool.dc.sp
    base: dict[str, Any] = {"imageID": img, "storagepoolID": sp, "storagedomainID": pool.a}
    move_ok = {
        **base,
        "dstSdUUID": pool.b,
        "operation": MOVE,
        "postZero": "false",
        "force": "false",
    }
    before = (pool.images(pool.a), pool.images(pool.b))
    other = new_ids(1)[0]
    cases: list[tuple[Any, dict[str, Any], int]] = [
        (pool.cli.Image.move, {**move_ok, "storagepoolID": other}, 309),
        (pool.cli.Image.move, {**move_ok, "dstSdUUID": other}, 353),
        (pool.cli.Image.move, {**move_ok, "imageID": other}, 268),
        (pool.cli.Image.move, {**move_ok, "dstSdUUID": pool.a}, 1000),
        (pool.cli.Image.move, {**move_ok, "operation": 7}, 1000),
        (pool.cli.Image.move, {**move_ok, "operation": "move"}, INVALID_PARAMS),
        (pool.cli.Image.cloneStructure, {**base, "dstSdUUID": other}, 353),
        (pool.cli.Image.cloneStructure, {**base, "imageID": other, "dstSdUUID": pool.b}, 268),
        (pool.cli.Image.cloneStructure, {**base, "dstSdUUID": pool.a}, 1000),
        (pool.cli.Image.cloneStructure, {**base, "dstSdUUID": 5}, INVALID_PARAMS),
        (pool.cli.Image.cloneStructure, base, INVALID_PARAMS),  # dstSdUUID missing
        (pool.cli.Image.syncData, {**base, "dstSdUUID": pool.b, "syncType": "ALL"}, 268),
    ]
    for call, params, code in cases:
        assert error_code(call, **params) == code, params
    # An ILLEGAL chain does not move.
    pool.cli.Volume.setLegality(**pool.ids(pool.a, img, vols[1]), legality="ILLEGAL")
    assert error_code(pool.cli.Image.move, **move_ok) == 262
    pool.cli.Volume.setLegality(**pool.ids(pool.a, img, vols[1]), legality="LEGAL")
    assert (pool.images(pool.a), pool.images(pool.b)) == before

    # syncData: an unknown type (2000), chains that differ (260).
    finished(pool.cli, pool.cli.Image.cloneStructure(**base, dstSdUUID=pool.b))
    sync = {**base, "dstSdUUID": pool.b}
    assert error_code(pool.cli.Image.syncData, **sync, syncType="SOME") == 2000
    extra = new_ids(1)[0]
    pool.create(pool.a, img, extra, parent=vols[-1])
    assert error_code(pool.cli.Image.syncData, **sync, syncType="ALL") == 260
    # A second clone onto the same image is refused: 212.
    assert error_code(pool.cli.Image.cloneStructure, **base, dstSdUUID=pool.b) == 212
    assert [pool.info(pool.b, img, vol)["generation"] for vol in vols] == [0, 0, 0]


def test_a_stopped_move_rolls_back_and_keeps_the_source(pool: Pool, gated_convert: Path):
    img, vols = chain(pool, pool.a)
    task = move(pool, img, pool.a, pool.b, MOVE)
    wait_for(lambda: len(pool.volumes(pool.b, img)) == 3, 30, "the destination laid out")
    assert [pool.info(pool.b, img, vol)["legality"] for vol in vols] == ["ILLEGAL"] * 3
    pool.cli.Task.stop(taskID=task)  # the held qemu-img is stopped: no release needed

    status = finished(pool.cli, task)
    assert (status["taskResult"], status["code"]) == ("cleanSuccess", 411)
    assert img not in pool.images(pool.b)
    assert [pool.info(pool.a, img, vol)["legality"] for vol in vols] == ["LEGAL"] * 3
