"""The storage verbs' results have the types VDSM's own schema gives them (issue 13 item 7).

`data/storage_vdsm_schema.json` records, for every storage verb we serve, the type
VDSM's `lib/vdsm/api/vdsm-api.yml` gives its result, and the notes (`CODE:`) where
VDSM's code sends something else, which the facts then follow. The checker is
tests/actors/host/test_vdsm_schema.py's (required fields, a map's keys and values,
`uint` an int >= 0, a string holding a number), plus what `vdsmapi.verify_retval`
also reports: a field the type does not name. The answers come from an in-process
host with real qemu-img, driven as the Engine drives it (test_engine_irs_wire.py's
`engine` fixture and params), so each answer is also read by the Engine's parsers.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from actors.host.test_vdsm_schema import AnyOf, Map, Obj, OneOf, Str, check
from api.rpc.test_engine_irs_wire import ISO_IMAGES, Engine, request
from api.rpc.test_engine_irs_wire import engine as engine  # noqa: PLC0414 - a fixture, re-exported

from harness.waiting import wait_for
from hostvisor.actors.storage.xleases import LeaseInfo
from hostvisor.actors.vm.snapshots import VirtJob
from hostvisor.api.embedded import offline_verb_table

DATA = Path(__file__).parent / "data" / "storage_vdsm_schema.json"
FACTS: dict[str, Any] = json.loads(DATA.read_text())
PRIMITIVES = {"string", "int", "uint", "boolean", "float", "long"}
STORAGE = re.compile(
    r"(StoragePool|StorageDomain|Image|Volume|Task|SDM|Lease)\."
    r"|Host\.(getStorage|getAllTasks|getConnectedStoragePools|getJobs)"
)


def spec_of(fact: Any) -> Any:  # noqa: PLR0911 - one case per form of the grammar
    """The checker's spec for a fact of the data file (its `grammar`)."""
    if isinstance(fact, str):
        if fact.startswith("@"):
            return spec_of(FACTS["types"][fact[1:]])
        if fact.startswith("str:"):
            return Str(fact[4:])
        assert fact in PRIMITIVES, fact
        return fact
    if isinstance(fact, list):
        return [spec_of(fact[0])]
    if "map" in fact:
        key, value = fact["map"]
        return Map(spec_of(key), spec_of(value))
    if "enum" in fact:
        return OneOf(tuple(fact["enum"]))
    if "any" in fact:
        return AnyOf(tuple(spec_of(one) for one in fact["any"]))
    required = {name: spec_of(field) for name, field in fact["fields"].items()}
    return Obj(required, {name: spec_of(field) for name, field in fact.get("optional", {}).items()})


def unknown(spec: Any, value: Any, path: str = "") -> list[str]:
    """The fields of `value` its type does not name (vdsmapi's _verify_object_type)."""
    if isinstance(spec, list) and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in unknown(spec[0], item, f"{path}[{i}]")]
    if isinstance(spec, Map) and isinstance(value, dict):
        return [
            p for key, item in value.items() for p in unknown(spec.value, item, f"{path}.{key}")
        ]
    if not (isinstance(spec, Obj) and isinstance(value, dict)):
        return []
    fields = spec.required | spec.optional
    return [
        problem
        for name, item in value.items()
        for problem in (
            unknown(fields[name], item, f"{path}.{name}")
            if name in fields
            else [f"{path}.{name}: not in the type"]
        )
    ]


def problems(method: str, answer: Any) -> list[str]:
    """Where `answer` breaks the recorded type of `method`'s result (none: status only)."""
    if FACTS["methods"][method] is None:
        return []
    spec = spec_of(FACTS["methods"][method])
    found: list[str] = check(spec, answer, method)
    return found + unknown(spec, answer, method)


# -- the facts and the checker ------------------------------------------------------------


@pytest.mark.unit
def test_every_storage_verb_we_serve_has_its_vdsm_type() -> None:
    served = {method for method in offline_verb_table().schema() if STORAGE.match(method)}
    assert served == set(FACTS["methods"])
    for fact in FACTS["methods"].values():
        if fact is not None:
            spec_of(fact)  # every @Name is a recorded type
    for name, fact in FACTS["types"].items():
        for note in fact.get("code", {}).values() if isinstance(fact, dict) else ():
            assert note.startswith(("CODE: ", "EXTRA: ")), f"{name}: {note}"


@pytest.mark.unit
def test_the_checker_reports_what_vdsmapi_reports() -> None:
    assert problems("Task.getInfo", {"id": "x", "verb": "createVolume"}) == []
    assert problems("Task.getInfo", {"id": "x", "verb": 1, "more": 2}) == [
        "Task.getInfo.verb: 1 is not string",
        "Task.getInfo.more: not in the type",
    ]
    assert problems("Volume.getSize", {"truesize": 4096, "apparentsize": "-1"}) == [
        "Volume.getSize.truesize: 4096 is not a string",
        "Volume.getSize.apparentsize: '-1' does not hold a uint",
    ]
    found = problems("Host.getJobs", {"j": {"id": "j", "status": "gone"}})
    assert found[0].startswith("Host.getJobs.j.status: 'gone' is not one of ('aborted'")
    assert found[1:] == ["Host.getJobs.j.description: missing", "Host.getJobs.j.job_type: missing"]
    assert problems("Lease.status", {"owners": [1], "version": None}) == []


@pytest.mark.unit
def test_a_lease_info_has_vdsms_type() -> None:
    """Lease.info's answer as xleases builds it (running Lease.* needs a sanlock daemon:
    tests/actors/storage/sanlock/ drive them; their Lease.status answers are VDSM's)."""
    info = LeaseInfo(sd_id=str(uuid.uuid4()), lease_id=str(uuid.uuid4()), path="/x", offset=2**20)
    assert problems("Lease.info", info.wire()) == []


@pytest.mark.unit
def test_a_vms_job_in_host_get_jobs_has_vdsms_type() -> None:
    """Host.getJobs lists the VMs' snapshot jobs too (job_type `virt`, as VDSM's virt/jobs)."""
    running = VirtJob(id=str(uuid.uuid4()), status="running")
    failed = VirtJob(id=str(uuid.uuid4()), status="failed", error={"code": 48, "message": "no"})
    assert problems("Host.getJobs", {job.id: job.info() for job in (running, failed)}) == []


# -- answers of an in-process host, asked as the Engine asks ------------------------------


def checked(engine: Engine, method: str, params: dict[str, Any] | None = None, **ids: Any) -> Any:
    """`method`'s answer (to `params`, or the Engine's params with `ids`), checked."""
    if params is None:
        params = request(method, engine.ids | ids)
    answer = engine.cli.call(method, params)
    assert problems(method, answer) == []
    return answer


def run_task(engine: Engine, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Start an SPM task; check every task listing until it finished; clear it."""
    task_id = checked(engine, method, params)

    def finished() -> dict[str, Any] | None:
        for listing in ("Host.getAllTasks", "Host.getAllTasksInfo", "Host.getAllTasksStatuses"):
            assert task_id in checked(engine, listing, {})
        checked(engine, "Task.getInfo", {"taskID": task_id})
        status: dict[str, Any] = checked(engine, "Task.getStatus", {"taskID": task_id})
        return status if status["taskState"] == "finished" else None

    status: dict[str, Any] = wait_for(finished, 60, f"{method}'s task to finish")
    checked(engine, "Task.clear", {"taskID": task_id})
    return status


def new_volume(engine: Engine, img: str, vol: str, **changes: Any) -> dict[str, Any]:
    """Volume.create as the Engine sends it for a sparse volume, with `changes`."""
    params = request("Volume.create", engine.ids | {"img": img, "vol": vol}) | changes
    del params["initialSize"]  # sent for preallocated volumes only
    return run_task(engine, "Volume.create", params)


def volume_ids(engine: Engine, img: str, vol: str) -> dict[str, str]:
    """storagepoolID, storagedomainID, imageID and volumeID of one volume."""
    ids: dict[str, str] = request("Volume.getInfo", engine.ids | {"img": img, "vol": vol})
    return ids


@pytest.mark.libvirt
def test_volume_answers_have_vdsms_types(engine: Engine) -> None:
    """getInfo, getSize, getQemuImageInfo and measure of a qcow2 base, its snapshot
    (with a bitmap) and a raw volume; the image and domain listings."""
    img, base, top, raw_img, raw = (str(uuid.uuid4()) for _ in range(5))
    assert new_volume(engine, img, base)["taskResult"] == "success"
    assert new_volume(engine, img, top, srcImgUUID=img, srcVolUUID=base)["taskResult"] == "success"
    assert new_volume(engine, raw_img, raw, volFormat=5)["taskResult"] == "success"
    path = checked(engine, "Image.prepare", img=img, vol=top)["path"]
    bitmap = str(uuid.uuid4())
    subprocess.run(["qemu-img", "bitmap", "--add", path, bitmap], check=True, capture_output=True)
    for image, volume in ((img, base), (img, top), (raw_img, raw)):
        checked(engine, "Volume.getInfo", img=image, vol=volume)
        checked(engine, "Volume.getSize", volume_ids(engine, image, volume))
        checked(engine, "Volume.getQemuImageInfo", img=image, vol=volume)
        checked(engine, "Volume.measure", img=image, vol=volume)
    qemu = checked(engine, "Volume.getQemuImageInfo", img=img, vol=top)
    assert (qemu["backingfile"], qemu["compat"]) == (base, "1.1")
    assert qemu["bitmaps"] == [[bitmap, 65536, ["auto"]]]
    raw_qemu = checked(engine, "Volume.getQemuImageInfo", img=raw_img, vol=raw)
    assert set(raw_qemu) == {"virtualsize", "format"}
    image_ids = volume_ids(engine, img, base)
    del image_ids["volumeID"]
    assert set(checked(engine, "Image.getVolumes", image_ids)) == {base, top}
    assert {img, raw_img} <= set(checked(engine, "StorageDomain.getImages"))
    assert set(checked(engine, "StorageDomain.getVolumes", img=img)) == {base, top}
    illegal = request("Volume.setLegality", engine.ids | {"img": raw_img, "vol": raw})
    checked(engine, "Volume.setLegality", illegal | {"legality": "ILLEGAL"})
    assert checked(engine, "Volume.getInfo", img=raw_img, vol=raw)["status"] == "ILLEGAL"
    assert checked(engine, "Image.reconcileVolumeChain", img=img, vol=top) == [base, top]
    extend = request("Volume.extendSize", engine.ids | {"img": img, "vol": top})
    assert run_task(engine, "Volume.extendSize", extend)["taskResult"] == "success"
    delete = request("Image.delete", engine.ids | {"img": raw_img})
    assert run_task(engine, "Image.delete", delete)["taskResult"] == "success"
    checked(engine, "Image.teardown", img=img, vol=top)


@pytest.mark.libvirt
def test_task_and_job_answers_have_vdsms_types(engine: Engine) -> None:
    """A task that succeeds and one that fails (every listing polled on the way); an SDM
    job that is done and one that fails, polled by Host.getJobs."""
    img, vol, img2, vol2 = (str(uuid.uuid4()) for _ in range(4))
    new_volume(engine, img, vol)
    new_volume(engine, img2, vol2)
    orphan = new_volume(engine, img, str(uuid.uuid4()), srcImgUUID=img, srcVolUUID=img2)
    assert orphan["taskResult"] != "success"
    generations = {"gen": 0, "gen2": 0, "img": img, "vol": vol, "img2": img2, "vol2": vol2}
    for generation, ending in ((0, "done"), (7, "failed")):
        job = str(uuid.uuid4())
        params = request("SDM.copy_data", engine.ids | generations | {"job": job})
        params["destination"]["generation"] = generation
        checked(engine, "SDM.copy_data", params)

        def ended(job: str = job) -> dict[str, Any] | None:
            jobs = checked(engine, "Host.getJobs", {})
            checked(engine, "Host.getJobs", {"job_type": "storage", "job_ids": [job]})
            return None if jobs[job]["status"] in ("pending", "running") else jobs[job]

        info = wait_for(ended, 60, "the copy job to end")
        assert (info["status"], info["description"]) == (ending, "copy_data"), info
        assert ("error" in info) == (ending == "failed")
        generations["gen2"] = checked(engine, "Volume.getInfo", img=img2, vol=vol2)["generation"]


@pytest.mark.libvirt
def test_domain_and_pool_answers_have_vdsms_types(engine: Engine, tmp_path: Path) -> None:
    """The data domain, the pool and its SPM; an ISO domain attached (not active: VDSM
    reports no version nor sizes for it), then active with a file; the SPM stopped."""
    checked(engine, "StoragePool.connectStorageServer")
    checked(engine, "StorageDomain.getInfo")
    checked(engine, "StorageDomain.getStats")
    checked(engine, "StoragePool.getSpmStatus")
    assert engine.ids["sd"] in checked(engine, "Host.getStorageDomains")
    assert checked(engine, "Host.getConnectedStoragePools") == [engine.ids["sp"]]
    wait_for(lambda: checked(engine, "Host.getStorageRepoStats", {}), 30, "the domain's check")
    checked(engine, "StoragePool.getBackedUpVmsInfo")
    path = tmp_path / "iso"
    path.mkdir()
    iso = {"sd": engine.ids["iso"], "path": str(path), "conn": str(uuid.uuid4())}
    checked(engine, "StoragePool.connectStorageServer", **iso)
    create = request("StorageDomain.create", engine.ids | iso) | {"domainClass": 2, "name": "iso"}
    checked(engine, "StorageDomain.create", create)
    assert checked(engine, "StorageDomain.getInfo", sd=iso["sd"])["class"] == "Iso"
    checked(engine, "StorageDomain.attach", sd=iso["sd"])
    dominfo = checked(engine, "StoragePool.getInfo")["dominfo"]
    assert dominfo[iso["sd"]] == {"status": "Attached", "alerts": [], "isoprefix": ""}
    checked(engine, "StorageDomain.activate", sd=iso["sd"])
    (path / iso["sd"] / "images" / ISO_IMAGES / "boot.iso").write_bytes(b"\0" * 2048)
    info = checked(engine, "StoragePool.getInfo")
    assert info["dominfo"][iso["sd"]]["isoprefix"] == info["info"]["isoprefix"] != ""
    assert checked(engine, "StorageDomain.getFileStats")["boot.iso"]["size"] == "2048"
    checked(engine, "StorageDomain.deactivate", sd=iso["sd"])
    checked(engine, "StorageDomain.detach", sd=iso["sd"])
    assert checked(engine, "StorageDomain.getInfo", sd=iso["sd"])["pool"] == []
    assert checked(engine, "StoragePool.upgrade") == "started"
    checked(engine, "StoragePool.spmStop")
    assert checked(engine, "StoragePool.getSpmStatus")["spmStatus"] == "Free"
    checked(engine, "StoragePool.getInfo")
