"""What the VM tests share: the Engine's domain XML, and a tiny Linux guest with qemu-ga.

`engine_xml` builds a domain XML the way the Engine's `LibvirtVmXmlBuilder` writes it
(ovirt-engine backend/.../builder/vminfo/LibvirtVmXmlBuilder.java): the `ovirt-tune` and
`ovirt-vm` namespaces on `<domain type="kvm">`, sysinfo with the host placeholders
VDSM fills in (`OS-NAME:`…), guest-agent channels as unix sockets under
`/var/lib/libvirt/qemu/channels/`, a serial console on a unix socket under
`/var/run/ovirt-vmconsole-console/`, VNC and SPICE graphics listening on the display
network (`vdsm-ovirtmgmt`), USB tablet and xHCI, virtio-serial, RNG, watchdog, balloon,
QXL video, and a disk named by pool/domain/image/volume in the metadata.

`tiny_guest` (session-scoped) builds, once into a cache directory, a 4 MiB initramfs
from Debian packages (ENVIRONMENT.md: a Debian kernel, busybox-static, qemu-ga) whose
`/init` starts qemu-ga on the `org.qemu.guest_agent.0` port. Under TCG it answers in
about 8 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.components import need
from harness.waiting import wait_for
from hostvisor.actors.actor import Link, call
from hostvisor.actors.events import Event
from hostvisor.actors.hypervisor.connection import open_connection
from hostvisor.actors.hypervisor.events import unwatch, watch_lifecycle
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.actor import VmActor, VmServices

OVIRT_VM = "http://ovirt.org/vm/1.0"
OVIRT_TUNE = "http://ovirt.org/vm/tune/1.0"
CHANNELS = "/var/lib/libvirt/qemu/channels"
VMCONSOLE = "/var/run/ovirt-vmconsole-console"
BLANK = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineDisk:
    """A disk as the Engine names it: a file volume on a storage domain."""

    path: Path
    pool_id: str
    domain_id: str
    image_id: str
    volume_id: str
    format: str = "qcow2"


@dataclass(frozen=True, slots=True, kw_only=True)
class Kernel:
    """A direct kernel boot: the Engine's kernel URL, initrd URL and kernel params."""

    kernel: Path
    initrd: Path
    cmdline: str


def engine_domain_xml(  # noqa: PLR0913 - keyword-only parts of one VM
    *,
    vm_id: str,
    name: str,
    domain_type: str,
    disk: EngineDisk | None = None,
    kernel: Kernel | None = None,
    memory_mib: int = 128,
    spice: bool = True,
    time_offset: int = 0,
) -> str:
    """The domain XML the Engine sends in VM.create's vmParams.xml (oVirt 4.4+)."""
    kib = memory_mib * 1024
    boot = ""
    if kernel is not None:
        boot = (
            f"<initrd>{kernel.initrd}</initrd><kernel>{kernel.kernel}</kernel>"
            f"<cmdline>{kernel.cmdline}</cmdline>"
        )
    disk_xml = disk_meta = ""
    if disk is not None:
        disk_xml = (
            '<disk type="file" device="disk" snapshot="no"><target dev="vda" bus="virtio"/>'
            f'<source file="{disk.path}"><seclabel model="dac" type="none" relabel="no"/>'
            f'</source><driver name="qemu" io="threads" type="{disk.format}" '
            f'error_policy="stop" cache="none"/><alias name="ua-{disk.image_id}"/>'
            f'<boot order="1"/><serial>{disk.image_id}</serial></disk>'
        )
        disk_meta = (
            '<ovirt-vm:device devtype="disk" name="vda">'
            f"<ovirt-vm:poolID>{disk.pool_id}</ovirt-vm:poolID>"
            f"<ovirt-vm:volumeID>{disk.volume_id}</ovirt-vm:volumeID>"
            f"<ovirt-vm:imageID>{disk.image_id}</ovirt-vm:imageID>"
            f"<ovirt-vm:domainID>{disk.domain_id}</ovirt-vm:domainID>"
            "</ovirt-vm:device>"
        )
    spice_xml = ""
    if spice:
        spice_xml = (
            '<graphics type="spice" port="-1" autoport="yes" passwd="*****" '
            'passwdValidTo="1970-01-01T00:00:01" tlsPort="-1">'
            '<channel name="main" mode="secure"/><channel name="inputs" mode="secure"/>'
            '<listen type="network" network="vdsm-ovirtmgmt"/></graphics>'
        )
    video = (
        '<video><model type="qxl" vram="32768" heads="1" ram="65536" vgamem="16384"/>'
        f'<alias name="ua-{uuid.uuid4()}"/></video>'
        if spice
        else '<video><model type="vga" vram="16384" heads="1"/></video>'
    )
    spicevmc = (
        '<channel type="spicevmc"><target type="virtio" name="com.redhat.spice.0"/></channel>'
        if spice
        else ""
    )
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<domain xmlns:ovirt-tune="{OVIRT_TUNE}" xmlns:ovirt-vm="{OVIRT_VM}" type="{domain_type}">
<name>{name}</name>
<uuid>{vm_id}</uuid>
<memory>{kib}</memory>
<currentMemory>{kib}</currentMemory>
<iothreads>1</iothreads>
<maxMemory slots="16">{kib * 4}</maxMemory>
<vcpu current="1">16</vcpu>
<sysinfo type="smbios"><system><entry name="manufacturer">oVirt</entry>
<entry name="product">OS-NAME:</entry><entry name="version">OS-VERSION:</entry>
<entry name="family">oVirt</entry><entry name="serial">HOST-SERIAL:</entry>
<entry name="uuid">{vm_id}</entry></system></sysinfo>
<clock offset="variable" adjustment="{time_offset}"><timer name="rtc" tickpolicy="catchup"/>
<timer name="pit" tickpolicy="delay"/><timer name="hpet" present="no"/></clock>
<features><acpi/></features>
<cpu match="exact"><model>qemu64</model><feature name="svm" policy="disable"/>
<topology cores="1" threads="1" sockets="16"/>
<numa><cell id="0" cpus="0-15" memory="{kib}"/></numa></cpu>
<cputune/>
<devices>
<input type="tablet" bus="usb"/>
<channel type="unix"><target type="virtio" name="ovirt-guest-agent.0"/>
<source mode="bind" path="{CHANNELS}/{vm_id}.ovirt-guest-agent.0"/></channel>
<channel type="unix"><target type="virtio" name="org.qemu.guest_agent.0"/>
<source mode="bind" path="{CHANNELS}/{vm_id}.org.qemu.guest_agent.0"/></channel>
<controller type="usb" model="qemu-xhci" index="0" ports="8"/>
<console type="unix"><source path="{VMCONSOLE}/{vm_id}.sock" mode="bind"/>
<target type="serial" port="0"/><alias name="ua-{uuid.uuid4()}"/></console>
<controller type="virtio-serial" index="0" ports="16"/>
<rng model="virtio"><backend model="random">/dev/urandom</backend>
<alias name="ua-{uuid.uuid4()}"/></rng>
<controller type="scsi" model="virtio-scsi" index="0"/>
<watchdog model="i6300esb" action="reset"><alias name="ua-{uuid.uuid4()}"/></watchdog>
<memballoon model="virtio"><stats period="5"/><alias name="ua-{uuid.uuid4()}"/></memballoon>
{video}
{spice_xml}
<graphics type="vnc" port="-1" autoport="yes" passwd="*****"
 passwdValidTo="1970-01-01T00:00:01" keymap="en-us">
<listen type="network" network="vdsm-ovirtmgmt"/></graphics>
<serial type="unix"><source path="{VMCONSOLE}/{vm_id}.sock" mode="bind"/>
<target port="0"/></serial>
{spicevmc}
{disk_xml}
</devices>
<pm><suspend-to-disk enabled="no"/><suspend-to-mem enabled="no"/></pm>
<os><type arch="x86_64" machine="pc">hvm</type>{boot}<smbios mode="sysinfo"/></os>
<metadata><ovirt-tune:qos/><ovirt-vm:vm>
<ovirt-vm:minGuaranteedMemoryMb type="int">{memory_mib}</ovirt-vm:minGuaranteedMemoryMb>
<ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion><ovirt-vm:custom/>
{disk_meta}
<ovirt-vm:launchPaused>false</ovirt-vm:launchPaused>
<ovirt-vm:resumeBehavior>auto_resume</ovirt-vm:resumeBehavior>
<ovirt-vm:balloonTarget type="int">{kib}</ovirt-vm:balloonTarget>
</ovirt-vm:vm></metadata>
</domain>"""


@pytest.fixture(scope="session")
def engine_xml() -> Callable[..., str]:
    """`engine_domain_xml`: the Engine's domain XML of one VM (keyword arguments)."""
    return engine_domain_xml


def engine_volume(directory: Path, base: Path) -> EngineDisk:
    """A qcow2 volume laid out as on a file domain: `<sd>/images/<img>/<vol>`."""
    pool, domain, image, volume = (str(uuid.uuid4()) for _ in range(4))
    images = directory / domain / "images" / image
    images.mkdir(parents=True)
    path = images / volume
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)],
        check=True,
    )
    return EngineDisk(path=path, pool_id=pool, domain_id=domain, image_id=image, volume_id=volume)


@pytest.fixture(scope="session")
def engine_disk() -> Callable[[Path, Path], EngineDisk]:
    """`engine_volume(directory, base)`: a file volume over `base` (a qcow2 overlay)."""
    return engine_volume


# -- a VmActor on a connection, watched ---------------------------------------------------


class Watched:
    """A VmActor on `conn`'s libvirt, its lifecycle events delivered, its VM_status events kept.

    It works through a handle of its own on the same libvirt (`open_connection` of
    `conn`'s URI), so that the connection fixtures may close theirs first.
    """

    def __init__(self, conn: Any, xml: str, **options: Any) -> None:
        self.conn = open_connection(conn.getURI())
        self.events: list[Event] = []
        self.vm_id = domxml.parse(xml).vm_id
        self.ref: pykka.ActorRef[Any] | None = None
        self._closed = False
        self._watch = watch_lifecycle(self.conn, self._deliver)
        own = self.conn
        services = VmServices(connection=lambda: own, publish=self.events.append)
        link = Link(path=f"vms/guests/{self.vm_id}", runtime=Runtime.make())
        options.setdefault("powering_up", 0.0)
        self.ref = VmActor.spawn(link, spec=domxml.parse(xml), services=services, **options)
        link.started.get(timeout=10)

    def _deliver(self, event: Any) -> None:
        if event.vm_id == self.vm_id and self.ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self.ref.tell(event)

    @property
    def actor(self) -> pykka.ActorRef[Any]:
        assert self.ref is not None
        return self.ref

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = call(self.actor, "stats").get(timeout=10)
        return answer

    def xml(self) -> str:
        answer: str = call(self.actor, "definition").get(timeout=10)["xml"]
        return answer

    def wait_status(self, status: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.stats())["status"] == status and s, timeout, f"status {status}"
        )

    def statuses(self) -> list[dict[str, Any]]:
        return [event.params[self.vm_id] for event in self.events]

    def shutdown(self, timeout: float = 1.0) -> dict[str, Any]:
        """Shut the guest down, forced off after `timeout` s if it ignores ACPI."""
        operation = call(self.actor, "shutdown", timeout=timeout, force=True).get(timeout=10)
        operation.get(timeout=30)
        return self.wait_status("Down", timeout=30)

    def close(self) -> None:
        """Stop watching; destroy the VM and stop its actor (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.ref is not None and self.ref.is_alive():
            with contextlib.suppress(Exception):
                call(self.ref, "destroy").get(timeout=10).get(timeout=30)
            self.ref.stop()
        unwatch(self.conn, self._watch)
        self.conn.close()


@pytest.fixture
def watched() -> Iterator[Callable[..., Watched]]:
    """`watched(conn, xml, **VmActor options)`: a VmActor; destroyed after the test."""
    made: list[Watched] = []

    def make(conn: Any, xml: str, **options: Any) -> Watched:
        vm = Watched(conn, xml, **options)
        made.append(vm)
        return vm

    yield make
    for vm in made:
        vm.close()


# -- the tiny guest -------------------------------------------------------------------------

KERNEL_PACKAGE = "linux-image-amd64"
MODULES = (
    *("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci"),
    *("virtio_console", "virtio_blk", "failover", "net_failover", "virtio_net", "virtio_balloon"),
)
"""In insmod order (each after what it depends on)."""
GUEST_HOSTNAME = "tiny-guest.example.test"
GUEST_ADDRESS = "192.0.2.10"
OS_RELEASE = """\
PRETTY_NAME="Tiny Guest 12 (hostvisor tests)"
NAME="Tiny Guest"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=tiny
"""
INIT = """\
#!/bin/busybox sh
/bin/busybox --install -s
mkdir -p /proc /sys /dev /run /tmp /etc
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m.ko; done
hostname {hostname}
ip link set lo up
for n in /sys/class/net/eth*; do
  [ -e "$n" ] || continue
  ip link set "${{n##*/}}" up
  ip addr add {address}/24 dev "${{n##*/}}"
done
# qemu-ga reads a disk's serial from udev's database: write what udev would.
mkdir -p /run/udev/data
for b in /sys/block/vd*; do
  [ -e "$b/serial" ] || continue
  echo "E:ID_SERIAL=$(cat $b/serial)" > /run/udev/data/b$(cat $b/dev)
done
port=""
while [ -z "$port" ]; do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${{p##*/}}
  done
  [ -n "$port" ] || sleep 0.2
done
echo "tiny guest: qemu-ga on $port"
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run &
while true; do sleep 3600; done
"""


@dataclass(frozen=True, slots=True)
class TinyGuest:
    """A kernel and an initramfs whose init runs qemu-ga (boot with `console=ttyS0`)."""

    kernel: Path
    initrd: Path
    hostname: str = GUEST_HOSTNAME
    address: str = GUEST_ADDRESS

    def boot(self) -> Kernel:
        """The direct kernel boot of this guest, as the Engine's XML carries it."""
        return Kernel(kernel=self.kernel, initrd=self.initrd, cmdline="console=ttyS0 panic=-1")


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hostvisor-tests" / "tiny-guest"


def _apt_download(package: str, into: Path) -> Path:
    subprocess.run(
        ["apt-get", "download", "-q", package], cwd=into, check=True, capture_output=True
    )
    [deb] = into.glob(f"{package}_*.deb")
    return deb


def _kernel_package() -> str:
    """The versioned kernel package `linux-image-amd64` depends on (its current ABI)."""
    out = subprocess.run(
        ["apt-cache", "depends", KERNEL_PACKAGE], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        text = line.strip()
        if text.startswith("Depends: linux-image-"):
            return text.split(":", 1)[1].strip()
    raise RuntimeError(f"apt-cache names no kernel for {KERNEL_PACKAGE}:\n{out}")


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        for part in parts:
            if part.startswith("/"):
                found.append(Path(part))
                break
    return found


class _Cpio:
    """A `newc` cpio archive (what the kernel unpacks as an initramfs), written directly."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1
        self.directories: set[str] = set()

    def add(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        parent = name.rpartition("/")[0]
        if parent and parent not in self.directories:
            self.directory(parent)
        if stat.S_ISDIR(mode):
            self.directories.add(name)
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.data += b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        if name not in self.directories:
            self.add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, executable: bool = False) -> None:
        self.add(name, stat.S_IFREG | (0o755 if executable else 0o644), body)

    def symlink(self, name: str, target: str) -> None:
        self.add(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def build_tiny_guest(cache: Path) -> TinyGuest:
    """Build (once) the tiny guest's kernel and initramfs under `cache`; return them."""
    kernel, initrd = cache / "vmlinuz", cache / "initrd.img"
    if kernel.exists() and initrd.exists():
        return TinyGuest(kernel, initrd)
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    linux = work / "linux"
    agent = work / "agent"
    subprocess.run(["dpkg-deb", "-x", _apt_download(_kernel_package(), work), linux], check=True)
    subprocess.run(["dpkg-deb", "-x", _apt_download("qemu-guest-agent", work), agent], check=True)
    archive = _Cpio()
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run"):
        archive.directory(directory)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.file("bin/busybox", Path("/bin/busybox").read_bytes(), executable=True)
    archive.symlink("bin/sh", "busybox")
    qemu_ga = agent / "usr/sbin/qemu-ga"
    archive.file("usr/sbin/qemu-ga", qemu_ga.read_bytes(), executable=True)
    for library in _libraries(qemu_ga):
        archive.file(str(library.resolve()).lstrip("/"), library.read_bytes(), executable=True)
        if library.resolve() != library:
            archive.symlink(str(library).lstrip("/"), str(library.resolve()))
    for module in MODULES:
        [path] = linux.glob(f"lib/modules/*/kernel/**/{module}.ko")
        archive.file(f"lib/modules/{module}.ko", path.read_bytes())
    archive.file("etc/os-release", OS_RELEASE.encode())
    script = INIT.format(modules=" ".join(MODULES), hostname=GUEST_HOSTNAME, address=GUEST_ADDRESS)
    archive.file("init", script.encode(), executable=True)
    [vmlinuz] = linux.glob("boot/vmlinuz-*")
    shutil.copyfile(vmlinuz, kernel)
    initrd.write_bytes(
        subprocess.run(
            ["gzip", "-9"], input=archive.close(), check=True, capture_output=True
        ).stdout
    )
    shutil.rmtree(work, ignore_errors=True)
    return TinyGuest(kernel, initrd)


@pytest.fixture(scope="session")
def tiny_guest() -> TinyGuest:
    """A Linux guest with qemu-ga (TCG boots it in ~8 s), built once per cache."""
    need(shutil.which("apt-get") is not None, "apt-get is needed to fetch the guest's packages")
    need(Path("/bin/busybox").exists(), "busybox-static is not installed")
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        return build_tiny_guest(cache)
    except (subprocess.CalledProcessError, RuntimeError, ValueError) as error:
        need(False, f"could not build the tiny guest: {error}")
        raise
