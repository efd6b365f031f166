"""The hotplug XML on its own: the Engine's documents in, libvirt's device XML out."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import hotplug_xml as hx
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.actors.vm.hotplug_lease import LeaseDevice, find_lease

pytestmark = pytest.mark.unit

OVIRT_VM = "http://ovirt.org/vm/1.0"
SP, SD, IMG, VOL = (f"{n}0000000-0000-4000-8000-00000000000{n}" for n in range(1, 5))
LIVE = f"""<domain type='qemu' xmlns:ovirt-vm='{OVIRT_VM}'>
  <name>live</name><uuid>5a3c0e8e-0000-4000-8000-000000000001</uuid>
  <metadata><ovirt-vm:vm><ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>
    <ovirt-vm:device devtype="disk" name="vda"><ovirt-vm:imageID>boot</ovirt-vm:imageID>
    </ovirt-vm:device>
    <ovirt-vm:device devtype="disk" name="vdb"><ovirt-vm:poolID>{SP}</ovirt-vm:poolID>
      <ovirt-vm:domainID>{SD}</ovirt-vm:domainID><ovirt-vm:imageID>{IMG}</ovirt-vm:imageID>
      <ovirt-vm:volumeID>{VOL}</ovirt-vm:volumeID></ovirt-vm:device>
    <ovirt-vm:device alias="ua-nic" mac_address="52:54:00:00:00:01"><ovirt-vm:custom/>
    </ovirt-vm:device>
  </ovirt-vm:vm></metadata>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/a/boot'/><target dev='vda' bus='virtio'/><alias name='ua-boot'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/a/data'/><target dev='vdb' bus='virtio'/><alias name='ua-data'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='/iso/old.iso'/><backingStore/><target dev='hdc' bus='ide'/><readonly/>
      <alias name='ua-cd'/></disk>
    <interface type='ethernet'><mac address='52:54:00:00:00:01'/><model type='virtio'/>
      <alias name='ua-nic'/></interface>
  </devices>
</domain>"""


def _xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 - the test's own XML


def _hotplug_disk(target: str = "vda") -> str:
    return f"""<?xml version='1.0' encoding='utf-8'?>
<hotplug><devices><disk snapshot="no" type="file" device="disk">
<target dev="{target}" bus="virtio"/><source file="/rhev/guess"/>
<driver name="qemu" io="threads" type="qcow2" error_policy="stop" cache="none"/>
<alias name="ua-{IMG}"/><serial>{IMG}</serial></disk></devices>
<metadata xmlns:ovirt-vm="{OVIRT_VM}"><ovirt-vm:vm>
<ovirt-vm:device devtype="disk" name="{target}"><ovirt-vm:poolID>{SP}</ovirt-vm:poolID>
<ovirt-vm:volumeID>{VOL}</ovirt-vm:volumeID><ovirt-vm:imageID>{IMG}</ovirt-vm:imageID>
<ovirt-vm:domainID>{SD}</ovirt-vm:domainID></ovirt-vm:device></ovirt-vm:vm></metadata>
</hotplug>"""


def test_a_hotplug_disk_names_its_volume_and_takes_its_prepared_path():
    doc = hx.read_device(_hotplug_disk(), "disk")
    assert hx.disk_volume(doc) == DiskVolume(
        name="vda", pool_id=SP, domain_id=SD, image_id=IMG, volume_id=VOL
    )
    prepared = hx.with_prepared(_hotplug_disk(), PreparedDisk(path="/sd/img/vol", format="raw"))
    disk = _xml(prepared).find("devices/disk")
    assert disk is not None
    assert disk.find("source").attrib == {"file": "/sd/img/vol"}  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert disk.find("driver").get("cache") == "none"  # type: ignore[union-attr]


def test_a_taken_target_name_gives_way_to_the_next_free_one_and_the_metadata_follows():
    doc = hx.read_device(_hotplug_disk("vda"), "disk")
    device, name, meta = hx.plan_disk(doc, hx.targets(LIVE))
    assert name == "vdc"  # vda and vdb are taken
    assert '<target dev="vdc" bus="virtio" />' in device
    assert [m.get("name") for m in meta] == ["vdc"]
    _device, free, _meta = hx.plan_disk(doc, set())
    assert free == "vda"


def test_disk_names_follow_vdsms_drivename():
    assert hx.disk_name("ide", 2) == "hdc"
    assert hx.disk_name("sata", 0) == "sda"
    assert hx.disk_name("virtio", 25) == "vdz"
    assert hx.disk_name("virtio", 26) == "vdaa"
    with pytest.raises(InvalidArgument):
        hx.disk_name("floppy-bus", 0)


def test_unplug_documents_name_the_live_device_by_alias_or_mac():
    assert hx.alias_of(hx.live_device(LIVE, "disk", alias="ua-data")) == "ua-data"  # type: ignore[arg-type]
    assert hx.live_device(LIVE, "disk", alias="ua-none") is None
    nic = hx.live_device(LIVE, "interface", alias=None, mac="52:54:00:00:00:01")
    assert nic is not None
    assert hx.alias_of(nic) == "ua-nic"
    assert hx.disk_metadata(LIVE, "vdb") == DiskVolume(
        name="vdb", pool_id=SP, domain_id=SD, image_id=IMG, volume_id=VOL
    )
    assert hx.disk_metadata(LIVE, "vda") is None  # not on a storage domain
    assert hx.disk_of_image(LIVE, SD, IMG) == ("vdb", "raw")
    assert hx.disk_of_image(LIVE, SD, "other") is None


def test_metadata_comes_out_with_local_names_and_loses_what_was_unplugged():
    without = hx.metadata_without(LIVE, hx.disk_meta_named("vdb"))
    assert without is not None
    assert without.startswith("<vm>")
    assert IMG not in without
    assert "boot" in without
    assert hx.metadata_without(LIVE, hx.disk_meta_named("vdz")) is None
    nic_gone = hx.metadata_without(LIVE, hx.nic_meta_of(None, "52:54:00:00:00:01"))
    assert nic_gone is not None
    assert "ua-nic" not in nic_gone
    doc = hx.read_device(_hotplug_disk("vdb"), "disk")
    replaced = hx.metadata_with(LIVE, doc.meta, hx.disk_meta_named("vdb"))
    assert replaced.count('name="vdb"') == 1


def test_a_cd_is_loaded_or_ejected_from_its_live_element():
    cd = hx.cdrom(LIVE, "hdc")
    assert cd is not None
    first = hx.cdrom(LIVE, None)
    assert first is not None
    assert hx.alias_of(first) == "ua-cd"
    assert hx.cdrom(LIVE, "hdd") is None
    loaded = _xml(hx.cdrom_with(cd, "/iso/new.iso"))
    assert loaded.find("source").get("file") == "/iso/new.iso"  # type: ignore[union-attr]
    assert loaded.find("backingStore") is None
    assert loaded.find("readonly") is not None
    ejected = _xml(hx.cdrom_with(cd, ""))
    assert ejected.find("source") is None
    meta = hx.cd_meta("hdc", DiskVolume("hdc", SP, SD, IMG, VOL))
    assert [child.text for child in meta] == [SP, SD, IMG, VOL]


def test_a_dimm_is_built_as_vdsm_builds_it():
    xml = hx.memory_xml({"size": 256, "node": 0, "alias": "ua-dimm"})
    assert xml == (
        '<memory model="dimm"><target><size unit="KiB">262144</size><node>0</node></target>'
        '<alias name="ua-dimm" /></memory>'
    )
    for bad in ({}, {"size": "lots"}, {"size": 0}, {"size": 128, "node": -1}):
        with pytest.raises(InvalidArgument):
            hx.memory_xml(bad)


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "<hotplug>",
        "<hotplug><devices/></hotplug>",
        "<hotplug><devices><interface/></devices></hotplug>",
    ],
)
def test_documents_without_the_device_are_refused(xml: str):
    with pytest.raises(InvalidArgument) as refused:
        hx.read_device(xml, "disk")
    assert refused.value.code == 91


def test_cpusets_become_libvirt_cpu_maps():
    assert hx.cpusets(["1,3-5", "0"], 2) == [frozenset({1, 3, 4, 5}), frozenset({0})]
    assert hx.cpumap(frozenset({1, 3}), 4) == (False, True, False, True)
    for bad in (["x"], ["3-1"], ["1,"], ["-1"]):
        with pytest.raises(InvalidArgument):
            hx.cpusets(bad, 1)
    with pytest.raises(InvalidArgument):
        hx.cpusets(["0"], 2)  # one per vCPU
    with pytest.raises(InvalidArgument):
        hx.cpumap(frozenset({4}), 4)


def test_metadata_of_devices_gone_from_the_domain_is_stale():
    assert hx.without_stale(LIVE) is None  # every entry has its device
    gone = LIVE.replace("<target dev='vdb' bus='virtio'/>", "<target dev='vdz' bus='virtio'/>")
    gone = gone.replace("<alias name='ua-nic'/>", "<alias name='ua-other'/>")
    cleaned = hx.without_stale(gone)
    assert cleaned is not None
    assert IMG not in cleaned  # vdb's
    assert "ua-nic" not in cleaned
    assert "boot" in cleaned  # vda's stays


def test_a_lease_device_is_vdsms_lease_xml_and_is_found_by_lockspace_and_key():
    lease = LeaseDevice(sd_id=SD, lease_id=IMG, path="/sd/dom_md/xleases", offset=3 * 1024**2)
    element = ET.fromstring(lease.xml())  # noqa: S314 - our own

    assert element.tag == "lease"
    assert (element.findtext("key"), element.findtext("lockspace")) == (IMG, SD)
    target = element.find("target")
    assert target is not None
    assert target.attrib == {"path": "/sd/dom_md/xleases", "offset": "3145728"}
    domain = f"<domain><devices><disk/>{lease.xml()}</devices></domain>"
    found = find_lease(domain, SD, IMG)
    assert found is not None
    assert found.findtext("key") == IMG
    assert find_lease(domain, SD, VOL) is None  # another lease of the same domain
    assert find_lease(domain, VOL, IMG) is None  # the same key in another lockspace
    assert find_lease("<domain><devices/></domain>", SD, IMG) is None
