"""The Engine's storage calls, against our verb table and our answers (issue 13 item 1).

`data/engine_irs_calls.json` records, per storage verb the oVirt Engine sends
(ovirt-engine's vdsbroker `JsonRpcIIrsServer` and `JsonRpcVdsServer`, the
VDSCommands that call them and the `*Return` classes that parse the answers): the
params it sends with their JSON types (a Java String holding a number is a JSON
string), which it sends only sometimes and which may go out as null; where
`FutureMap` puts our result; and every field its parser reads, with the Java read
it makes. The unit tests bind the Engine's params to our verbs; the flow test plays
a LOCALFS data center the Engine's way on an in-process host (real qemu-img) and
checks each answer as the Engine's parsers would read it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import BLANK, local_data_center, storage_host
from harness.waiting import wait_for
from hostvisor.actors.errors import InvalidArgument
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import offline_verb_table
from hostvisor.api.rpc.verbs import VerbTable

DATA = Path(__file__).parent / "data" / "engine_irs_calls.json"
CALLS: dict[str, Any] = json.loads(DATA.read_text())
ENGINE: dict[str, Any] = CALLS["methods"]
SERVED: dict[str, Any] = ENGINE | {m: s for m, s in CALLS["vdsm_only"].items() if m != "about"}
INT32 = 2**31
NUMBER = re.compile(r"-?\d+")
STORAGE_POOL_UNKNOWN, UNKNOWN_TASK = 309, 401
"""EngineError codes some VDSCommands read as an answer rather than a failure."""
ISO_IMAGES = "11111111-1111-1111-1111-111111111111"
"""The directory of an ISO domain that holds its files (VDSM's sd.ISO_IMAGE_UUID)."""


# -- the Engine's requests and the reads of its parsers -------------------------------------


def fill(value: Any, ids: dict[str, Any]) -> Any:
    """A sample with each `{name}` placeholder (a whole string, or a key) replaced."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, list):
        return [fill(item, ids) for item in value]
    if isinstance(value, dict):
        return {fill(key, ids): fill(item, ids) for key, item in value.items()}
    return value


def request(method: str, ids: dict[str, Any], *, optional: bool = True) -> dict[str, Any]:
    """The params the Engine sends to `method` (with its optional ones, or without)."""
    params: dict[str, Any] = SERVED[method]["params"]
    return {
        name: fill(param["sample"], ids)
        for name, param in params.items()
        if optional or not param.get("optional")
    }


def _scalar(value: Any, kind: str, where: str) -> None:  # noqa: C901, PLR0912 - one case per Java read
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "any":
        return
    assert value is not None, f"{where}: null where the Engine reads {kind}"
    if kind == "String":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif kind == "Integer":
        assert is_int, f"{where}: {value!r} is not an Integer"
        assert -INT32 <= value < INT32, f"{where}: {value!r} is past 32 bits"
    elif kind == "Double":
        assert isinstance(value, float), f"{where}: {value!r} is not a Double (needs a fraction)"
    elif kind == "Boolean":
        assert isinstance(value, bool), f"{where}: {value!r} is not a Boolean"
    elif kind == "Object[]":
        assert isinstance(value, list), f"{where}: {value!r} is not an array"
    elif kind == "Map":
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
    elif kind == "String(long)":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        assert NUMBER.fullmatch(value), f"{where}: {value!r} is not an integer"
    elif kind == "String(double)":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        float(value)
    elif kind == "toString":
        assert isinstance(value, str | int | float), f"{where}: {value!r} is not a scalar"
    elif kind in ("toString(long)", "toString(int)"):
        assert is_int or (isinstance(value, str) and NUMBER.fullmatch(value)), f"{where}: {value!r}"
        if kind == "toString(int)":
            assert -INT32 <= int(value) < INT32, f"{where}: {value!r} is past 32 bits"
    else:
        raise AssertionError(f"unknown Java read {kind!r} at {where}")


def check(value: Any, spec: str | dict[str, Any], where: str) -> None:
    """Fail unless `value` reads as the Engine's parser reads it (see the data's `types`)."""
    if isinstance(spec, str):
        spec = {"type": spec.lstrip("?")}
    if value is None and spec.get("nullable"):
        return
    _scalar(value, spec["type"], where)
    if "enum" in spec:
        assert value in spec["enum"], f"{where}: {value!r} is none of {spec['enum']}"
    for name, field in spec.get("fields", {}).items():
        if name in value:
            check(value[name], field, f"{where}.{name}")
        else:
            absent_ok = field.startswith("?") if isinstance(field, str) else field.get("optional")
            assert absent_ok, f"{where}: no {name!r}, which the Engine reads"
    if "each" in spec:
        for key, item in value.items():
            check(item, spec["each"], f"{where}[{key}]")
    if "items" in spec:
        for index, item in enumerate(value):
            check(item, spec["items"], f"{where}[{index}]")


@pytest.mark.unit
def test_the_checker_refuses_what_a_java_cast_refuses() -> None:
    spec = {"type": "Map", "fields": {"n": "Integer", "s": "String(long)", "p": "?Double"}}
    check({"n": 1, "s": "2"}, spec, "ok")
    check({"n": 1, "s": "2", "p": 50.0}, spec, "ok")
    for bad in ({"n": "1", "s": "2"}, {"n": 1, "s": 2}, {"n": 1, "s": "2", "p": 50}, {"s": "2"}):
        with pytest.raises(AssertionError):
            check(bad, spec, "bad")


# -- our verb table takes what the Engine sends --------------------------------------------

UNIT_IDS = {
    name: str(uuid.UUID(int=n + 1))
    for n, name in enumerate(
        ("sd", "sd2", "sp", "img", "img2", "vol", "vol2", "vm", "task", "job", "conn", "iso")
    )
} | {"blank": BLANK, "path": "/srv/data", "gen": 0, "gen2": 0}


@pytest.fixture(scope="module")
def table() -> VerbTable:
    return offline_verb_table()


@pytest.mark.unit
@pytest.mark.parametrize("method", sorted(SERVED))
def test_the_verb_takes_the_params_the_engine_sends(table: VerbTable, method: str) -> None:
    verb = table.get(method)
    assert verb is not None, f"{method} is not served"
    spec = SERVED[method]["params"]
    declared = {param.name for param in verb.params}
    assert set(spec) <= declared, f"{method} ignores {sorted(set(spec) - declared)}"
    verb.bind(request(method, UNIT_IDS))
    always = request(method, UNIT_IDS, optional=False)
    verb.bind(always)
    for name, param in spec.items():
        if param.get("nullable"):
            verb.bind({**always, name: None})
    for param in verb.params:
        if param.required:
            assert param.name in spec, f"{method} requires {param.name}, which the Engine omits"
            assert not spec[param.name].get("optional"), f"{method}: {param.name} is optional"


JSON_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}


@pytest.mark.unit
def test_each_recorded_call_cites_the_engine_and_samples_its_json_types() -> None:
    assert set(ENGINE) <= set(SERVED)
    for method, spec in SERVED.items():
        assert spec["engine"], method
        assert spec["owner"], method
        assert "key" in spec["response"], method
        for name, param in spec["params"].items():
            sample = param["sample"]
            assert isinstance(sample, JSON_TYPES[param["type"]]), f"{method}.{name}: {sample!r}"


@pytest.mark.unit
def test_the_engine_calls_we_do_not_serve_are_listed_as_such(table: VerbTable) -> None:
    assert not set(CALLS["not_served"]) & set(SERVED)
    for method in CALLS["not_served"]:
        assert table.get(method) is None, f"{method} is served now: record what the Engine reads"


# -- a LOCALFS data center, played the Engine's way ----------------------------------------


class Engine:
    """Sends what the Engine sends (params from the data file) and reads as its parsers do."""

    def __init__(self, cli: Client, ids: dict[str, Any]) -> None:
        self.cli = cli
        self.ids = ids

    def call(
        self, method: str, *, optional: bool = True, without: tuple[str, ...] = (), **ids: Any
    ) -> Any:
        """Call `method` with the Engine's params (but `without`); check the answer; return it."""
        params = request(method, self.ids | ids, optional=optional)
        for name in without:
            del params[name]
        answer = self.cli.call(method, params)
        check(answer, SERVED[method]["response"]["type"], method)
        return answer

    @property
    def second(self) -> dict[str, Any]:
        """The ids of the second volume, as `img` and `vol`."""
        return {"img": self.ids["img2"], "vol": self.ids["vol2"]}

    def task(self, method: str, *, without: tuple[str, ...] = (), **ids: Any) -> dict[str, Any]:
        """Start an SPM task; poll it as the Engine does (and its listings); clear it."""
        task_id = self.call(method, without=without, **ids)

        def finished() -> dict[str, Any] | None:
            self.call("Host.getAllTasksStatuses")
            self.call("Host.getAllTasksInfo")
            status: dict[str, Any] = self.call("Task.getStatus", task=task_id)
            return status if status["taskState"] == "finished" else None

        status: dict[str, Any] = wait_for(finished, 60, f"{method}'s task to finish")
        assert status["taskResult"] == "success", status
        self.call("Task.clear", task=task_id)
        return status

    def job(self, method: str, **ids: Any) -> dict[str, Any]:
        """Start an SDM job on the volumes' generations now; poll Host.getJobs until it ends."""
        job_id = str(uuid.uuid4())
        ids.setdefault("gen", self.call("Volume.getInfo")["generation"])
        ids.setdefault("gen2", self.call("Volume.getInfo", **self.second)["generation"])
        assert self.call(method, job=job_id, **ids) is True

        def done() -> dict[str, Any] | None:
            jobs: dict[str, dict[str, Any]] = self.call("Host.getJobs", job=job_id)
            return jobs[job_id] if jobs[job_id]["status"] not in ("pending", "running") else None

        info: dict[str, Any] = wait_for(done, 60, f"{method}'s job to end")
        assert info["status"] == "done", info
        return info


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    tmp = tmp_path_factory.mktemp("irswire")
    dc = local_data_center(tmp / "sd")
    iso = tmp / "iso"
    iso.mkdir()
    ids: dict[str, Any] = {
        "blank": BLANK,
        "sd": dc.sd,
        "sp": dc.sp,
        "conn": dc.connection["id"],
        "path": dc.connection["connection"],
        "iso": str(uuid.uuid4()),
    }
    with storage_host(tmp) as cli:
        engine = Engine(cli, ids)
        # ConnectStorageServer, CreateStorageDomain, CreateStoragePool, ConnectStoragePool,
        # SpmStart (polling Task.getStatus): each answer checked as its parser reads it.
        for status in engine.call("StoragePool.connectStorageServer"):
            assert status["status"] == 0
        engine.call("StorageDomain.create")
        engine.call("StoragePool.create")
        engine.call("StoragePool.connect")
        engine.task("StoragePool.spmStart")
        yield engine


@pytest.mark.libvirt
def test_a_data_center_reads_as_the_engine_reads_it(engine: Engine) -> None:
    """The Engine's monitoring reads of the pool, its SPM and its domain."""
    assert engine.call("StoragePool.getSpmStatus")["spmStatus"] == "SPM"
    info = engine.call("StoragePool.getInfo")
    assert info["info"]["master_uuid"] == engine.ids["sd"]
    assert engine.call("StorageDomain.getInfo")["pool"] == [engine.ids["sp"]]
    engine.call("StorageDomain.getStats")
    assert engine.ids["sd"] in engine.call("Host.getStorageDomains")
    assert engine.call("Host.getConnectedStoragePools") == [engine.ids["sp"]]
    stats = wait_for(lambda: engine.call("Host.getStorageRepoStats"), 30, "the domain's check")
    assert stats[engine.ids["sd"]]["valid"] is True


@pytest.mark.libvirt
def test_volumes_read_as_the_engine_reads_them(engine: Engine) -> None:
    """CreateVolume, GetVolumeInfo, GetQemuImageInfo, MeasureVolume, the listings,
    PrepareImage/TeardownImage, the volume's setters, ExtendImageSize, SDM jobs, CopyImage,
    DeleteImageGroup: each answer as its parser reads it."""
    vols = {name: str(uuid.uuid4()) for name in ("img", "vol", "img2", "vol2", "img3", "vol3")}
    engine.ids.update(vols)
    sparse_cow = ("initialSize",)  # sent for preallocated volumes only (as VDSM refuses it)
    engine.task("Volume.create", without=sparse_cow)
    engine.task("Volume.create", without=sparse_cow, img=vols["img2"], vol=vols["vol2"])
    info = engine.call("Volume.getInfo")
    assert info["capacity"] == "1048576"
    engine.call("Volume.getQemuImageInfo")
    assert int(engine.call("Volume.measure")["required"]) > 0
    assert vols["img"] in engine.call("StorageDomain.getImages")
    assert engine.call("StorageDomain.getVolumes") == [vols["vol"]]
    assert engine.call("Image.prepare")["path"].endswith(vols["vol"])
    engine.call("Image.teardown")
    engine.call("Volume.setDescription")
    engine.call("Volume.setLegality")
    engine.job("SDM.copy_data")
    engine.job("SDM.update_volume")
    engine.job("SDM.amend_volume")
    engine.task("Volume.extendSize")
    engine.task("Volume.copy", img2=vols["img3"], vol2=vols["vol3"])
    assert engine.call("Volume.getInfo", img=vols["img3"], vol=vols["vol3"])["format"] == "RAW"
    engine.task("Image.delete", img=vols["img3"])
    engine.call("Host.getAllTasks")


@pytest.mark.libvirt
def test_an_iso_domain_reads_as_the_engine_reads_it(engine: Engine, tmp_path: Path) -> None:
    """An ISO domain created, attached and activated as the Engine does; GetFileStats."""
    path = tmp_path / "iso"
    path.mkdir()
    iso = {"sd": engine.ids["iso"], "path": str(path), "conn": str(uuid.uuid4())}
    engine.call("StoragePool.connectStorageServer", **iso)
    params = request("StorageDomain.create", engine.ids | iso) | {"domainClass": 2, "name": "iso"}
    assert engine.cli.call("StorageDomain.create", params) is True
    # GetExistingStorageDomainList then HSMGetStorageDomainInfo: `pool` an array, even empty.
    params = request("Host.getStorageDomains", engine.ids) | {"domainClass": 2}
    assert iso["sd"] in engine.cli.call("Host.getStorageDomains", params)
    assert engine.call("StorageDomain.getInfo", sd=iso["sd"])["pool"] == []
    engine.call("StorageDomain.attach", sd=iso["sd"])
    engine.call("StorageDomain.activate", sd=iso["sd"])
    (path / iso["sd"] / "images" / ISO_IMAGES / "boot.iso").write_bytes(b"\0" * 2048)
    stats = engine.call("StorageDomain.getFileStats")
    assert stats["boot.iso"] == {"size": "2048", "ctime": stats["boot.iso"]["ctime"], "status": 0}
    engine.call("StorageDomain.deactivate", sd=iso["sd"])
    engine.call("StorageDomain.detach", sd=iso["sd"])


@pytest.mark.libvirt
def test_vm_ovfs_read_as_the_engine_reads_them(engine: Engine) -> None:
    """UpdateVM, GetVmsInfo, RemoveVM on the master (the OVF store of old engines)."""
    engine.ids["vm"] = vm = str(uuid.uuid4())
    engine.call("StoragePool.updateVMs", optional=False)
    assert engine.call("StoragePool.getBackedUpVmsInfo", sd=BLANK) == {vm: "<ovf/>"}
    engine.call("StoragePool.removeVM", optional=False)
    assert engine.call("StoragePool.getBackedUpVmsInfo", sd=BLANK) == {}


@pytest.mark.libvirt
def test_a_finished_task_reverts_and_the_pool_is_torn_down_as_the_engine_does(
    engine: Engine,
) -> None:
    """HSMRevertTask on a finished task; DestroyStoragePool, FormatStorageDomain,
    DisconnectStorageServer (the Engine's removal of a data center)."""
    engine.ids.update(img4=str(uuid.uuid4()), vol4=str(uuid.uuid4()))
    ids = {"img": engine.ids["img4"], "vol": engine.ids["vol4"]}
    task_id = engine.call("Volume.create", without=("initialSize",), **ids)

    def finished() -> bool:
        status: dict[str, str] = engine.call("Task.getStatus", task=task_id)
        return status["taskState"] == "finished"

    wait_for(finished, 60, "the volume's task to finish")
    engine.call("Task.revert", task=task_id)
    assert engine.call("Task.getStatus", task=task_id)["taskResult"] == "cleanSuccess"
    engine.call("Task.clear", task=task_id)
    engine.call("StoragePool.destroy")
    assert engine.call("Host.getConnectedStoragePools") == []
    engine.call("StorageDomain.format")
    for status in engine.call("StoragePool.disconnectStorageServer"):
        assert status["status"] == 0
    # The codes SpmStatusVDSCommand and HSMGetTaskStatusVDSCommand take as answers.
    with pytest.raises(ServerError) as unknown_pool:
        engine.call("StoragePool.getSpmStatus")
    assert unknown_pool.value.code == STORAGE_POOL_UNKNOWN
    with pytest.raises(ServerError) as unknown_task:
        engine.call("Task.getStatus", task=task_id)
    assert unknown_task.value.code == UNKNOWN_TASK


@pytest.mark.unit
@pytest.mark.parametrize("method", ["Volume.create", "Volume.copy"])
def test_a_description_may_be_null_but_not_of_another_type(table: VerbTable, method: str) -> None:
    verb = table.get(method)
    assert verb is not None
    always = request(method, UNIT_IDS, optional=False)
    assert verb.bind({**always, "desc": None})["desc"] is None
    for bad in (5, ["a"], {"a": 1}):
        with pytest.raises(InvalidArgument):
            verb.bind({**always, "desc": bad})
