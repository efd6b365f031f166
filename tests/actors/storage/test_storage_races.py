"""Concurrent storage verbs through the API leave no half-made state.

Storms of connectStorageServer/disconnectStorageServer from two clients leave
connections.json equal to what is connected (and to what the API reports); racing
StoragePool.create (one pool twice, two pools over one domain) and Volume.create
(one volume id) end with exactly one winner, VDSM's error codes for the others, and
consistent metadata on disk.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.engine import (
    BLANK,
    LOCALFS,
    DataCenter,
    MiB,
    local_data_center,
    new_id,
    succeeded,
)
from harness.vms import write_test_node
from hostvisor.actors.storage.errors import (
    StorageDomainAlreadyAttached,
    StoragePoolAlreadyExists,
    VolumeAlreadyExists,
)
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import DomainClass, DomainType
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

pytestmark = pytest.mark.libvirt

RACERS = 6


@dataclass
class Host:
    host: EmbeddedHost
    tmp: Path

    def client(self) -> Client:
        return self.host.client(timeout=60)

    @property
    def store(self) -> Path:
        return self.host.config.state_dir / "storage" / "connections.json"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=write_test_node(tmp_path / "node.xml", []),
        management_port=0,
    )
    with EmbeddedHost(config) as running:
        yield Host(running, tmp_path)


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once (one thread each); return each's result or ServerError."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except ServerError as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def metadata(dc: DataCenter, tmp: Path) -> dict[str, str]:
    domain = FileDomain.find([Path(dc.connection["connection"])], dc.sd)
    assert domain.path.parent == Path(dc.connection["connection"])
    return domain.metadata()


# -- connection storms ------------------------------------------------------------------------


def test_connect_and_disconnect_storms_leave_the_store_as_the_api_reports(host: Host):
    directories = {}
    for index in range(8):
        directory = host.tmp / f"server-{index}"
        directory.mkdir()
        sd = new_id()  # a domain in each, so the API shows which servers are connected
        FileDomain.create(
            directory,
            sd,
            name=f"d{index}",
            domain_type=DomainType.LOCALFS,
            domain_class=DomainClass.DATA,
            remote_path=str(directory),
        )
        directories[new_id()] = (str(directory), sd)

    def storm(seed: int) -> list[list[dict[str, Any]]]:
        rng = random.Random(seed)  # noqa: S311 - a test's shuffle
        answers = []
        with host.client() as cli:
            for _ in range(25):
                chosen = rng.sample(sorted(directories), rng.randint(1, 4))
                params = [{"id": i, "connection": directories[i][0]} for i in chosen]
                verb = rng.choice(
                    [cli.StoragePool.connectStorageServer, cli.StoragePool.disconnectStorageServer]
                )
                answers.append(
                    verb(storagepoolID=BLANK, domainType=LOCALFS, connectionParams=params)
                )
        return answers

    for answers in race([lambda: storm(1), lambda: storm(2)]):
        assert not isinstance(answers, ServerError), answers
        assert all(s["status"] == 0 for answer in answers for s in answer)

    stored = json.loads(host.store.read_text())["connections"]
    stored_ids = [c["id"] for c in stored]
    assert len(stored_ids) == len(set(stored_ids))
    with host.client() as cli:
        reported = set(cli.Host.getStorageDomains())
    assert reported == {directories[i][1] for i in stored_ids}
    # Each connection stored is linked, and each linked one is stored.
    mount_root = host.host.config.mount_root
    linked = (
        {e.name for e in mount_root.iterdir() if e.is_symlink()} if mount_root.is_dir() else set()
    )
    expected = {directories[i][0].replace("_", "__").replace("/", "_") for i in stored_ids}
    assert linked == expected


# -- StoragePool.create races -----------------------------------------------------------------


def _domains(host: Host, cli: Client, count: int) -> list[DataCenter]:
    made = []
    for _ in range(count):
        dc = local_data_center(host.tmp / f"sd-{new_id()[:8]}")
        dc.connect_server(cli)
        dc.create_domain(cli)
        made.append(dc)
    return made


def _create_pool(host: Host, sp: str, master: str, domains: list[str]) -> Callable[[], Any]:
    def create() -> Any:
        with host.client() as cli:
            return cli.StoragePool.create(
                storagepoolID=sp,
                name="racer",
                masterSdUUID=master,
                masterVersion=1,
                domainList=domains,
            )

    return create


def test_one_pool_created_many_times_at_once_is_made_once(host: Host):
    with host.client() as cli:
        a, b = _domains(host, cli, 2)
    sp = new_id()
    results = race([_create_pool(host, sp, a.sd, [a.sd, b.sd]) for _ in range(RACERS)])
    assert results.count(True) == 1, results
    errors = [r for r in results if r is not True]
    assert all(isinstance(e, ServerError) for e in errors), errors
    assert {e.code for e in errors} == {StoragePoolAlreadyExists.code}
    master, member = metadata(a, host.tmp), metadata(b, host.tmp)
    assert master["POOL_UUID"] == member["POOL_UUID"] == sp
    assert master["ROLE"] == "Master"
    assert master["POOL_DOMAINS"] == f"{a.sd}:Active,{b.sd}:Active"
    assert member["ROLE"] == "Regular"


def test_two_pools_over_one_domain_one_wins_and_the_other_leaves_nothing(host: Host):
    for _ in range(3):
        with host.client() as cli:
            a, shared, c = _domains(host, cli, 3)
        first, second = new_id(), new_id()
        results = race(
            [
                _create_pool(host, first, a.sd, [a.sd, shared.sd]),
                _create_pool(host, second, c.sd, [shared.sd, c.sd]),
            ]
        )
        assert results.count(True) == 1, results
        (loser,) = [r for r in results if r is not True]
        assert isinstance(loser, ServerError)
        assert loser.code in (StorageDomainAlreadyAttached.code, StoragePoolAlreadyExists.code)
        winner, winner_master, loser_master = (
            (first, a, c) if results[0] is True else (second, c, a)
        )
        assert metadata(shared, host.tmp)["POOL_UUID"] == winner
        assert metadata(winner_master, host.tmp)["ROLE"] == "Master"
        untouched = metadata(loser_master, host.tmp)
        assert untouched["POOL_UUID"] == ""
        assert untouched["ROLE"] == "Regular"
        assert "MASTER_VERSION" not in untouched or untouched["MASTER_VERSION"] in ("", "0")


# -- Volume.create races ----------------------------------------------------------------------


def test_one_volume_created_many_times_at_once_is_made_once(host: Host):
    dc = local_data_center(host.tmp / "sd")
    with host.client() as cli:
        dc.setup(cli)
    for _ in range(3):
        img, vol = new_id(), new_id()

        def create(dc: DataCenter = dc, img: str = img, vol: str = vol) -> Any:
            with host.client() as cli:
                return dc.create_volume(cli, img, vol, size=MiB)

        results = race([create for _ in range(RACERS)])
        task_ids = [r for r in results if isinstance(r, str)]
        errors = [r for r in results if not isinstance(r, str)]
        assert len(task_ids) == 1, results
        assert {e.code for e in errors} == {VolumeAlreadyExists.code}, errors
        with host.client() as cli:
            succeeded(cli, task_ids[0])
            info = cli.Volume.getInfo(**dc.ids(img, vol))
            assert info["legality"] == "LEGAL"
            assert cli.Image.getVolumes(
                storagepoolID=dc.sp, storagedomainID=dc.sd, imageID=img
            ) == [vol]
            assert cli.Host.getAllTasksStatuses() == {}
        image_dir = Path(dc.connection["connection"]) / dc.sd / "images" / img
        assert sorted(p.name for p in image_dir.iterdir()) == sorted(
            [vol, f"{vol}.meta", f"{vol}.lease"]
        )
