"""Two hosts, one shared domain, real sanlock daemons: host ids and SPM contention.

What VDSM's clusterlock.SANLock gives oVirt, shown across two Hostvisor hosts:
both join the domain's lockspace with their host ids (`acquired` in the repo
stats is sanlock's word, and sanlock lists both hosts live); the SDM lease makes
one host SPM at a time; `kill -9` of the SPM's agent frees the lease (sanlock
releases a dead process's leases) and the other host takes it; a host whose
lockspace is removed loses the lease and the other host becomes SPM.
"""

from __future__ import annotations

import os
import time

import pytest

from harness.waiting import wait_for

from .conftest import Cluster, SanlockHost

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.timeout(300)]

ACQUIRE_LOCK_FAILURE = 651


def lockspace_spec(host: SanlockHost, sd: str) -> str:
    """The `LOCKSPACE:HOST_ID:PATH:OFFSET` spec `host`'s daemon holds for `sd`."""
    for line in host.sanlock.client("gets").splitlines():
        words = line.split()
        if words[:1] == ["s"] and words[1].startswith(f"{sd}:"):
            return words[1]
    raise AssertionError(f"{sd} is not a lockspace of h{host.host_id}'s daemon")


def gets(host: SanlockHost) -> tuple[dict[str, int], dict[int, str]]:
    """`sanlock client gets -h 1` of `host`'s daemon: ({lockspace: our host id}, {id: state}).

    The CLI, not the binding: libsanlock keeps the first daemon a process talked to.
    """
    held: dict[str, int] = {}
    seen: dict[int, str] = {}
    for line in host.sanlock.client("gets", "-h", "1").splitlines():
        words = line.split()
        if words[:1] == ["s"]:
            name, host_id = words[1].split(":")[:2]
            held[name] = int(host_id)
        elif words[:1] == ["h"]:
            seen[int(words[1])] = words[-1]
    return held, seen


def sdm_owners(cluster: Cluster) -> tuple[int, list[int]]:
    """The SDM lease as sanlock reports it (h1's daemon): (version, owner host ids).

    The binding talks to h1's daemon only (libsanlock keeps the first one it used).
    """
    import sanlock  # noqa: PLC0415

    disk = [(str(cluster.dom_md / "leases"), 1024 * 1024)]
    with cluster.h1.sanlock.client_env():
        resource = sanlock.read_resource(*disk[0])
        owners = sanlock.read_resource_owners(cluster.sd.encode(), b"SDM", disk)
    return resource["version"], [owner["host_id"] for owner in owners]


def test_the_domain_is_made_with_its_lockspace_and_sdm_lease(cluster: Cluster) -> None:
    import sanlock  # noqa: PLC0415

    with cluster.h1.sanlock.client_env():
        lockspace = sanlock.read_lockspace(str(cluster.dom_md / "ids"))
        resource = sanlock.read_resource(str(cluster.dom_md / "leases"), 1024 * 1024)
    assert lockspace["lockspace"] == cluster.sd.encode()
    assert resource["lockspace"] == cluster.sd.encode()
    assert resource["resource"] == b"SDM"


def test_both_hosts_join_the_lockspace_with_their_host_ids(cluster: Cluster) -> None:
    cluster.wait_joined()
    for host in cluster.hosts:
        assert gets(host)[0] == {cluster.sd: host.host_id}
        with host.connect() as cli:
            assert cli.Host.getStats()["storageDomains"][cluster.sd]["acquired"] is True
    wait_for(
        lambda: all(
            gets(host)[1].get(other.host_id) == "LIVE"
            for host in cluster.hosts
            for other in cluster.hosts
        ),
        60,
        "each daemon to see both hosts live",
    )


def test_a_host_leaves_the_lockspace_when_it_disconnects_and_joins_again(cluster: Cluster) -> None:
    h2 = cluster.h2
    cluster.wait_joined()
    with h2.connect() as cli:
        cli.StoragePool.disconnect(storagepoolID=cluster.sp, hostID=2, scsiKey=cluster.sp)
    wait_for(lambda: gets(h2)[0] == {}, 60, "h2's sanlock to leave the lockspace")
    assert not cluster.acquired(h2)
    assert gets(cluster.h1)[0] == {cluster.sd: 1}  # the other host stays
    with h2.connect() as cli:
        cluster.connect_pool(cli, 2)
    wait_for(lambda: cluster.acquired(h2), 60, "h2 to join again")
    assert gets(h2)[0] == {cluster.sd: 2}


def test_one_spm_at_a_time_and_the_other_after_spm_stop(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts
    first = cluster.spm_start(h1)
    assert first["taskResult"] == "success", first
    mine = cluster.spm_status(h1)
    assert mine["spmStatus"] == "SPM"
    assert mine["spmId"] == 1
    lver, owners = sdm_owners(cluster)
    assert owners == [1]
    assert mine["spmLver"] == lver
    theirs = cluster.spm_status(h2)
    assert theirs == {"spmStatus": "Free", "spmId": 1, "spmLver": lver}
    again = cluster.spm_start(h1)  # already SPM: succeeds, the lease untouched
    assert again["taskResult"] == "success", again
    assert sdm_owners(cluster) == (lver, [1])
    with h2.connect() as cli:  # the Engine's getInfo says the same, from either host
        info = cli.StoragePool.getInfo(storagepoolID=cluster.sp)["info"]
    assert (info["spm_id"], info["lver"]) == (1, lver)

    refused = cluster.spm_start(h2)
    assert refused["taskResult"] != "success"
    assert refused["code"] == ACQUIRE_LOCK_FAILURE, refused
    assert cluster.spm_status(h2)["spmStatus"] == "Free"
    assert sdm_owners(cluster)[1] == [1]

    cluster.spm_stop(h1)
    assert cluster.spm_status(h1)["spmStatus"] == "Free"
    taken = cluster.spm_start(h2)
    assert taken["taskResult"] == "success", taken
    status = cluster.spm_status(h2)
    assert status["spmStatus"] == "SPM"
    assert status["spmId"] == 2
    assert status["spmLver"] > lver
    assert sdm_owners(cluster)[1] == [2]
    cluster.spm_stop(h2)


def test_kill_9_of_the_spms_agent_frees_the_lease_for_the_other_host(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts
    assert cluster.spm_start(h2)["taskResult"] == "success"
    assert cluster.spm_start(h1)["code"] == ACQUIRE_LOCK_FAILURE
    h2.kill_agent()
    # sanlock releases a dead process's leases: h1 takes the SDM lease now.
    taken = cluster.spm_start(h1)
    assert taken["taskResult"] == "success", taken
    assert cluster.spm_status(h1)["spmId"] == 1
    assert sdm_owners(cluster)[1] == [1]
    # h2's agent comes back connected to the pool, still in the lockspace, not SPM.
    h2.start_agent()
    wait_for(lambda: cluster.acquired(h2), 60, "h2 to hold its host id again")
    assert cluster.spm_status(h2) == {
        "spmStatus": "Free",
        "spmId": 1,
        "spmLver": cluster.spm_status(h1)["spmLver"],
    }
    cluster.spm_stop(h1)


def test_an_spm_whose_lease_sanlock_no_longer_holds_stops_being_spm(cluster: Cluster) -> None:
    """The pool inquires its registration: a lease released behind its back ends the role."""
    h1, h2 = cluster.hosts
    assert cluster.spm_start(h1)["taskResult"] == "success"
    ids = lockspace_spec(h1, cluster.sd).split(":")[2]
    sdm = f"{cluster.sd}:SDM:{ids.removesuffix('/ids')}/leases:{1024 * 1024}"
    h1.sanlock.client("release", "-r", sdm, "-p", str(h1.host.agent.pid))
    wait_for(lambda: cluster.spm_status(h1)["spmStatus"] == "Free", 30, "h1 to stop being SPM")
    assert h1.host.agent.alive()
    assert cluster.spm_status(h1)["spmId"] == -1
    taken = cluster.spm_start(h2)
    assert taken["taskResult"] == "success", taken
    assert cluster.spm_status(h1)["spmId"] == 2
    cluster.spm_stop(h2)


def test_a_host_that_loses_its_lease_stops_being_spm(cluster: Cluster) -> None:
    """sanlock kills the holder of a lease whose lockspace is removed: VDSM's way out."""
    h1, h2 = cluster.hosts
    assert cluster.spm_start(h1)["taskResult"] == "success"
    agent = h1.host.agent
    h1.sanlock.client("rem_lockspace", "-s", lockspace_spec(h1, cluster.sd))
    wait_for(lambda: not agent.alive(), 60, "sanlock to end h1's agent")
    taken = cluster.spm_start(h2)
    assert taken["taskResult"] == "success", taken
    assert sdm_owners(cluster)[1] == [2]
    h1.start_agent()  # back, joins again, and is not SPM
    wait_for(lambda: cluster.acquired(h1), 60, "h1 to join again")
    assert cluster.spm_status(h1)["spmStatus"] == "Free"
    assert cluster.spm_status(h1)["spmId"] == 2
    cluster.spm_stop(h2)
    assert os.environ.get("SANLOCK_RUN_DIR") is None


def test_a_dead_hosts_lease_is_taken_once_sanlock_finds_the_host_dead(cluster: Cluster) -> None:
    """Last (it leaves h1 dead): h1 dies whole, agent and sanlock daemon, by kill -9.

    Nothing releases its SDM lease then: h2's spmStart is refused until h1's host id
    lease has gone unrenewed long enough for sanlock to call host 1 dead, and then
    succeeds (sanlock's host_dead_seconds: 8 I/O timeouts plus the 60 s it allows a
    watchdog to fire).
    """
    h1, h2 = cluster.hosts
    assert cluster.spm_start(h1)["taskResult"] == "success"
    h1.sanlock.daemon.process.kill()  # first: a live daemon would release a dead agent's lease
    h1.sanlock.daemon.process.wait(timeout=30)
    h1.kill_agent()
    died = time.monotonic()
    refused = cluster.spm_start(h2)
    assert refused["code"] == ACQUIRE_LOCK_FAILURE, refused

    def taken() -> bool:
        return bool(cluster.spm_start(h2)["taskResult"] == "success")

    wait_for(taken, 200, "sanlock to find host 1 dead", step=2.0)
    waited = time.monotonic() - died
    assert waited > 30  # not before h1's host id lease could have expired (~68 s here)
    status = cluster.spm_status(h2)
    assert (status["spmStatus"], status["spmId"]) == ("SPM", 2)
    cluster.spm_stop(h2)
