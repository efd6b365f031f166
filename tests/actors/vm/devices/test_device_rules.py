"""The pure rules behind the device verbs: tickets, NIC updates, I/O limits, policies, data."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import device_data, device_graphics, device_nic, device_tune
from hostvisor.actors.vm.device_errors import NotImplementedHere, UpdateIoTuneError
from hostvisor.actors.vm.errors import MissingParameter, UpdateDeviceFailed

pytestmark = pytest.mark.unit

OVIRT_VM = "http://ovirt.org/vm/1.0"
OVIRT_TUNE = "http://ovirt.org/vm/tune/1.0"
LIVE = f"""<domain type='kvm' xmlns:ovirt-vm='{OVIRT_VM}'>
  <name>x</name><uuid>0c3e4c3a-0000-4000-8000-000000000001</uuid>
  <vcpu placement='static' current='2'>16</vcpu>
  <metadata>
    <ovirt-tune:qos xmlns:ovirt-tune='{OVIRT_TUNE}'/>
    <ovirt-vm:vm>
      <ovirt-vm:device devtype='disk' name='vda'>
        <ovirt-vm:domainID>sd</ovirt-vm:domainID><ovirt-vm:poolID>sp</ovirt-vm:poolID>
        <ovirt-vm:imageID>img</ovirt-vm:imageID><ovirt-vm:volumeID>vol</ovirt-vm:volumeID>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
  <devices>
    <disk type='file' device='disk'><source file='/d/vda'/><target dev='vda' bus='virtio'/>
      <iotune><read_bytes_sec>100</read_bytes_sec></iotune></disk>
    <disk type='file' device='cdrom'><target dev='sdc' bus='sata'/></disk>
    <interface type='bridge'><mac address='56:6f:00:00:00:01'/><source bridge='net1'/>
      <target dev='vnet0'/><model type='virtio'/><alias name='ua-nic'/></interface>
    <interface type='ethernet'><mac address='56:6f:00:00:00:02'/><target dev='tap9'/>
      <alias name='ua-eth'/></interface>
    <graphics type='vnc' port='5900' autoport='yes' passwd='old'
      passwdValidTo='1970-01-01T00:00:01'><listen type='address' address='127.0.0.1'/></graphics>
    <graphics type='spice' port='5901' autoport='yes'/>
  </devices>
</domain>"""


def ticket(**changes: object) -> dict[str, object]:
    return {
        "deviceType": "graphics",
        "graphicsType": "vnc",
        "password": "0123456789ab",
        "ttl": 120,
        **changes,
    }


def element(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - the code's own output


def test_a_vnc_ticket_is_cut_to_8_characters_and_valid_for_its_ttl():
    now = time.time()
    graphics = element(
        device_graphics.ticket_element(LIVE, device_graphics.check_request(ticket()), now=now)
    )

    assert graphics.get("type") == "vnc"
    assert graphics.get("passwd") == "01234567"
    valid_to = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 120))
    assert graphics.get("passwdValidTo") == valid_to
    assert graphics.find("listen") is not None  # the rest of the device as it was


def test_a_spice_ticket_keeps_its_length_and_says_what_to_do_with_a_client():
    request = device_graphics.check_request(
        ticket(graphicsType="spice", ttl=0, existingConnAction="keep")
    )
    graphics = element(device_graphics.ticket_element(LIVE, request, now=time.time()))

    assert graphics.get("passwd") == "0123456789ab"
    assert graphics.get("connected") == "keep"
    assert graphics.get("passwdValidTo") is None  # ttl 0: the validity stays as it was


def test_ticket_requests_are_checked():
    assert device_graphics.check_request(ticket(ttl="60")).ttl == 60  # a number as a string
    for missing in ("graphicsType", "password", "ttl"):
        bad = ticket()
        del bad[missing]
        with pytest.raises(MissingParameter):
            device_graphics.check_request(bad)
    for wrong in (
        {"ttl": "soon"},
        {"ttl": True},
        {"password": None},
        {"graphicsType": "rdp"},
        {"existingConnAction": "explode"},
        {"disconnectAction": "DANCE"},
        {"params": []},
    ):
        with pytest.raises(InvalidArgument):
            device_graphics.check_request(ticket(**wrong))
    with pytest.raises(NotImplementedHere):
        device_graphics.check_request(ticket(xml="<graphics/>"))
    no_spice = LIVE.replace("<graphics type='spice' port='5901' autoport='yes'/>", "")
    request = device_graphics.check_request(ticket(graphicsType="spice"))
    with pytest.raises(UpdateDeviceFailed):
        device_graphics.ticket_element(no_spice, request, now=0)


def engine_nic(link: str, bridge: str, *, mirrored: str = "") -> str:
    mirroring = (
        f"<ovirt-vm:portMirroring><ovirt-vm:network>{mirrored}</ovirt-vm:network>"
        "</ovirt-vm:portMirroring>"
        if mirrored
        else ""
    )
    return (
        '<hotplug><devices><interface type="bridge"><model type="virtio"/>'
        f'<link state="{link}"/><source bridge="{bridge}"/><alias name="ua-nic"/>'
        '<mac address="56:6f:00:00:00:01"/></interface></devices>'
        f'<metadata><ovirt-vm:vm xmlns:ovirt-vm="{OVIRT_VM}">'
        f'<ovirt-vm:device alias="ua-nic" mac_address="56:6f:00:00:00:01">{mirroring}'
        "<ovirt-vm:custom/></ovirt-vm:device></ovirt-vm:vm></metadata></hotplug>"
    )


def test_the_engines_nic_xml_names_the_nic_its_link_and_network():
    update = device_nic.nic_update(
        {"deviceType": "interface", "xml": engine_nic("down", "net2", mirrored="net3")}
    )

    assert update == device_nic.NicUpdate(
        alias="ua-nic",
        mac="56:6f:00:00:00:01",
        link_up=False,
        network="net2",
        port_mirroring=("net3",),
    )
    nic = element(device_nic.updated_interface(LIVE, update))
    assert nic.find("link").get("state") == "down"  # type: ignore[union-attr]
    assert nic.find("source").get("bridge") == "net2"  # type: ignore[union-attr]
    assert nic.find("target").get("dev") == "vnet0"  # type: ignore[union-attr]


def test_vdsms_field_form_and_its_special_cases():
    update = device_nic.nic_update({"alias": "ua-nic", "linkActive": "true", "network": ""})
    nic = element(device_nic.updated_interface(LIVE, update))
    # No network: the link goes down, the NIC stays on its bridge.
    assert nic.find("link").get("state") == "down"  # type: ignore[union-attr]
    assert nic.find("source").get("bridge") == "net1"  # type: ignore[union-attr]

    ethernet = device_nic.nic_update({"alias": "ua-eth", "linkActive": False, "network": "n"})
    nic = element(device_nic.updated_interface(LIVE, ethernet))
    assert nic.find("link").get("state") == "down"  # type: ignore[union-attr]
    assert nic.find("source") is None  # not on a bridge: only its link changes

    with pytest.raises(UpdateDeviceFailed):
        device_nic.updated_interface(LIVE, device_nic.NicUpdate(alias="ua-none", mac=None))
    with pytest.raises(MissingParameter):
        device_nic.nic_update({"deviceType": "interface"})
    for bad in (
        {"xml": 1},
        {"xml": "<!DOCTYPE x [<!ENTITY a 'b'>]><hotplug/>"},
        {"xml": "<hotplug><devices/></hotplug>"},
        {"alias": ""},
        {"alias": "ua-nic", "linkActive": "maybe"},
        {"alias": "ua-nic", "portMirroring": "net"},
    ):
        with pytest.raises(InvalidArgument):
            device_nic.nic_update(bad)


def test_io_limits_are_checked_as_vdsm_checks_them():
    assert device_tune.check_io_tune({"read_bytes_sec": 1, "write_iops_sec": 0}) == {
        "read_bytes_sec": 1,
        "write_iops_sec": 0,
    }
    for bad in (
        {"read_bytes_sec": -1},
        {"read_bytes_sec": "1"},
        {"read_bytes_sec": True},
        {"fast": 1},
        {"total_bytes_sec": 1, "write_bytes_sec": 1},
        {"total_iops_sec": 5, "read_iops_sec": 5},
    ):
        with pytest.raises(UpdateIoTuneError):
            device_tune.check_io_tune(bad)
    # A total limit of one unit and read/write limits of the other go together.
    assert device_tune.check_io_tune({"total_bytes_sec": 1, "read_iops_sec": 1})


def test_disks_are_read_with_their_limits_and_storage_ids():
    [disk] = device_tune.disks(LIVE)

    assert disk == device_tune.Disk(
        name="vda",
        path="/d/vda",
        iotune={"read_bytes_sec": 100},
        ids={"domainID": "sd", "poolID": "sp", "imageID": "img", "volumeID": "vol"},
    )


def test_the_engines_policy_and_moms_quota():
    change = device_tune.policy_change(
        {
            "vmId": "x",
            "vcpuLimit": "25",
            "ioTune": [{"domainID": "sd", "poolID": "sp", "imageID": "img", "volumeID": "vol"}],
            "future": 1,
        }
    )
    assert change.vcpu_limit == 25
    assert change.unknown == ("future",)
    assert device_tune.vcpu_quota(25, host_cpus=4, vcpus=2) == 50_000
    assert device_tune.vcpu_quota(100, host_cpus=4, vcpus=2) == -1
    assert device_tune.vcpu_quota(1, host_cpus=1, vcpus=64) == device_tune.MIN_QUOTA_US
    with pytest.raises(MissingParameter):
        device_tune.policy_change({"vmId": "x"})
    with pytest.raises(MissingParameter):
        device_tune.policy_change({"ioTune": [{"maximum": {}}]})
    with pytest.raises(InvalidArgument):
        device_tune.policy_change({"vcpuLimit": "lots"})


def test_the_stored_io_policy_merges_as_vdsms():
    qos = ET.Element("qos")
    device_tune._merge_io_tune(
        qos, [{"name": "vda", "path": "/d/vda", "maximum": {"total_bytes_sec": 5}}]
    )
    device_tune._merge_io_tune(
        qos, [{"name": "vda", "path": "/d/vda", "guaranteed": {"read_iops_sec": 7}}]
    )

    [device] = qos.iterfind("ioTune/device")
    assert (device.get("name"), device.get("path")) == ("vda", "/d/vda")
    assert device.findtext("maximum/total_bytes_sec") == "5"
    assert device.findtext("guaranteed/read_iops_sec") == "7"


def test_external_data_is_stable_once_read_twice_alike():
    first = device_data.DataState().read("=0=AAAA", force=False)
    assert (first.stable, first.engine_hash) == (None, "")  # not yet known to be stable
    assert first.answer(None) == {"hash": ""}

    second = first.read("=0=AAAA", force=False)
    assert second.stable == "=0=AAAA"
    assert second.engine_hash == device_data.secure_hash("=0=AAAA")
    assert second.answer(None) == {"hash": second.engine_hash, "_X_data": "=0=AAAA"}
    assert second.answer(second.engine_hash) == {"hash": second.engine_hash}

    moving = second.read("=0=BBBB", force=False)
    assert moving.stable == "=0=AAAA"  # changed since: the last stable data is reported
    assert moving.read("=0=CCCC", force=True).stable == "=0=CCCC"


def test_destroy_on_reboot_is_kept_in_the_metadata():
    assert not device_data.destroy_on_reboot(LIVE)

    metadata = device_data.marked_metadata(LIVE)

    assert metadata.startswith("<vm>")  # setMetadata adds the namespace itself
    assert '<destroy_on_reboot type="bool">True</destroy_on_reboot>' in metadata
    marked = LIVE.replace(
        "</ovirt-vm:vm>",
        '<ovirt-vm:destroy_on_reboot type="bool">True</ovirt-vm:destroy_on_reboot></ovirt-vm:vm>',
    )
    assert device_data.destroy_on_reboot(marked)
    assert device_data.devices_with_data(LIVE) == ()
    assert device_data.swtpm_dir("qemu:///embed?root=/r", "u").as_posix() == "/r/lib/swtpm/u"
    assert device_data.swtpm_dir("qemu:///system", "u").as_posix() == "/var/lib/libvirt/swtpm/u"


def test_the_vcpu_limit_is_reported_from_the_policy():
    assert device_tune.policy_fields(LIVE) == {}
    limited = LIVE.replace(
        f"<ovirt-tune:qos xmlns:ovirt-tune='{OVIRT_TUNE}'/>",
        f"<ovirt-tune:qos xmlns:ovirt-tune='{OVIRT_TUNE}'>"
        "<ovirt-tune:vcpuLimit>40</ovirt-tune:vcpuLimit></ovirt-tune:qos>",
    )
    assert device_tune.policy_fields(limited) == {"vcpuUserLimit": 40}


def test_the_cpu_tune_and_the_stored_io_policy_as_vdsm_reports_them():
    assert device_tune.cpu_tune_fields({"vcpu_quota": 5000, "vcpu_period": 100000}) == {
        "vcpuQuota": "5000",
        "vcpuPeriod": 100000,
    }
    assert device_tune.cpu_tune_fields({"vcpu_quota": 0, "vcpu_period": 0}) == {}
    assert device_tune.cpu_tune_fields(None) == {}
    assert device_tune.io_tune_policy(LIVE) == []
    stored = LIVE.replace(
        f"<ovirt-tune:qos xmlns:ovirt-tune='{OVIRT_TUNE}'/>",
        f"<ovirt-tune:qos xmlns:ovirt-tune='{OVIRT_TUNE}'><ovirt-tune:ioTune>"
        "<ovirt-tune:device name='vda' path='/d/vda'><ovirt-tune:maximum>"
        "<ovirt-tune:total_bytes_sec>9</ovirt-tune:total_bytes_sec></ovirt-tune:maximum>"
        "</ovirt-tune:device></ovirt-tune:ioTune></ovirt-tune:qos>",
    )
    assert device_tune.io_tune_policy(stored) == [
        {"name": "vda", "path": "/d/vda", "maximum": {"total_bytes_sec": 9}}
    ]
