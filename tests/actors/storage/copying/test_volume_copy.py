"""Volume.copy: template creation and clone from template, as the Engine sends them.

CreateImageTemplateCommand copies a VM's disk (a chain) collapsed into a new SHARED
volume, often in another domain; CreateCloneOfTemplateCommand copies a template's
volume into a new image of a VM. Both through CopyImageVDSCommand
(JsonRpcIIrsServer.copyImage): volType, volFormat, preallocate as ints, postZero and
force as strings. The data is checked with `qemu-img compare`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from actors.storage.copying.conftest import (
    Pool,
    error_code,
    finished,
    new_ids,
    release,
    same_data,
    write,
)

from harness.engine import BLANK, COW, PREALLOCATED, RAW, SPARSE, MiB
from harness.waiting import wait_for

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

SHARED, LEAF = 6, 8
INVALID_PARAMS = -32602
"""JSON-RPC's code for a param of the wrong type, or missing."""
SIZE = 8 * MiB


def copy(  # noqa: PLR0913 - the verb's params
    pool: Pool,
    src: tuple[str, str, str],
    dst: tuple[str, str, str],
    *,
    vol_type: int = SHARED,
    fmt: int = COW,
    prealloc: int = SPARSE,
    force: str = "false",
) -> str:
    """Volume.copy as JsonRpcIIrsServer.copyImage sends it; returns the task id."""
    task: str = pool.cli.Volume.copy(
        **pool.ids(*src),
        dstSdUUID=dst[0],
        dstImgUUID=dst[1],
        dstVolUUID=dst[2],
        desc="a template",
        volType=vol_type,
        volFormat=fmt,
        preallocate=prealloc,
        postZero="false",
        force=force,
    )
    return task


def vm_disk(pool: Pool, sd: str) -> tuple[str, str, str]:
    """A VM disk with a snapshot: raw base with data, qcow2 top over part of it."""
    img, base, top = new_ids(3)
    pool.create(sd, img, base, fmt=RAW, size=SIZE)
    write(pool.path(sd, img, base), "raw", 1 * MiB, 2 * MiB, 0x11)
    pool.create(sd, img, top, fmt=COW, parent=base)
    write(pool.path(sd, img, top), "qcow2", 2 * MiB, 1 * MiB, 0x22)
    return img, base, top


def test_a_template_is_the_collapsed_chain_in_another_domain(pool: Pool):
    img, _base, top = vm_disk(pool, pool.a)
    t_img, t_vol = new_ids(2)

    status = finished(pool.cli, copy(pool, (pool.a, img, top), (pool.b, t_img, t_vol)))

    assert (status["taskResult"], status["code"]) == ("success", 0)
    info = pool.info(pool.b, t_img, t_vol)
    assert (info["legality"], info["voltype"], info["format"]) == ("LEGAL", "SHARED", "COW")
    assert info["parent"] == BLANK
    assert info["description"] == "a template"
    assert info["capacity"] == str(SIZE)
    identical, why = same_data(pool.path(pool.a, img, top), pool.path(pool.b, t_img, t_vol))
    assert identical, why
    # The source is untouched and still usable.
    assert pool.info(pool.a, img, top)["legality"] == "LEGAL"


def test_a_vm_cloned_from_a_template_holds_its_data(pool: Pool):
    img, _base, top = vm_disk(pool, pool.a)
    t_img, t_vol = new_ids(2)
    finished(pool.cli, copy(pool, (pool.a, img, top), (pool.a, t_img, t_vol)))

    # CreateCloneOfTemplate: the template's volume into a new image, raw preallocated.
    c_img, c_vol = new_ids(2)
    status = finished(
        pool.cli,
        copy(
            pool,
            (pool.a, t_img, t_vol),
            (pool.b, c_img, c_vol),
            vol_type=LEAF,
            fmt=RAW,
            prealloc=PREALLOCATED,
        ),
    )
    assert status["taskResult"] == "success"
    info = pool.info(pool.b, c_img, c_vol)
    assert (info["legality"], info["voltype"], info["format"], info["type"]) == (
        "LEGAL",
        "LEAF",
        "RAW",
        "PREALLOCATED",
    )
    clone = pool.path(pool.b, c_img, c_vol)
    assert int(info["truesize"]) >= SIZE  # preallocated
    identical, why = same_data(pool.path(pool.a, t_img, t_vol), clone)
    assert identical, why

    # A thin VM disk on the template (Volume.create with srcImgUUID) works too.
    v_img, v_vol = new_ids(2)
    pool.create(pool.a, v_img, v_vol, parent=t_vol, parent_img=t_img)
    identical, why = same_data(pool.path(pool.a, t_img, t_vol), pool.path(pool.a, v_img, v_vol))
    assert identical, why


def test_the_destination_is_illegal_until_the_copy_is_complete(pool: Pool, gated_convert: Path):
    img, _base, top = vm_disk(pool, pool.a)
    t_img, t_vol = new_ids(2)
    task = copy(pool, (pool.a, img, top), (pool.b, t_img, t_vol))
    wait_for(lambda: pool.volumes(pool.b, t_img) == [t_vol], 30, "the destination laid out")
    held = pool.info(pool.b, t_img, t_vol)
    assert (held["legality"], held["status"]) == ("ILLEGAL", "ILLEGAL")
    assert pool.cli.Task.getStatus(taskID=task)["taskState"] == "running"
    details: dict[str, Any] = pool.cli.Host.getAllTasks()[task]
    assert details["verb"] == "copyImage"
    assert 0.0 <= details.get("progress", 0.0) < 100.0

    release(gated_convert)
    assert finished(pool.cli, task)["taskResult"] == "success"
    assert pool.info(pool.b, t_img, t_vol)["legality"] == "LEGAL"


def test_a_stopped_copy_rolls_its_destination_back(pool: Pool, gated_convert: Path):
    img, _base, top = vm_disk(pool, pool.a)
    t_img, t_vol = new_ids(2)
    task = copy(pool, (pool.a, img, top), (pool.b, t_img, t_vol))
    wait_for(lambda: pool.volumes(pool.b, t_img) == [t_vol], 30, "the destination laid out")
    pool.cli.Task.stop(taskID=task)  # the held qemu-img is stopped: no release needed

    status = finished(pool.cli, task)
    assert (status["taskResult"], status["code"]) == ("cleanSuccess", 411)
    assert t_img not in pool.images(pool.b)
    assert pool.info(pool.a, img, top)["legality"] == "LEGAL"


def test_force_replaces_an_existing_destination(pool: Pool):
    img, _base, top = vm_disk(pool, pool.a)
    t_img, t_vol = new_ids(2)
    finished(pool.cli, copy(pool, (pool.a, img, top), (pool.b, t_img, t_vol)))
    # Without force the existing volume is refused, and nothing changes.
    assert (
        error_code(
            pool.cli.Volume.copy,
            **pool.ids(pool.a, img, top),
            dstSdUUID=pool.b,
            dstImgUUID=t_img,
            dstVolUUID=t_vol,
            desc="again",
            volType=SHARED,
            volFormat=COW,
            preallocate=SPARSE,
            postZero="false",
            force="false",
        )
        == 212
    )
    status = finished(
        pool.cli, copy(pool, (pool.a, img, top), (pool.b, t_img, t_vol), fmt=RAW, force="true")
    )
    assert status["taskResult"] == "success"
    assert pool.info(pool.b, t_img, t_vol)["format"] == "RAW"


# -- bad input: VDSM's code, nothing changed ---------------------------------------------------


def test_bad_input_is_refused_with_vdsm_codes_and_changes_nothing(pool: Pool):
    img, base, top = vm_disk(pool, pool.a)
    d_img, d_vol = new_ids(2)
    good: dict[str, Any] = {
        **pool.ids(pool.a, img, top),
        "dstSdUUID": pool.b,
        "dstImgUUID": d_img,
        "dstVolUUID": d_vol,
        "desc": "x",
        "volType": SHARED,
        "volFormat": COW,
        "preallocate": SPARSE,
        "postZero": "false",
        "force": "false",
    }
    call = pool.cli.Volume.copy
    before = (pool.images(pool.a), pool.images(pool.b))
    cases: list[tuple[dict[str, Any], int]] = [
        ({"storagepoolID": new_ids(1)[0]}, 309),  # unknown pool
        ({"storagedomainID": new_ids(1)[0]}, 353),  # a domain not in the pool
        ({"dstSdUUID": new_ids(1)[0]}, 353),
        ({"imageID": new_ids(1)[0]}, 268),  # unknown image
        ({"volumeID": new_ids(1)[0]}, 201),  # unknown volume
        ({"volumeID": "not-a-uuid"}, 91),
        ({"volFormat": 7}, 202),  # VDSM's IncorrectFormat
        ({"preallocate": 9}, 231),  # IncorrectType
        ({"volFormat": "cow"}, INVALID_PARAMS),  # wrong JSON type
        ({"dstSdUUID": pool.a, "dstImgUUID": img}, 1000),  # onto itself
        ({"dstSdUUID": BLANK, "dstImgUUID": img}, 1000),
    ]
    for change, code in cases:
        assert error_code(call, **{**good, **change}) == code, change
    missing = dict(good)
    del missing["dstVolUUID"]
    assert error_code(call, **missing) == INVALID_PARAMS
    # An ILLEGAL source chain (a volume of it is ILLEGAL) is refused: 262.
    pool.cli.Volume.setLegality(**pool.ids(pool.a, img, base), legality="ILLEGAL")
    assert error_code(call, **good) == 262
    pool.cli.Volume.setLegality(**pool.ids(pool.a, img, base), legality="LEGAL")
    assert (pool.images(pool.a), pool.images(pool.b)) == before


def test_only_the_spm_copies(pool: Pool):
    img, _base, top = vm_disk(pool, pool.a)
    d_img, d_vol = new_ids(2)
    assert pool.cli.StoragePool.spmStop(storagepoolID=pool.dc.sp) is True
    try:
        assert (
            error_code(copy, pool=pool, src=(pool.a, img, top), dst=(pool.b, d_img, d_vol)) == 654
        )
    finally:
        pool.dc.become_spm(pool.cli)
    assert d_img not in pool.images(pool.b)
