"""External leases on xleases across two hosts: Lease.* verbs, and a VM's lease.

A VM lease is a sanlock resource on the domain's `xleases`, made by the SPM
(`Lease.create`, a task), found by any host (`Lease.info`), and held by whichever
host runs the VM: libvirt's sanlock lock manager acquires it for the QEMU
process, so the same VM started on the second host is refused while it runs on
the first, and sanlock reports the first host as the owner (`Lease.status`).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.engine import wait_task
from harness.guests import Guests
from harness.twohosts import status_of
from harness.waiting import wait_for
from hostvisor.api.client import ServerError

from .conftest import Cluster, SanlockHost

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.timeout(300)]

NO_SUCH_LEASE = 936
NOT_SPM = 654
INVALID = 91
WRONG_JSON = -32602
"""JSON-RPC's invalid params: a param missing or of the wrong JSON type (the verb table's)."""
NOT_IN_POOL = 353
JOB_STATUS_MISMATCH = 912
GENERATION_MISMATCH = 911
ACQUIRE_LOCK_FAILURE = 651


@pytest.fixture(scope="module")
def spm(cluster: Cluster) -> Iterator[SanlockHost]:
    """h1 is the SPM for this module's tests."""
    cluster.wait_joined()
    status = cluster.spm_start(cluster.h1)
    assert status["taskResult"] == "success", status
    yield cluster.h1
    cluster.spm_stop(cluster.h1)


def lease_of(cluster: Cluster, lease_id: str) -> dict[str, str]:
    return {"sd_id": cluster.sd, "lease_id": lease_id}


def create_lease(cluster: Cluster, lease_id: str, metadata: dict[str, Any] | None = None) -> None:
    params: dict[str, Any] = {"lease": lease_of(cluster, lease_id)}
    if metadata is not None:
        params["metadata"] = metadata
    with cluster.h1.connect() as cli:
        task = cli.Lease.create(**params)
        status = wait_task(cli, task)
    assert status["taskResult"] == "success", status


def code_of(host: SanlockHost, verb: str, **params: Any) -> int:
    namespace, name = verb.split(".")
    with host.connect() as cli, pytest.raises(ServerError) as raised:
        getattr(getattr(cli, namespace), name)(**params)
    return raised.value.code


def test_a_lease_made_by_the_spm_is_found_by_both_hosts(cluster: Cluster, spm: Any) -> None:
    lease_id = str(uuid.uuid4())
    create_lease(cluster, lease_id)
    infos = []
    for host in cluster.hosts:
        with host.connect() as cli:
            infos.append(cli.Lease.info(lease=lease_of(cluster, lease_id)))
            status = cli.Lease.status(lease=lease_of(cluster, lease_id))
        assert status == {"owners": [], "version": None, "metadata": {}}
    assert infos[0]["offset"] == infos[1]["offset"] >= 3 * 1024 * 1024
    assert {info["sd_id"] for info in infos} == {cluster.sd}
    assert infos[0]["path"].endswith(f"/{cluster.sd}/dom_md/xleases")
    with cluster.h1.connect() as cli:
        wait_task(cli, cli.Lease.delete(lease=lease_of(cluster, lease_id)))
    assert code_of(cluster.h2, "Lease.info", lease=lease_of(cluster, lease_id)) == NO_SUCH_LEASE


def with_lease(xml: str, cluster: Cluster, lease_id: str) -> str:
    """`xml` with a VM lease as the Engine sends it: placeholders the host fills in."""
    where = f"{lease_id}:{cluster.sd}"
    lease = (
        f"<lease><lockspace>{cluster.sd}</lockspace><key>{lease_id}</key>"
        f'<target offset="LEASE-OFFSET:{where}" path="LEASE-PATH:{where}"/></lease>'
    )
    return xml.replace("</devices>", f"{lease}</devices>", 1)


def test_a_vm_with_a_lease_runs_on_one_host_at_a_time(
    cluster: Cluster, spm: Any, tmp_path_factory: pytest.TempPathFactory, accelerator: Any
) -> None:
    """libvirt's sanlock lock manager refuses the second start, before QEMU runs.

    The Engine's XML holds placeholders; each host fills in the lease's path and
    offset from its own Lease.info (its own mount), as VDSM does; and each start uses
    a disk of its own, so what refuses the second start is the VM lease, not QEMU's
    lock on a shared image.
    """
    lease_id = str(uuid.uuid4())
    create_lease(cluster, lease_id)
    guests = Guests(tmp_path_factory.mktemp("leased-disks"), accelerator.domain_type)
    vm_id, plain = guests.xml("leased")
    other_id, other = guests.xml("leased")
    xmls = {
        host.host_id: with_lease(text, cluster, lease_id)
        for host, text in zip(cluster.hosts, (plain, other.replace(other_id, vm_id)), strict=True)
    }
    h1, h2 = cluster.hosts
    with h1.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xmls[1], "vmId": vm_id})
        info = cli.Lease.info(lease=lease_of(cluster, lease_id))
    wait_for(lambda: status_of(h1.host, vm_id) == "Up", 60, "the VM Up on h1")
    with h1.connect() as cli:
        live = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    assert "LEASE-" not in live
    assert info["path"] in live  # h1's own path and offset, filled in
    assert str(info["offset"]) in live
    for host in cluster.hosts:  # both see h1's QEMU hold it, as sanlock reports it
        with host.connect() as cli:
            held = cli.Lease.status(lease=lease_of(cluster, lease_id))
        assert held["owners"] == [1]
        assert held["version"] >= 1
        assert "metadata" not in held

    with h2.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xmls[2], "vmId": vm_id})
    wait_for(lambda: status_of(h2.host, vm_id) == "Down", 60, "h2 to refuse the VM")
    with h2.connect() as cli:
        down = {vm["vmId"]: vm for vm in cli.Host.getAllVmStats()}[vm_id]
        cli.VM.destroy(vmID=vm_id)
    assert "failed to acquire lock" in down.get("exitMessage", "").lower(), down
    assert status_of(h1.host, vm_id) == "Up"
    assert cluster_status(cluster, lease_id)["owners"] == [1]

    # The lease is QEMU's, not the agent's: kill -9 of h1's agent leaves it held.
    h1.kill_agent()
    with h2.connect() as cli:
        assert cli.Lease.status(lease=lease_of(cluster, lease_id))["owners"] == [1]
    h1.start_agent()
    wait_for(lambda: status_of(h1.host, vm_id) == "Up", 60, "h1's agent to find the VM again")
    assert cluster.spm_start(h1)["taskResult"] == "success"  # its SDM lease died with it

    with h1.connect() as cli:  # once it stops on h1, h2 may run it
        cli.VM.destroy(vmID=vm_id)
    wait_for(lambda: cluster_status(cluster, lease_id)["owners"] == [], 30, "the lease to be free")
    with h2.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xmls[2], "vmId": vm_id})
    wait_for(lambda: status_of(h2.host, vm_id) == "Up", 60, "the VM Up on h2")
    assert cluster_status(cluster, lease_id)["owners"] == [2]
    with h2.connect() as cli:
        cli.VM.destroy(vmID=vm_id)


def cluster_status(cluster: Cluster, lease_id: str) -> dict[str, Any]:
    with cluster.h1.connect() as cli:
        status: dict[str, Any] = cli.Lease.status(lease=lease_of(cluster, lease_id))
    return status


def test_a_job_lease_is_fenced_once(cluster: Cluster, spm: Any) -> None:
    lease_id, job_id = str(uuid.uuid4()), str(uuid.uuid4())
    job = {"type": "JOB", "generation": 0, "job_id": job_id, "job_status": "PENDING"}
    create_lease(cluster, lease_id, job)
    status = cluster_status(cluster, lease_id)
    assert status["owners"] == []
    assert {k: status["metadata"][k] for k in job} == job
    with cluster.h2.connect() as cli:  # any host in the pool may fence
        assert cli.Lease.fence(lease=lease_of(cluster, lease_id), metadata=job) is True
    fenced = cluster_status(cluster, lease_id)["metadata"]
    assert fenced["job_status"] == "FENCED"
    assert fenced["generation"] == 1
    lease = lease_of(cluster, lease_id)
    assert code_of(cluster.h2, "Lease.fence", lease=lease, metadata=job) == JOB_STATUS_MISMATCH
    stale = {**job, "job_status": "FENCED"}
    assert code_of(cluster.h1, "Lease.fence", lease=lease, metadata=stale) == GENERATION_MISMATCH
    assert cluster_status(cluster, lease_id)["metadata"]["generation"] == 1


def test_bad_input_to_each_lease_verb(cluster: Cluster, spm: Any) -> None:
    h1, h2 = cluster.hosts
    missing = str(uuid.uuid4())
    lease = lease_of(cluster, missing)
    job = {"type": "JOB", "generation": 0, "job_id": missing, "job_status": "PENDING"}
    for verb in ("Lease.create", "Lease.delete", "Lease.info", "Lease.status"):
        assert code_of(h1, verb, lease={"sd_id": cluster.sd}) == INVALID, verb
        assert code_of(h1, verb, lease={"sd_id": 7, "lease_id": missing}) == INVALID, verb
        assert code_of(h1, verb, lease="a lease") == WRONG_JSON, verb
        assert code_of(h1, verb) == WRONG_JSON, verb
        other = {"sd_id": str(uuid.uuid4()), "lease_id": missing}
        assert code_of(h1, verb, lease=other) == NOT_IN_POOL, verb
    for verb in ("Lease.delete", "Lease.info", "Lease.status"):
        assert code_of(h1, verb, lease=lease) == NO_SUCH_LEASE, verb
    assert code_of(h2, "Lease.create", lease=lease) == NOT_SPM
    assert code_of(h1, "Lease.create", lease=lease, metadata={"type": "VM"}) == INVALID
    assert code_of(h1, "Lease.fence", lease=lease, metadata={**job, "generation": "0"}) == INVALID
    assert code_of(h1, "Lease.fence", lease=lease) == WRONG_JSON
    assert code_of(h1, "Lease.fence", lease=lease, metadata=job) == NO_SUCH_LEASE
    # a lease that exists cannot be made twice, and nothing changed
    lease_id = str(uuid.uuid4())
    create_lease(cluster, lease_id)
    with h1.connect() as cli:
        before = cli.Lease.info(lease=lease_of(cluster, lease_id))
    with h1.connect() as cli, pytest.raises(ServerError):
        wait_task(cli, cli.Lease.create(lease=lease_of(cluster, lease_id)))
    with h1.connect() as cli:
        assert cli.Lease.info(lease=lease_of(cluster, lease_id)) == before


def test_a_volume_lease_is_a_sanlock_resource_on_a_shared_domain(
    cluster: Cluster, spm: Any
) -> None:
    """The `.lease` of a new volume is a free sanlock resource named by the volume."""
    img, vol = str(uuid.uuid4()), str(uuid.uuid4())
    with cluster.h1.connect() as cli:
        task = cli.Volume.create(
            storagepoolID=cluster.sp,
            storagedomainID=cluster.sd,
            imageID=img,
            volumeID=vol,
            size=str(1024 * 1024),
            volFormat=4,  # COW
            preallocate=2,  # SPARSE
            diskType="DATA",
            desc="leased",
            srcImgUUID="00000000-0000-0000-0000-000000000000",
            srcVolUUID="00000000-0000-0000-0000-000000000000",
        )
        assert wait_task(cli, task)["taskResult"] == "success"
    lease = cluster.shared / cluster.sd / "images" / img / f"{vol}.lease"
    leader = subprocess.run(
        ["sanlock", "direct", "read_leader", "-r", f"{cluster.sd}:{vol}:{lease}:0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"resource_name {vol}" in leader, leader
    assert f"space_name {cluster.sd}" in leader, leader
    for host in cluster.hosts:  # as sanlock reports it: free
        with host.connect() as cli:
            info = cli.Volume.getInfo(
                storagepoolID=cluster.sp, storagedomainID=cluster.sd, imageID=img, volumeID=vol
            )
        assert info["lease"]["path"].endswith(f"/images/{img}/{vol}.lease")
        assert info["lease"]["offset"] == 0
        assert info["lease"]["owners"] == []
