"""The storage branch re-adopts its domains and pool whenever it restarts.

A domain actor made to crash past its own budget is given up alone and adopted again
after the backoff (issue 12's per-child policy), while the pool keeps its SPM lock.
When the domain supervisor itself dies, it comes back empty and the recoverer after
it re-adopts every domain from the mounts. A whole-branch restart (its own budget
spent) brings back the pool connection from pool.json too. In each case the verbs
work again, on the same domain, with the same volumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.engine import DataCenter, MiB, local_data_center, new_id, succeeded
from harness.vms import write_test_node
from harness.waiting import wait_for
from hostvisor.actors.actor import Kill
from hostvisor.actors.storage.addresses import CONNECTIONS, STORAGE, STORAGE_DOMAINS, domain_path
from hostvisor.api.client import ServerError
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config
from hostvisor.supervision.spec import RESOURCE_CHILD_BUDGET

pytestmark = pytest.mark.libvirt

BUDGET = 10
"""The `storage` branch supervisor's intensity (crashes within its period)."""
CHILD_BUDGET = RESOURCE_CHILD_BUDGET.intensity
"""Each domain actor's own budget: one crash more and it is given up for a backoff."""


class Boom:
    """A message no storage actor knows: telling it is a bug, so the actor crashes."""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[EmbeddedHost, DataCenter]]:
    config = load_config(
        state_dir=tmp_path / "state",
        libvirt_uri=write_test_node(tmp_path / "node.xml", []),
        management_port=0,
    )
    dc = local_data_center(tmp_path / "sd")
    with EmbeddedHost(config) as running:
        with running.client(timeout=30) as cli:
            dc.setup(cli)
        yield running, dc


def crash_repeatedly(host: EmbeddedHost, path: str, times: int) -> None:
    """Crash the actor at `path` `times` times, each new incarnation once it runs."""
    previous: pykka.ActorRef[Any] | None = None

    def new_incarnation() -> pykka.ActorRef[Any] | None:
        ref = host.registry.get(path)
        return ref if ref is not None and ref is not previous else None

    for _ in range(times):
        ref = wait_for(new_incarnation, 30, f"{path} to run again")
        ref.tell(Boom())
        previous = ref


def recoveries(host: EmbeddedHost) -> int:
    return host.gate.reports.get(STORAGE, 0)


def assert_storage_works(host: EmbeddedHost, dc: DataCenter, img: str, vol: str) -> None:
    with host.client(timeout=30) as cli:
        assert cli.Host.getConnectedStoragePools() == [dc.sp]
        assert cli.Volume.getInfo(**dc.ids(img, vol))["legality"] == "LEGAL"
        if cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] != "SPM":
            dc.become_spm(cli)
        other = new_id()
        succeeded(cli, dc.create_volume(cli, img, other, size=MiB, parent=vol))
        assert cli.StorageDomain.getImages(storagedomainID=dc.sd) == [img]
        stats = cli.Host.getStorageRepoStats()
        assert set(stats) == {dc.sd}


def test_a_domain_crash_looping_past_its_budget_is_given_up_alone_then_adopted_again(
    host: Any,
):
    running, dc = host
    img, vol = new_id(), new_id()
    with running.client(timeout=30) as cli:
        succeeded(cli, dc.create_volume(cli, img, vol, size=MiB))
    supervisor = running.registry.lookup(STORAGE_DOMAINS)

    crash_repeatedly(running, domain_path(dc.sd), CHILD_BUDGET + 1)
    wait_for(
        lambda: running.registry.status(domain_path(dc.sd)).restarts.last_reason.startswith(
            "given up"
        ),
        10,
        "the domain's actor to be given up",
    )

    wait_for(
        lambda: (ref := running.registry.get(domain_path(dc.sd))) is not None and ref.is_alive(),
        30,
        "the domain to be adopted again after its backoff",
    )
    assert running.registry.lookup(STORAGE_DOMAINS) is supervisor  # its siblings never noticed
    with running.client(timeout=30) as cli:  # the pool kept its SPM role
        assert cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] == "SPM"
    assert_storage_works(running, dc, img, vol)


def test_the_domain_supervisor_dying_comes_back_empty_and_the_recoverer_adopts(host: Any):
    running, dc = host
    img, vol = new_id(), new_id()
    with running.client(timeout=30) as cli:
        succeeded(cli, dc.create_volume(cli, img, vol, size=MiB))
    before = recoveries(running)

    running.registry.lookup(STORAGE_DOMAINS).tell(Kill("drill"))

    wait_for(lambda: recoveries(running) > before, 30, "the storage recoverer to run again")
    wait_for(lambda: running.registry.get(domain_path(dc.sd)), 30, "the domain to be adopted")
    with running.client(timeout=30) as cli:  # the pool kept its SPM role
        assert cli.StoragePool.getSpmStatus(storagepoolID=dc.sp)["spmStatus"] == "SPM"
    assert_storage_works(running, dc, img, vol)


def test_the_whole_storage_branch_restarted_adopts_domains_and_pool(host: Any):
    running, dc = host
    img, vol = new_id(), new_id()
    with running.client(timeout=30) as cli:
        succeeded(cli, dc.create_volume(cli, img, vol, size=MiB))
    branch = running.registry.lookup(STORAGE)

    crash_repeatedly(running, CONNECTIONS, BUDGET + 1)  # the branch's own budget is spent

    wait_for(
        lambda: (r := running.registry.get(STORAGE)) is not None and r is not branch,
        30,
        "the root to restart the storage branch",
    )
    wait_for(lambda: connected(running, dc), 30, "the pool to be connected again")
    wait_for(lambda: running.registry.get(domain_path(dc.sd)), 30, "the domain to be adopted")
    assert_storage_works(running, dc, img, vol)


def connected(host: EmbeddedHost, dc: DataCenter) -> bool:
    with host.client(timeout=30) as cli:
        try:
            return bool(cli.Host.getConnectedStoragePools() == [dc.sp])
        except ServerError:
            return False  # the branch is still starting
