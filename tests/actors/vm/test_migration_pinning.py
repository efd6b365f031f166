"""VM.migrate's `cpusets` and `numaNodesets`: the guest re-pinned for its destination.

The Engine (MigrateVmCommand, sent by MigrateBrokerVDSCommand) computes both for a VM
with an exclusive CPU pinning policy, for the destination host: one pCPU string per
vCPU, one host-nodeset string per vNUMA cell. VDSM checks their lengths (code 91) and
rewrites the destination's `<cputune>`/`<numatune>` (cpumanagement.replace_cpu_pinning,
SourceThread._migration_params). The unit tests run the rewrite on the XML the
Engine's LibvirtVmXmlBuilder writes; the slow ones migrate between two real hosts.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from harness.guests import Guests
from harness.twohosts import TestHost, engine_migration_params, status_of, two_hosts
from harness.waiting import wait_for
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm.migration import MigrationRequest
from hostvisor.actors.vm.migration_pinning import (
    check_against,
    memnodes,
    parse_cpulist,
    pinned,
    retarget,
)
from hostvisor.api.client import ServerError

VM = "2f0e6c1a-7b4d-4e55-9d38-6b1f0a9c3e21"
DST = "198.51.100.12:54321"

ENGINE_XML = f"""<?xml version='1.0' encoding='UTF-8'?>
<domain xmlns:ovirt-tune="http://ovirt.org/vm/tune/1.0"
 xmlns:ovirt-vm="http://ovirt.org/vm/1.0" type="kvm">
<name>dedicated</name>
<uuid>{VM}</uuid>
<memory>4194304</memory>
<currentMemory>4194304</currentMemory>
<iothreads>1</iothreads>
<maxMemory slots="16">16777216</maxMemory>
<vcpu current="4">16</vcpu>
<numatune><memnode mode="strict" cellid="0" nodeset="0"/>
<memnode mode="strict" cellid="1" nodeset="1"/></numatune>
<cpu match="exact"><model>Skylake-Server</model><topology cores="2" threads="1" sockets="8"/>
<numa><cell id="0" cpus="0-1" memory="2097152"/>
<cell id="1" cpus="2-3" memory="2097152"/></numa></cpu>
<cputune><vcpupin vcpu="0" cpuset="2"/><vcpupin vcpu="1" cpuset="3"/><vcpupin vcpu="2" cpuset="6"/>
<vcpupin vcpu="3" cpuset="7"/><shares>1020</shares><iothreadpin iothread="1" cpuset="0"/>
<emulatorpin cpuset="0"/></cputune>
<devices><memballoon model="virtio"/></devices>
<os><type arch="x86_64" machine="pc-q35-rhel8.6.0">hvm</type></os>
<metadata><ovirt-tune:qos/><ovirt-vm:vm>
<ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>
<ovirt-vm:cpuPolicy>dedicated</ovirt-vm:cpuPolicy>
<ovirt-vm:launchPaused>false</ovirt-vm:launchPaused>
</ovirt-vm:vm></metadata>
</domain>"""

# What MigrateVmCommand sends for it when the destination gave it pCPUs 9, 11, 13, 15
# and host NUMA nodes 1 and 0 (NumaPinningHelper.parseNumaSets: one string per cell).
CPUSETS = ["9", "11", "13", "15"]
NODESETS = ["1", "0"]


def request(**params: Any) -> MigrationRequest:
    return MigrationRequest.from_params(VM, {"vmId": VM, "dst": DST, **params})


def cputune(xml: str) -> ET.Element:
    element = ET.fromstring(xml).find("cputune")  # noqa: S314
    assert element is not None
    return element


# -- the rewrite -------------------------------------------------------------------------


@pytest.mark.unit
def test_the_destination_xml_pins_each_vcpu_and_cell_where_the_engine_says() -> None:
    xml = request(cpusets=CPUSETS, numaNodesets=NODESETS).destination_xml(ENGINE_XML)
    assert pinned(xml) == {0: "9", 1: "11", 2: "13", 3: "15"}
    assert memnodes(xml) == {0: "1", 1: "0"}
    tune = cputune(xml)
    # What else <cputune> says stays as it was.
    assert tune.findtext("shares") == "1020"
    assert tune.find("emulatorpin").get("cpuset") == "0"  # type: ignore[union-attr]
    assert tune.find("iothreadpin").get("cpuset") == "0"  # type: ignore[union-attr]
    # And <numatune>'s mode, and the metadata under its own prefix.
    root = ET.fromstring(xml)  # noqa: S314
    assert {n.get("mode") for n in root.iter("memnode")} == {"strict"}
    assert "<ovirt-vm:cpuPolicy>dedicated</ovirt-vm:cpuPolicy>" in xml


@pytest.mark.unit
def test_libvirts_dest_xml_param_carries_the_rewrite() -> None:
    typed = request(cpusets=CPUSETS, numaNodesets=NODESETS).libvirt_params(
        domain_xml=ENGINE_XML, graphics=None
    )
    dest = typed[libvirt.VIR_MIGRATE_PARAM_DEST_XML]
    assert pinned(dest) == {0: "9", 1: "11", 2: "13", 3: "15"}
    assert memnodes(dest) == {0: "1", 1: "0"}


@pytest.mark.unit
def test_without_cpusets_a_dedicated_vms_pins_are_dropped_as_vdsm_drops_them() -> None:
    """VDSM's replace_cpu_pinning removes every pin but a manual VM's, sent or not."""
    xml = request().destination_xml(ENGINE_XML)
    assert pinned(xml) == {}
    assert memnodes(xml) == {0: "0", 1: "1"}
    assert cputune(xml).findtext("shares") == "1020"


@pytest.mark.unit
def test_an_xml_with_nothing_to_change_is_handed_over_as_it_was() -> None:
    plain = ENGINE_XML.replace('<vcpupin vcpu="0" cpuset="2"/><vcpupin vcpu="1" cpuset="3"/>', "")
    plain = plain.replace('<vcpupin vcpu="2" cpuset="6"/>\n<vcpupin vcpu="3" cpuset="7"/>', "")
    assert request().destination_xml(plain) is plain
    assert request().destination_xml("<domain/>") == "<domain/>"


@pytest.mark.unit
def test_a_manual_vm_keeps_its_hand_made_pins_and_gets_the_rest() -> None:
    manual = ENGINE_XML.replace(
        "<ovirt-vm:cpuPolicy>dedicated</ovirt-vm:cpuPolicy>",
        "<ovirt-vm:cpuPolicy>manual</ovirt-vm:cpuPolicy>"
        "<ovirt-vm:manuallyPinedCPUs>0,1</ovirt-vm:manuallyPinedCPUs>",
    )
    # No cpusets: the hand-made pins of vCPUs 0 and 1 stay, the others go.
    assert pinned(request().destination_xml(manual)) == {0: "2", 1: "3"}
    # cpusets with nulls: a null entry leaves that vCPU's hand-made pin alone.
    xml = request(cpusets=[None, "5", None, "8"]).destination_xml(manual)
    assert pinned(xml) == {0: "2", 1: "5", 3: "8"}


@pytest.mark.unit
def test_pins_without_a_policy_are_manual_ones_as_vdsm_infers() -> None:
    legacy = ENGINE_XML.replace("<ovirt-vm:cpuPolicy>dedicated</ovirt-vm:cpuPolicy>", "")
    assert request().destination_xml(legacy) is legacy


@pytest.mark.unit
def test_a_vm_with_no_cputune_gets_one() -> None:
    bare = f"<domain><uuid>{VM}</uuid><vcpu>2</vcpu></domain>"
    xml = request(cpusets=["1", "0-1"]).destination_xml(bare)
    assert pinned(xml) == {0: "1", 1: "0-1"}


@pytest.mark.unit
def test_memnodes_of_cells_beyond_the_list_stay() -> None:
    xml = retarget(ENGINE_XML, None, ("3",))
    assert memnodes(xml) == {0: "3", 1: "1"}
    assert pinned(xml) == {}  # the dedicated VM's pins are dropped all the same


# -- checking the params ------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "cpus"),
    [("7", {7}), ("1,3-5", {1, 3, 4, 5}), ("0-3,^2", {0, 1, 3}), ("0-0", {0})],
)
def test_cpulists_read_as_the_kernel_writes_them(text: str, cpus: set[int]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "a", "1,", "3-1", " 1", "1-", "-1", "1;2", "1.5"])
def test_a_bad_cpulist_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"cpulist|range"):
        parse_cpulist(text)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"cpusets": "9,11"}, "cpusets"),
        ({"cpusets": [9, 11, 13, 15]}, "cpusets"),
        ({"cpusets": ["9", "x", "13", "15"]}, "cpusets"),
        ({"cpusets": {"0": "9"}}, "cpusets"),
        ({"numaNodesets": "1"}, "numaNodesets"),
        ({"numaNodesets": ["1", None]}, "numaNodesets"),
        ({"numaNodesets": ["1", "0-"]}, "numaNodesets"),
    ],
)
def test_params_of_the_wrong_shape_are_refused_with_code_91(
    params: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        request(**params)
    assert caught.value.code == 91
    assert caught.value.context["param"] == param


@pytest.mark.unit
@pytest.mark.parametrize(
    ("cpusets", "nodesets", "message"),
    [
        (["9", "11"], None, "length of cpusets (2) must match number of CPUs (4)"),
        ([], None, "length of cpusets (0) must match number of CPUs (4)"),
        (None, ["1"], "length of numaNodesets (1) must match number of vNUMA nodes (2)"),
    ],
)
def test_lists_not_one_entry_per_vcpu_or_cell_are_refused(
    cpusets: list[str] | None, nodesets: list[str] | None, message: str
) -> None:
    req = request(cpusets=cpusets, numaNodesets=nodesets)
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        req.check_pinning(ENGINE_XML)


@pytest.mark.unit
def test_the_engines_lists_fit_the_vm() -> None:
    request(cpusets=CPUSETS, numaNodesets=NODESETS).check_pinning(ENGINE_XML)
    check_against(ENGINE_XML, None, None)
    no_numa = f"<domain><uuid>{VM}</uuid><vcpu>2</vcpu></domain>"
    check_against(no_numa, ("0", "1"), None)
    with pytest.raises(InvalidArgument, match="vNUMA nodes \\(0\\)"):
        check_against(no_numa, None, ("0",))


# -- a real migration between two hosts ----------------------------------------------------


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestHost, TestHost]]:
    with two_hosts(tmp_path_factory.mktemp("hosts"), migration_monitor_interval="0.2") as pair:
        yield pair


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, accelerator: Any) -> Guests:
    return Guests(tmp_path_factory.mktemp("shared-disks"), accelerator.domain_type)


def pinned_guest_xml(guests: Guests, name: str) -> tuple[str, str]:
    """A halting guest with 2 vCPUs in 2 vNUMA cells, pinned as a dedicated VM is."""
    vm_id, xml = guests.xml(name)
    pinning = (
        "<vcpu>2</vcpu>"
        "<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/></cputune>"
        "<numatune><memnode mode='strict' cellid='0' nodeset='0'/>"
        "<memnode mode='strict' cellid='1' nodeset='0'/></numatune>"
        "<cpu><topology sockets='2' cores='1' threads='1'/><numa>"
        "<cell id='0' cpus='0' memory='32' unit='MiB'/>"
        "<cell id='1' cpus='1' memory='32' unit='MiB'/></numa></cpu>"
    )
    xml = xml.replace("<vcpu>1</vcpu>", pinning)
    policy = "<ovirt-vm:cpuPolicy>dedicated</ovirt-vm:cpuPolicy>"
    xml = xml.replace("</ovirt-vm:clusterVersion>", f"</ovirt-vm:clusterVersion>{policy}")
    return vm_id, xml


def live_xml(host: TestHost, vm_id: str) -> str:
    conn = libvirt.open(host.libvirt_uri)
    try:
        return str(conn.lookupByUUIDString(vm_id).XMLDesc(0))
    finally:
        conn.close()


def affinity(host: TestHost, vm_id: str) -> list[tuple[bool, ...]]:
    """Each vCPU's CPU affinity as the destination's libvirt applied it."""
    conn = libvirt.open(host.libvirt_uri)
    try:
        return list(conn.lookupByUUIDString(vm_id).vcpuPinInfo(0))
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.libvirt
def test_a_migrated_guest_runs_pinned_as_the_engine_asked(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id, xml = pinned_guest_xml(guests, "pinned")
    with source.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
    wait_for(lambda: status_of(source, vm_id) == "Up", 60, "the pinned guest Up")
    assert pinned(live_xml(source, vm_id)) == {0: "0", 1: "1"}

    started = time.monotonic()
    params = engine_migration_params(
        destination, vm_id, cpusets=["1", "0"], numaNodesets=["0", "0"]
    )
    with source.connect() as cli:
        assert cli.VM.migrate(vmID=vm_id, params=params) is True
    wait_for(lambda: status_of(destination, vm_id) == "Up", 60, "the guest Up on the destination")
    took = time.monotonic() - started

    arrived = live_xml(destination, vm_id)
    assert pinned(arrived) == {0: "1", 1: "0"}
    assert memnodes(arrived) == {0: "0", 1: "0"}
    # libvirt applied it: vCPU 0 runs on pCPU 1 only, vCPU 1 on pCPU 0 only.
    assert [[i for i, on in enumerate(cpus) if on] for cpus in affinity(destination, vm_id)] == [
        [1],
        [0],
    ]
    # The destination agent's own copy says so too (it made the VM from _srcDomXML).
    with destination.connect() as cli:
        agent_xml = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
        assert pinned(agent_xml) == {0: "1", 1: "0"}
        assert cli.VM.destroy(vmID=vm_id) is True
    assert took < 60


@pytest.mark.slow
@pytest.mark.libvirt
def test_cpusets_that_do_not_fit_the_vm_are_refused_and_it_stays_up(
    hosts: tuple[TestHost, TestHost], guests: Guests
) -> None:
    source, destination = hosts
    vm_id, xml = pinned_guest_xml(guests, "misfit")
    with source.connect() as cli:
        cli.VM.create(vmID=vm_id, vmParams={"xml": xml, "vmId": vm_id})
        wait_for(lambda: status_of(source, vm_id) == "Up", 60, "the guest Up")
        for bad in ({"cpusets": ["1"]}, {"numaNodesets": ["0"]}, {"cpusets": ["1", "x"]}):
            params = engine_migration_params(destination, vm_id, **bad)
            with pytest.raises(ServerError) as caught:
                cli.VM.migrate(vmID=vm_id, params=params)
            assert caught.value.code == 91
        assert status_of(source, vm_id) == "Up"
        assert status_of(destination, vm_id) is None
        assert cli.VM.destroy(vmID=vm_id) is True
