"""VMs from the Engine's own domain XML, run unchanged (issue 13, Deliver 3 and 4).

The XML is the one `LibvirtVmXmlBuilder` writes (see `conftest.engine_domain_xml`):
guest-agent channels and a serial console as unix sockets under the Engine's absolute
paths, VNC and SPICE on the display network, USB, RNG, watchdog, balloon, and a disk
that the metadata names by pool/domain/image/volume. A VmActor launches it on the
embedded driver (where the agent maps the paths under its state directory) and on a
system libvirtd (where it creates the Engine's directories); the VM reaches Up,
reports what the Engine reads, and shuts down.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import libvirt
import pytest

from harness.components import need
from harness.daemons import Daemon
from harness.guests import StatusEvents, make_halting_base
from harness.hosts import VM_TEST_SETTINGS, embedded_host
from hostvisor.actors.hypervisor.connection import embed_uri, open_connection
from hostvisor.actors.vm import domxml, hostpaths, reported

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

ADMIN_SHUTDOWN = 6
CHANNELS = "/var/lib/libvirt/qemu/channels"
VMCONSOLE = "/var/run/ovirt-vmconsole-console"


# -- the mapping of the Engine's paths, without a guest ----------------------------------


def _engine_xml(engine_xml: Callable[..., str], vm_id: str) -> str:
    return engine_xml(vm_id=vm_id, name="paths", domain_type="kvm")


def _sources(xml: str) -> dict[str, str | None]:
    root = ET.fromstring(xml)  # noqa: S314 - the test's own XML
    found: dict[str, str | None] = {}
    devices = root.find("devices")
    for device in devices if devices is not None else ():
        source = device.find("source")
        target = device.find("target")
        if device.get("type") == "unix" and source is not None:
            name = target.get("name") if target is not None else None
            found[f"{device.tag}:{name or ''}"] = source.get("path")
    return found


@pytest.mark.unit
def test_a_system_libvirt_uses_the_engines_paths_and_creates_their_directories(engine_xml):
    vm_id = str(uuid.uuid4())
    xml = _engine_xml(engine_xml, vm_id)

    local = hostpaths.localize(xml, hostpaths.layout_of("qemu:///system"))

    assert local.xml == xml
    assert local.directories == (Path(CHANNELS), Path(VMCONSOLE))
    assert local.listen_networks == ("vdsm-ovirtmgmt", "vdsm-ovirtmgmt")


@pytest.mark.unit
def test_an_embedded_libvirt_maps_them_under_its_root(engine_xml):
    vm_id = str(uuid.uuid4())
    root = Path("/var/lib/hostvisor/libvirt")

    local = hostpaths.localize(_engine_xml(engine_xml, vm_id), hostpaths.layout_of(embed_uri(root)))

    assert _sources(local.xml) == {
        "channel:ovirt-guest-agent.0": f"{root}/channels/{vm_id}.ovirt-guest-agent.0",
        "channel:org.qemu.guest_agent.0": f"{root}/channels/{vm_id}.org.qemu.guest_agent.0",
        "console:": f"{root}/vmconsole/{vm_id}.sock",
        "serial:": f"{root}/vmconsole/{vm_id}.sock",
    }
    assert local.directories == (root / "channels", root / "vmconsole")
    assert domxml.parse(local.xml).vm_id == vm_id  # the rest is untouched


@pytest.mark.unit
def test_an_embedded_libvirt_keeps_the_engines_nvram_file_under_its_root():
    vm_id = str(uuid.uuid4())
    root = Path("/var/lib/hostvisor/libvirt")
    engine_nvram = f"/var/lib/libvirt/qemu/nvram/{vm_id}.fd"
    xml = (
        f"<domain type='kvm'><name>uefi</name><uuid>{vm_id}</uuid><memory>65536</memory>"
        "<os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd"
        f"</loader><nvram template='/usr/share/OVMF/OVMF_VARS.fd'>{engine_nvram}</nvram></os>"
        "</domain>"
    )

    embedded = hostpaths.localize(xml, hostpaths.layout_of(embed_uri(root)))
    system = hostpaths.localize(xml, hostpaths.layout_of("qemu:///system"))

    nvram = ET.fromstring(embedded.xml).find("os/nvram")  # noqa: S314 - the test's own XML
    assert nvram is not None
    assert nvram.text == f"{root}/lib/qemu/nvram/{vm_id}.fd"
    assert nvram.get("template") == "/usr/share/OVMF/OVMF_VARS.fd"
    assert embedded.directories == (root / "lib" / "qemu" / "nvram",)  # made before launch
    assert system.xml == xml  # a system libvirt uses the Engine's path


@pytest.mark.unit
def test_a_root_too_long_for_a_socket_leaves_channels_to_libvirt(engine_xml):
    vm_id = str(uuid.uuid4())
    root = Path("/srv/" + "a-very-long-state-directory/" * 2 + "libvirt")

    local = hostpaths.localize(_engine_xml(engine_xml, vm_id), hostpaths.layout_of(embed_uri(root)))

    sources = _sources(local.xml)
    assert sources["channel:org.qemu.guest_agent.0"] is None  # libvirt picks a short one
    assert sources["console:"] == f"{root}/vmconsole/{vm_id[:8]}.sock"
    assert all(len(path) <= hostpaths.MAX_SOCKET_PATH for path in sources.values() if path)


@pytest.mark.unit
def test_the_display_network_falls_back_to_an_address_and_spice_tls_is_dropped(engine_xml):
    xml = _engine_xml(engine_xml, str(uuid.uuid4()))

    resolved = hostpaths.resolve_listen(xml, {"vdsm-ovirtmgmt"}, {"ovirtmgmt": "198.51.100.7"}.get)
    plain = hostpaths.without_spice_tls(resolved)

    graphics = ET.fromstring(plain).findall("devices/graphics")  # noqa: S314
    assert [g.get("type") for g in graphics] == ["spice", "vnc"]
    for element in graphics:
        [listen] = element.findall("listen")
        assert listen.attrib == {"type": "address", "address": "198.51.100.7"}
    spice = graphics[0]
    assert "tlsPort" not in spice.attrib
    assert spice.findall("channel") == []
    nowhere = hostpaths.resolve_listen(xml, {"vdsm-ovirtmgmt"}, lambda _name: None)
    assert 'address="127.0.0.1"' in nowhere


@pytest.mark.unit
def test_the_devices_hash_is_stable_and_follows_devices_and_the_disk_mapping(engine_xml):
    xml = _engine_xml(engine_xml, str(uuid.uuid4()))
    first = reported.read(xml).fields()
    again = reported.read(xml).fields()
    mapped_xml = xml.replace(
        "<ovirt-vm:launchPaused>",
        '<ovirt-vm:device devtype="disk" name="vda"><ovirt-vm:imageID>3bae9925</ovirt-vm:imageID>'
        "<ovirt-vm:guestName>/dev/vda</ovirt-vm:guestName></ovirt-vm:device>"
        "<ovirt-vm:launchPaused>",
    )
    mapped = reported.read(mapped_xml).fields()
    other = reported.read(xml.replace('model="i6300esb"', 'model="ib700"')).fields()

    assert isinstance(first["hash"], str)
    assert -(2**63) <= int(first["hash"]) < 2**63  # an int as a string, as VDSM's hash()
    assert first["hash"] == again["hash"]
    assert len({first["hash"], mapped["hash"], other["hash"]}) == 3
    assert first["timeOffset"] == "0"
    assert reported.read(xml.replace('adjustment="0"', 'adjustment="-3600"')).time_offset == (
        "-3600"
    )
    assert [info["type"] for info in first["displayInfo"]] == ["spice", "vnc"]


# -- real guests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def halting_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_halting_base(tmp_path_factory.mktemp("base"))


def _assert_engine_fields(stats: dict[str, Any]) -> None:
    """The fields VdsBrokerObjectsBuilder reads from a running VM, with VDSM's types."""
    assert isinstance(stats["hash"], str)
    int(stats["hash"])
    assert isinstance(stats["timeOffset"], str)
    assert stats["clientIp"] == ""
    assert stats["vmJobs"] == {}
    assert stats["acpiEnable"] == "true"
    assert stats["pauseCode"] == "NOERR"
    assert stats["monitorResponse"] == "0"
    assert {info["type"] for info in stats["displayInfo"]} == {"spice", "vnc"}
    for info in stats["displayInfo"]:
        assert set(info) == {"type", "port", "tlsPort", "ipAddress"}
        assert all(isinstance(value, str) for value in info.values())
        assert int(info["port"]) >= 5900
    for name, value in (("username", "Unknown"), ("session", "Unknown"), ("guestCPUCount", -1)):
        assert stats[name] == value or name == "guestCPUCount"
    assert isinstance(stats["appsList"], list)
    assert isinstance(stats["guestIPs"], str)
    assert isinstance(stats["guestFQDN"], str)


def test_an_engine_vm_runs_on_the_embedded_driver_and_shuts_down(  # noqa: PLR0913, PLR0917 - fixtures
    watched,
    qemu_embed,
    embed_root: Path,
    accelerator,
    engine_xml,
    engine_disk,
    halting_base,
    short_dir,
):
    vm_id = str(uuid.uuid4())
    disk = engine_disk(short_dir, halting_base)
    xml = engine_xml(
        vm_id=vm_id,
        name="engine-embed",
        domain_type=accelerator.domain_type,
        disk=disk,
        time_offset=7200,
    )
    for directory in ("channels", "vmconsole"):
        with contextlib.suppress(OSError):
            (embed_root / directory).rmdir()  # only if empty: no other guest uses it
    vm = watched(qemu_embed, xml)
    up = vm.wait_status("Up")

    _assert_engine_fields(up)
    assert up["timeOffset"] == "7200"
    live = vm.xml()
    assert f"{embed_root}/channels/{vm_id}.org.qemu.guest_agent.0" in live
    assert f"{embed_root}/vmconsole/{vm_id}.sock" in live
    assert (embed_root / "channels" / f"{vm_id}.org.qemu.guest_agent.0").is_socket()
    assert str(disk.path) in live
    assert f"<ovirt-vm:volumeID>{disk.volume_id}</ovirt-vm:volumeID>" in live
    # One Up event, sent once libvirt's XML is known: the Engine reads the hash off it.
    [event] = [e for e in vm.statuses() if e["status"] == "Up"]
    assert event["hash"] == up["hash"]
    _assert_engine_fields({**event, "monitorResponse": "0"})

    down = vm.shutdown()
    assert down["exitReason"] == ADMIN_SHUTDOWN
    assert down["timeOffset"] == "7200"
    assert vm.statuses()[-1]["status"] == "Down"


# -- a system libvirtd -------------------------------------------------------------------

QEMU_CONF = """\
user = "root"
group = "root"
security_driver = "none"
stdio_handler = "file"
spice_tls = 1
spice_tls_x509_cert_dir = "{pki}"
"""


def _spice_pki(directory: Path) -> Path:
    """A self-signed certificate as libvirt's SPICE TLS wants it (ca, server cert and key)."""
    directory.mkdir()
    key, cert = directory / "server-key.pem", directory / "server-cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=hostvisor-test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    shutil.copyfile(cert, directory / "ca-cert.pem")
    return directory


@pytest.fixture(scope="module")
def system_libvirt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A libvirtd with the system layout, in a private mount namespace for its config.

    /etc/libvirt, /var/run/libvirt and /var/log/libvirt are the test's own; /var/lib/libvirt
    is the machine's, so the Engine's channel directory the agent creates is the one
    QEMU binds in. Stopped by its pid.
    """
    need(shutil.which("libvirtd") is not None, "libvirtd is not installed")
    need(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    need(shutil.which("openssl") is not None, "openssl is not installed")
    private = tmp_path_factory.mktemp("sys")
    etc, run, logs = private / "etc", private / "run", private / "log"
    for directory in (etc, run, logs):
        directory.mkdir()
    pki = _spice_pki(private / "pki")
    (etc / "qemu.conf").write_text(QEMU_CONF.format(pki=pki))
    (etc / "libvirtd.conf").write_text('unix_sock_group = "root"\n')
    for mount_point in ("/var/run/libvirt", "/var/log/libvirt"):
        Path(mount_point).mkdir(parents=True, exist_ok=True)
    script = (
        f"mount --bind {etc} /etc/libvirt && mount --bind {run} /var/run/libvirt && "
        f"mount --bind {logs} /var/log/libvirt && exec libvirtd --pid-file {private}/pid"
    )
    daemon = Daemon(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        private / "libvirtd.log",
    )
    socket = run / "libvirt-sock"
    try:
        daemon.wait_ready(socket.exists, timeout=30)
        conn = open_connection(f"qemu+unix:///system?socket={socket}")
        try:
            yield conn
        finally:
            for domain in conn.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):
                    domain.destroy()
            conn.close()
    finally:
        daemon.stop()


def test_an_engine_vm_runs_on_a_system_libvirt_with_the_engines_paths(  # noqa: PLR0913, PLR0917
    watched, system_libvirt, accelerator, engine_xml, engine_disk, halting_base, short_dir
):
    vm_id = str(uuid.uuid4())
    xml = engine_xml(
        vm_id=vm_id,
        name="engine-system",
        domain_type=accelerator.domain_type,
        disk=engine_disk(short_dir, halting_base),
    )
    created = []
    for directory in (CHANNELS, VMCONSOLE):
        path = Path(directory)
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty: shows that the agent creates it
        created.append(path)
    vm = watched(system_libvirt, xml)
    try:
        up = vm.wait_status("Up")

        _assert_engine_fields(up)
        live = vm.xml()
        assert f"{CHANNELS}/{vm_id}.org.qemu.guest_agent.0" in live
        assert Path(CHANNELS, f"{vm_id}.org.qemu.guest_agent.0").is_socket()
        assert Path(VMCONSOLE, f"{vm_id}.sock").is_socket()
        spice = next(info for info in up["displayInfo"] if info["type"] == "spice")
        assert int(spice["tlsPort"]) > 0  # SPICE over TLS, as the Engine asked
        assert vm.shutdown()["exitReason"] == ADMIN_SHUTDOWN
    finally:
        vm.close()  # before its sockets go
        for path in created:
            for leftover in path.glob(f"{vm_id}*"):
                leftover.unlink()
            with contextlib.suppress(OSError):
                path.rmdir()


@pytest.mark.unit
def test_layout_of_reads_the_embed_root_from_the_uri():
    assert hostpaths.layout_of("qemu:///embed?root=/srv/hv/libvirt").embed_root == Path(
        "/srv/hv/libvirt"
    )
    assert hostpaths.layout_of("qemu:///system").embed_root is None
    assert hostpaths.layout_of("qemu+unix:///system?socket=/x/sock").embed_root is None
    assert not hostpaths.layout_of("test:///default").host
    assert PurePosixPath(CHANNELS) in hostpaths.ENGINE_DIRS


# -- through the wire, as the Engine sees it ----------------------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, embed_root: Path) -> Iterator[Any]:
    with embedded_host(tmp_path_factory, embed_root, **VM_TEST_SETTINGS) as running:
        yield running


def test_an_engine_vm_through_the_wire_reports_what_the_engine_reads(
    host, embed_root: Path, accelerator, engine_xml
):
    vm_id = str(uuid.uuid4())
    # No disk: a disk the metadata names by storage ids needs a connected pool
    # (the Engine flow's own test); SeaBIOS finds nothing to boot and idles.
    xml = engine_xml(vm_id=vm_id, name="engine-wire", domain_type=accelerator.domain_type)
    with host.client() as cli:
        events = StatusEvents(cli)
        created = cli.VM.create(vmID=vm_id, vmParams={"xml": xml})
        try:
            assert created["status"] == "WaitForLaunch"
            up, _params = events.next(vm_id)
            assert up["status"] == "Up"
            _assert_engine_fields({**up, "monitorResponse": up.get("monitorResponse", "0")})

            [stats] = cli.VM.getStats(vmID=vm_id)
            _assert_engine_fields(stats)
            assert stats["hash"] == up["hash"]
            dumped = cli.Host.dumpxmls(vmList=[vm_id])[vm_id]
            assert f"{embed_root}/channels/{vm_id}.org.qemu.guest_agent.0" in dumped
            assert reported.read(dumped).fields()["hash"] == stats["hash"]
        finally:
            cli.VM.destroy(vmID=vm_id)
