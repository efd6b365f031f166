"""VM.hotplugLease / VM.hotunplugLease on two hosts with real sanlock daemons (issue 16.3).

The cluster is the sanlock tests' (actors/storage/sanlock/conftest.py): two test hosts,
each with its libvirtd (sanlock lock manager, VDSM's settings) and sanlock daemon, on
one shared POSIXFS domain. The SPM (h1) makes the VM's lease on `xleases`
(Lease.create); a VM started on h1 *without* a lease then gets it hotplugged as the
Engine sends it (HotPlugLeaseVDSCommand: `{type: lease, lease_id: <vm id>, sd_id}`):
libvirt acquires it for the running QEMU, sanlock reports host 1 as its owner, and
the same VM started on h2 with that lease is refused; a kill -9 of h1's agent leaves it
held (it is QEMU's), and the restarted agent finds it in the domain. After
hotunplugLease the lease is free (no owner), h2 may run the VM, and h1 can no longer
plug it (86).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from actors.storage.sanlock.conftest import Cluster, SanlockHost, sanlock_cluster

from harness.engine import wait_task
from harness.guests import Guests
from harness.twohosts import status_of
from harness.waiting import wait_for
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.slow, pytest.mark.libvirt, pytest.mark.timeout(400)]

PLUG_LEASE, UNPLUG_LEASE = 86, 87


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two hosts with sanlock on one shared domain; h1 is the SPM."""
    with sanlock_cluster(tmp_path_factory.mktemp("sanlock-hotplug")) as made:
        made.wait_joined()
        for host in made.hosts:
            wait_for(lambda h=host: renewing(made, h), 90, f"h{host.host_id} renewing its id")
        status = made.spm_start(made.h1)
        assert status["taskResult"] == "success", status
        yield made
        made.spm_stop(made.h1)


def renewing(cluster: Cluster, host: SanlockHost) -> bool:
    """`host`'s sanlock holds its host id and renews it every 2 io_timeouts (1 s here).

    libvirt's acquire of a VM lease fails with -ENOSPC on a host whose id is not held
    yet. (This wait also caught a real bug: the lockspace was written with a 10 s I/O
    timeout and joined with 1 s, so sanlock dropped each host's id after its first
    renewal check; `[sanlock] io_timeout` is now used for both, as in VDSM.)
    """
    try:
        status = host.sanlock.client("status")
        history = host.sanlock.client("renewal", "-s", cluster.sd)
    except subprocess.CalledProcessError:  # no such lockspace (yet)
        return False
    held = [line for line in status.splitlines() if line.startswith(f"s {cluster.sd}:")]
    if len(held) != 1 or held[0].endswith((" ADD", " REM")):
        return False
    stamps = [int(part.split("=")[1]) for part in history.split() if part.startswith("timestamp=")]
    return len(stamps) >= 2 and stamps[-1] - stamps[-2] <= 4


def lease_of(cluster: Cluster, vm_id: str) -> dict[str, str]:
    """The lease as JsonRpcVdsServer.createLeaseDict sends it: the VM's id is the lease's."""
    return {"type": "lease", "lease_id": vm_id, "sd_id": cluster.sd}


def owners(cluster: Cluster, host: SanlockHost, vm_id: str) -> list[int]:
    """The lease's owners as sanlock reports them (Lease.status on `host`)."""
    with host.connect() as cli:
        status = cli.Lease.status(lease={"sd_id": cluster.sd, "lease_id": vm_id})
    found: list[int] = status["owners"]
    return found


def with_lease(xml: str, cluster: Cluster, lease_id: str) -> str:
    """`xml` with the VM lease as the Engine's domain XML carries it (placeholders)."""
    where = f"{lease_id}:{cluster.sd}"
    lease = (
        f"<lease><lockspace>{cluster.sd}</lockspace><key>{lease_id}</key>"
        f'<target offset="LEASE-OFFSET:{where}" path="LEASE-PATH:{where}"/></lease>'
    )
    return xml.replace("</devices>", f"{lease}</devices>", 1)


def start(host: SanlockHost, vm_id: str, xml: str, status: str = "Up") -> dict[str, Any]:
    """VM.create on `host`; wait until its agent reports `status` (or Down); its stats."""
    with host.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
    settled = wait_for(
        lambda: status_of(host.host, vm_id) in (status, "Down"),
        60,
        f"the VM {status} on h{host.host_id}",
    )
    assert settled
    with host.connect() as cli:
        stats: dict[str, Any] = {vm["vmId"]: vm for vm in cli.Host.getAllVmStats()}[vm_id]
    assert stats["status"] == status, (stats.get("exitMessage"), stats.get("exitReason"))
    return stats


def hash_of(host: SanlockHost, vm_id: str) -> str:
    """The VM's devices hash (the Engine re-reads the devices when it changes)."""
    with host.connect() as cli:
        found: str = cli.VM.getStats(vmID=vm_id)[0]["hash"]
    return found


def kill_and_restart(cluster: Cluster, host: SanlockHost, vm_id: str) -> None:
    """kill -9 `host`'s agent: the lease is QEMU's and stays held; restart the agent.

    The agent's SDM lease died with it: `host` (the SPM) takes the SPM role again.
    """
    host.kill_agent()
    assert owners(cluster, cluster.h2, vm_id) == [host.host_id]
    host.start_agent()
    wait_for(lambda: status_of(host.host, vm_id) == "Up", 60, "the agent to find the VM again")
    assert lease_devices(host, vm_id) == 1
    assert cluster.spm_start(host)["taskResult"] == "success"


def lease_devices(host: SanlockHost, vm_id: str) -> int:
    with host.connect() as cli:
        xml: str = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    return xml.count("<lease>")


def test_a_hotplugged_lease_is_held_for_the_vm_and_freed_on_unplug(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, accelerator: Any
) -> None:
    h1, h2 = cluster.hosts
    guests = Guests(tmp_path_factory.mktemp("hotplug-leased"), accelerator.domain_type)
    vm_id, plain = guests.xml("hotleased")
    other_id, other = guests.xml("hotleased")
    on_h2 = with_lease(other.replace(other_id, vm_id), cluster, vm_id)  # a disk of its own
    with h1.connect() as cli:
        task = cli.Lease.create(lease={"sd_id": cluster.sd, "lease_id": vm_id})
        assert wait_task(cli, task)["taskResult"] == "success"
        info = cli.Lease.info(lease={"sd_id": cluster.sd, "lease_id": vm_id})
    start(h1, vm_id, plain)
    assert owners(cluster, h1, vm_id) == []
    before = hash_of(h1, vm_id)
    with h1.connect() as cli:
        assert cli.VM.hotplugLease(vmID=vm_id, lease=lease_of(cluster, vm_id)) == {}
        live = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
    assert hash_of(h1, vm_id) != before
    assert f"<key>{vm_id}</key>" in live
    assert f"path='{info['path']}'" in live  # h1's own path and offset (Lease.info)
    assert f"offset='{info['offset']}'" in live
    for host in cluster.hosts:  # held for h1's QEMU, as sanlock reports it
        assert owners(cluster, host, vm_id) == [1]

    down = start(h2, vm_id, on_h2, status="Down")  # the same VM, with its lease: refused
    with h2.connect() as cli:
        cli.VM.destroy(vmID=vm_id)
    assert "lease is held by another host" in down.get("exitMessage", "").lower(), down
    assert status_of(h1.host, vm_id) == "Up"
    assert owners(cluster, h1, vm_id) == [1]

    kill_and_restart(cluster, h1, vm_id)  # the agent found the plugged lease again
    plugged = hash_of(h1, vm_id)
    with h1.connect() as cli:
        assert cli.VM.hotunplugLease(vmID=vm_id, lease=lease_of(cluster, vm_id)) == {}
    assert hash_of(h1, vm_id) != plugged
    assert lease_devices(h1, vm_id) == 0
    wait_for(lambda: owners(cluster, h2, vm_id) == [], 30, "sanlock to report the lease free")
    assert status_of(h1.host, vm_id) == "Up"  # the VM runs on, without its lease

    try:
        start(h2, vm_id, on_h2)  # free: h2 may run the VM now, and holds the lease
        assert owners(cluster, h1, vm_id) == [2]
        # Held by h2: h1 cannot plug it again, and nothing changed on h1.
        with h1.connect() as cli, pytest.raises(ServerError) as refused:
            cli.VM.hotplugLease(vmID=vm_id, lease=lease_of(cluster, vm_id))
        assert refused.value.code == PLUG_LEASE
        assert lease_devices(h1, vm_id) == 0
        assert owners(cluster, h1, vm_id) == [2]
    finally:
        for host in cluster.hosts:
            with host.connect() as cli:
                cli.VM.destroy(vmID=vm_id)
    wait_for(lambda: owners(cluster, h1, vm_id) == [], 30, "the lease free at the end")


def test_an_unplug_of_a_lease_the_vm_does_not_hold_answers_87(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, accelerator: Any
) -> None:
    """VDSM's "No such lease": the lease exists and is free, the VM simply has none."""
    h1 = cluster.h1
    vm_id, xml = Guests(tmp_path_factory.mktemp("hotplug-unleased"), accelerator.domain_type).xml(
        "unleased"
    )
    with h1.connect() as cli:
        task = cli.Lease.create(lease={"sd_id": cluster.sd, "lease_id": vm_id})
        assert wait_task(cli, task)["taskResult"] == "success"
    start(h1, vm_id, xml)
    try:
        with h1.connect() as cli, pytest.raises(ServerError) as refused:
            cli.VM.hotunplugLease(vmID=vm_id, lease=lease_of(cluster, vm_id))
        assert refused.value.code == UNPLUG_LEASE
        assert owners(cluster, h1, vm_id) == []
        with h1.connect() as cli, pytest.raises(ServerError) as unknown:
            cli.VM.hotplugLease(vmID=vm_id, lease=lease_of(cluster, str(uuid.uuid4())))
        assert unknown.value.code == 100  # no such lease on the domain: VDSM's CannotPrepare
        assert lease_devices(h1, vm_id) == 0
    finally:
        with h1.connect() as cli:
            cli.VM.destroy(vmID=vm_id)
