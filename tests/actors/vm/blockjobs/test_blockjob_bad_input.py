"""Bad input to every block-job verb: VDSM's error code, and nothing changed.

Unknown ids, wrong JSON types, missing params, volumes or VMs in the wrong state.
After each refusal the VM reports no job and every volume's metadata and the
qemu chain are as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from mergehelp import ChainVm, vm_jobs

from harness.engine import new_id, qemu_chain
from harness.waiting import wait_for
from hostvisor.api.client import ServerError

pytestmark = [pytest.mark.slow, pytest.mark.kvm, pytest.mark.libvirt]

NO_VM, IMAGE_NOT_FOUND, MERGE_FAILED, INVALID = 1, 13, 52, 91
REPLICA_ERROR, NOT_REPLICATING = 55, 88
BAD_PARAMS = -32602
VOLUME_MISSING, IMAGE_MISSING, POOL_UNKNOWN, DOMAIN_MISSING = 201, 268, 309, 358
NOT_IN_CHAIN, WRONG_PARENT, GENERATION_MISMATCH, NOT_IN_POOL = 920, 921, 911, 353


def refused(call: Any, code: int, **params: Any) -> None:
    with pytest.raises(ServerError) as error:
        call(**params)
    assert error.value.code == code, (params, error.value)


def picture(cli: Any, vm: ChainVm) -> dict[str, Any]:
    """What a bad call must not change: jobs, every volume's metadata, qemu's chain."""
    volumes = {}
    for vol in vm.vols:
        info = cli.Volume.getInfo(**vm.dc.ids(vm.img, vol))
        volumes[vol] = {k: v for k, v in info.items() if k not in ("truesize", "apparentsize")}
    return {
        "jobs": vm_jobs(cli, vm.vm_id),
        "volumes": volumes,
        "chain": qemu_chain(vm.path(vm.vols[-1])),
    }


def test_vm_merge_bad_input(chain_vm: ChainVm, dc_host: Any) -> None:
    _host, cli, _dc = dc_host
    vm = chain_vm
    base, mid, leaf = vm.vols
    before = picture(cli, vm)
    good = {
        "vmID": vm.vm_id,
        "drive": vm.drive(),
        "baseVolUUID": base,
        "topVolUUID": mid,
        "bandwidth": "0",
        "jobUUID": new_id(),
    }
    merge = cli.VM.merge
    cases: list[tuple[dict[str, Any], int]] = [
        ({**good, "vmID": new_id()}, NO_VM),
        ({**good, "vmID": 7}, BAD_PARAMS),
        ({k: v for k, v in good.items() if k != "drive"}, BAD_PARAMS),
        ({k: v for k, v in good.items() if k != "topVolUUID"}, BAD_PARAMS),
        ({**good, "drive": "vda"}, BAD_PARAMS),
        ({**good, "baseVolUUID": ["x"]}, BAD_PARAMS),
        ({**good, "drive": {**vm.drive(), "imageID": ""}}, INVALID),
        ({**good, "drive": {k: v for k, v in vm.drive().items() if k != "volumeID"}}, INVALID),
        ({**good, "drive": vm.drive(leaf=base)}, IMAGE_NOT_FOUND),  # not the drive's volume
        ({**good, "drive": {**vm.drive(), "imageID": new_id()}}, IMAGE_NOT_FOUND),
        ({**good, "bandwidth": "fast"}, INVALID),
        ({**good, "bandwidth": -1}, INVALID),
        ({**good, "baseVolUUID": new_id()}, MERGE_FAILED),  # no such volume
        ({**good, "topVolUUID": base, "baseVolUUID": mid}, MERGE_FAILED),  # upside down
        ({**good, "topVolUUID": base}, MERGE_FAILED),  # top is base
    ]
    for params, code in cases:
        refused(merge, code, **params)
        assert picture(cli, vm) == before, params

    # a second merge on the drive while one runs: MergeFailed, the first one unharmed
    first = new_id()
    merge(**{**good, "jobUUID": first, "topVolUUID": leaf, "baseVolUUID": mid})
    if first in vm_jobs(cli, vm.vm_id):  # the window may close first on a fast machine
        with pytest.raises(ServerError) as error:
            merge(**{**good, "jobUUID": new_id()})
        assert error.value.code == MERGE_FAILED or first not in vm_jobs(cli, vm.vm_id)
    wait_for(lambda: first not in vm_jobs(cli, vm.vm_id), 60, "the first merge to end")
    assert qemu_chain(vm.path(mid)) == [base, mid]

    # a VM that is gone
    cli.VM.destroy(vmID=vm.vm_id)
    refused(merge, NO_VM, **good)


def test_disk_replicate_bad_input(chain_vm: ChainVm, dc_host: Any) -> None:
    _host, cli, dc = dc_host
    vm = chain_vm
    before = picture(cli, vm)
    disk = vm.drive()
    elsewhere = {**disk, "domainID": new_id()}  # no such domain: its volume cannot be prepared
    start, finish = cli.VM.diskReplicateStart, cli.VM.diskReplicateFinish
    for verb in (start, finish):
        refused(verb, NO_VM, vmID=new_id(), srcDisk=disk, dstDisk=elsewhere)
        refused(verb, BAD_PARAMS, vmID=vm.vm_id, srcDisk=disk)
        refused(verb, BAD_PARAMS, vmID=vm.vm_id, srcDisk="vda", dstDisk=elsewhere)
        refused(verb, INVALID, vmID=vm.vm_id, srcDisk={"imageID": vm.img}, dstDisk=elsewhere)
        refused(
            verb, IMAGE_NOT_FOUND, vmID=vm.vm_id, srcDisk=vm.drive(vm.vols[0]), dstDisk=elsewhere
        )
    refused(finish, NOT_REPLICATING, vmID=vm.vm_id, srcDisk=disk, dstDisk=elsewhere)
    refused(start, REPLICA_ERROR, vmID=vm.vm_id, srcDisk=disk, dstDisk=elsewhere)
    refused(finish, NOT_REPLICATING, vmID=vm.vm_id, srcDisk=disk, dstDisk=elsewhere)
    assert picture(cli, vm) == before
    assert "diskReplicate" not in cli.Host.dumpxmls(vmList=[vm.vm_id])[vm.vm_id]
    assert dc.sd in disk.values()


def test_storage_merge_verbs_bad_input(chain_vm: ChainVm, dc_host: Any) -> None:
    _host, cli, dc = dc_host
    vm = chain_vm
    base, mid, leaf = vm.vols
    before = picture(cli, vm)
    ids = {"storagepoolID": dc.sp, "storagedomainID": dc.sd, "imageID": vm.img}

    reconcile = cli.Image.reconcileVolumeChain
    refused(reconcile, POOL_UNKNOWN, **{**ids, "storagepoolID": new_id()}, leafVolID=leaf)
    refused(reconcile, NOT_IN_POOL, **{**ids, "storagedomainID": new_id()}, leafVolID=leaf)
    refused(reconcile, IMAGE_MISSING, **{**ids, "imageID": new_id()}, leafVolID=leaf)
    refused(reconcile, VOLUME_MISSING, **ids, leafVolID=new_id())
    refused(reconcile, INVALID, **ids, leafVolID="not-a-uuid")
    refused(reconcile, BAD_PARAMS, **ids)
    refused(reconcile, BAD_PARAMS, **ids, leafVolID=3)

    sub = {"sd_id": dc.sd, "img_id": vm.img, "base_id": base, "top_id": mid}
    for verb in (cli.StoragePool.prepareMerge, cli.StoragePool.finalizeMerge):
        refused(verb, POOL_UNKNOWN, storagepoolID=new_id(), subchainInfo=sub)
        refused(verb, BAD_PARAMS, storagepoolID=dc.sp)
        refused(verb, BAD_PARAMS, storagepoolID=dc.sp, subchainInfo=[sub])
        refused(verb, INVALID, storagepoolID=dc.sp, subchainInfo={**sub, "top_id": 5})
        refused(verb, INVALID, storagepoolID=dc.sp, subchainInfo={**sub, "base_generation": -1})
        refused(
            verb,
            INVALID,
            storagepoolID=dc.sp,
            subchainInfo={k: v for k, v in sub.items() if k != "img_id"},
        )
        refused(verb, NOT_IN_CHAIN, storagepoolID=dc.sp, subchainInfo={**sub, "top_id": new_id()})
        refused(
            verb, WRONG_PARENT, storagepoolID=dc.sp, subchainInfo={**sub, "top_id": leaf}
        )  # leaf's parent is mid, not base
        refused(
            verb,
            IMAGE_MISSING,
            storagepoolID=dc.sp,
            subchainInfo={**sub, "img_id": new_id()},
        )

    sdm = cli.SDM.merge
    refused(sdm, BAD_PARAMS, job_id=new_id())
    refused(sdm, BAD_PARAMS, job_id=new_id(), subchain_info="x")
    refused(sdm, INVALID, job_id=new_id(), subchain_info={**sub, "sd_id": "nope"})
    refused(sdm, DOMAIN_MISSING, job_id=new_id(), subchain_info={**sub, "sd_id": new_id()})
    # a stale generation: the job fails with VDSM's code, the base untouched
    job_id = new_id()
    generation = before["volumes"][base]["generation"]
    assert cli.SDM.merge(job_id=job_id, subchain_info={**sub, "base_generation": generation + 3})
    job = wait_for(
        lambda: (j := cli.Host.getJobs(job_ids=[job_id])[job_id])["status"] != "running" and j,
        30,
        "the job to fail",
    )
    assert job["status"] == "failed", job
    assert job["error"]["code"] == GENERATION_MISMATCH, job
    assert picture(cli, vm) == before
