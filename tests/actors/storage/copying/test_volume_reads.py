"""Volume.measure and Volume.getQemuImageInfo, as the Engine reads them (any host).

MeasureVolumeVDSCommand (JsonRpcVdsServer.measureVolume: dstVolFormat an int,
backing_chain a boolean) reads `required`; GetQemuImageInfoVDSCommand reads
format, virtualsize, clustersize, backingfile and compat. The figures are
checked against qemu-img run directly on the same files.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from actors.storage.copying.conftest import Pool, error_code, new_ids, write

from harness.engine import COW, RAW, MiB

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

INVALID_PARAMS = -32602
SIZE = 16 * MiB


def _measure(path: str, out: str, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        ["qemu-img", "measure", "--output", "json", "-U", "-O", out, *extra, path],
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, Any] = json.loads(done.stdout)
    return measured


def _disk(pool: Pool) -> tuple[str, str, str]:
    img, base, top = new_ids(3)
    pool.create(pool.a, img, base, fmt=RAW, size=SIZE)
    write(pool.path(pool.a, img, base), "raw", 0, 4 * MiB, 0x61)
    pool.create(pool.a, img, top, fmt=COW, parent=base)
    write(pool.path(pool.a, img, top), "qcow2", 8 * MiB, 2 * MiB, 0x62)
    return img, base, top


def test_measure_answers_what_qemu_img_measures(pool: Pool):
    img, base, top = _disk(pool)
    ids = pool.ids(pool.a, img, top)
    top_path = pool.path(pool.a, img, top)

    chain = pool.cli.Volume.measure(**ids, dstVolFormat=COW, backing_chain=True)
    assert chain == {
        key: int(value) for key, value in _measure(top_path, "qcow2").items() if key != "bitmaps"
    }
    alone = pool.cli.Volume.measure(**ids, dstVolFormat=COW, backing_chain=False)
    assert alone["required"] < chain["required"]  # only the top layer's 2 MiB
    assert 2 * MiB <= alone["required"] < 3 * MiB
    raw = pool.cli.Volume.measure(**ids, dstVolFormat=RAW)
    assert raw["required"] == SIZE
    sub = pool.cli.Volume.measure(**ids, dstVolFormat=COW, baseID=base)
    assert sub["required"] == chain["required"]  # the base is the whole rest of the chain


def test_qemu_image_info_has_vdsm_fields(pool: Pool):
    img, base, top = _disk(pool)
    info = pool.cli.Volume.getQemuImageInfo(**pool.ids(pool.a, img, top))
    assert info == {
        "format": "qcow2",
        "virtualsize": SIZE,
        "clustersize": 65536,
        "backingfile": base,
        "compat": "1.1",
    }
    raw = pool.cli.Volume.getQemuImageInfo(**pool.ids(pool.a, img, base))
    assert raw == {"format": "raw", "virtualsize": SIZE}


def test_bad_input_to_the_reads(pool: Pool):
    img, base, top = _disk(pool)
    ids = pool.ids(pool.a, img, top)
    other = new_ids(1)[0]
    measure, info = pool.cli.Volume.measure, pool.cli.Volume.getQemuImageInfo
    cases: list[tuple[Any, dict[str, Any], int]] = [
        (measure, {**ids, "storagepoolID": other, "dstVolFormat": COW}, 309),
        (measure, {**ids, "storagedomainID": other, "dstVolFormat": COW}, 353),
        (measure, {**ids, "imageID": other, "dstVolFormat": COW}, 268),
        (measure, {**ids, "volumeID": other, "dstVolFormat": COW}, 201),
        (measure, {**ids, "dstVolFormat": 9}, 202),
        (measure, {**ids, "dstVolFormat": "qcow2"}, INVALID_PARAMS),
        (measure, ids, INVALID_PARAMS),  # dstVolFormat missing
        (measure, {**ids, "dstVolFormat": COW, "baseID": top}, 2009),  # not the parent
        (measure, {**pool.ids(pool.a, img, base), "dstVolFormat": COW, "baseID": top}, 2009),
        (info, {**ids, "storagepoolID": other}, 309),
        (info, {**ids, "imageID": other}, 268),
        (info, {**ids, "volumeID": other}, 201),
        (info, {**ids, "volumeID": 7}, INVALID_PARAMS),
    ]
    for call, params, code in cases:
        assert error_code(call, **params) == code, params
