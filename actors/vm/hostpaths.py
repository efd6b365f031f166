"""The host paths an Engine VM needs, made ready before it launches.

The Engine's domain XML (`LibvirtVmXmlBuilder`) names host paths VDSM's packages
create: the guest-agent channels are unix sockets under
`/var/lib/libvirt/qemu/channels/` (`<vmId>.org.qemu.guest_agent.0`,
`<vmId>.ovirt-guest-agent.0`) and the serial console is one under
`/var/run/ovirt-vmconsole-console/` (`<vmId>.sock`). QEMU binds them, so the
directory must exist or the VM goes Down at launch. Its graphics listen on the
display network as libvirt network `vdsm-<network>`, which VDSM defines.

Hostvisor makes such an XML run unchanged:

- **System libvirt** (`qemu:///system`…): the Engine's paths are used as they are;
  their directories are created (mode 0775, as VDSM's packages ship them).
- **Embedded libvirt** (`qemu:///embed?root=R`, the default, R = `<state_dir>/libvirt`):
  nothing may be written outside the state directory, and a unix socket path may
  not exceed 107 bytes. Each known Engine directory maps to a short directory under
  the root: `/var/lib/libvirt/qemu/channels/X` becomes `R/channels/X`,
  `/var/run/ovirt-vmconsole-console/X` (or `/run/…`) becomes `R/vmconsole/X`. When
  the mapped path would still be too long (a long root), a channel's path is
  dropped and libvirt picks one under its own channel directory; a console keeps a
  path shortened to the VM id's first 8 characters. The domain XML the VM then
  reports (dumpxmls) shows the paths it really uses.
- **Display network**: a `<listen type="network" network="vdsm-N">` whose libvirt
  network does not exist (always the case embedded, where libvirt has no network
  driver) becomes `<listen type="address">` on the first IPv4 address of the host
  interface `N` (the network's bridge), or 127.0.0.1 when there is none, so a
  console is never offered on an address nobody chose.
- **SPICE over TLS**: the Engine asks for a TLS port (`tlsPort="-1"`) and secure
  channels, which libvirt refuses unless qemu.conf enables `spice_tls` with the host's
  certificates (VDSM's `vdsm-tool configure` does so on a system libvirt). The
  embedded driver's qemu.conf has no SPICE certificates, so there the TLS port and
  the secure-channel list are dropped: SPICE is offered in plain text on the display
  address (the ticket still guards it), and the VM runs instead of going Down.
- **UEFI variables**: embedded, the Engine's `<os><nvram>` file
  (`/var/lib/libvirt/qemu/nvram/<vmId>.fd`) moves to `R/lib/qemu/nvram/`, created
  here, where an embedded libvirt keeps NVRAM and where a restored one is written.

`localize` is pure; `prepare` does the blocking part (libvirt lookups, mkdir) and
runs on the VM's launch worker, never on an actor's thread.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import libvirt
import psutil

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import domxml

_ = domxml.NAMESPACES  # importing domxml registers the ovirt-vm/ovirt-tune prefixes for ET

log = logging.getLogger(__name__)

ENGINE_DIRS = {
    PurePosixPath("/var/lib/libvirt/qemu/channels"): "channels",
    PurePosixPath("/var/run/ovirt-vmconsole-console"): "vmconsole",
    PurePosixPath("/run/ovirt-vmconsole-console"): "vmconsole",
}
"""Directories the Engine's XML puts sockets in -> their short name under an embed root."""
ENGINE_NVRAM_DIR = PurePosixPath("/var/lib/libvirt/qemu/nvram")
EMBED_NVRAM_DIR = "lib/qemu/nvram"
"""Where an embedded libvirt keeps NVRAM files under its root (its own default layout)."""
MAX_SOCKET_PATH = 107
"""The longest path a unix socket may have on Linux (sun_path is 108 bytes with its NUL)."""
DISPLAY_NETWORK_PREFIX = "vdsm-"
FALLBACK_LISTEN = "127.0.0.1"
_CHARDEVS = ("channel", "serial", "console", "parallel")
DIR_MODE = 0o775


@dataclass(frozen=True, slots=True)
class Layout:
    """Where this host's libvirt keeps a VM's sockets.

    Attributes:
        embed_root: the root of an embedded QEMU driver; None for a system libvirt,
            which uses the Engine's paths as they are.
        host: whether guests run on this host at all (not libvirt's `test:` driver,
            which binds no socket and needs no directory).
    """

    embed_root: Path | None = None
    host: bool = True


def layout_of(uri: str) -> Layout:
    """The layout behind a libvirt URI (`qemu:///embed?root=R` is embedded). Pure."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "test":
        return Layout(host=False)
    if parsed.path != "/embed":
        return Layout()
    roots = urllib.parse.parse_qs(parsed.query).get("root")
    return Layout(Path(roots[0]) if roots else None)


@dataclass(frozen=True, slots=True)
class Localized:
    """A domain XML made ready for this host, and what must exist before it runs.

    Attributes:
        xml: the XML to launch.
        directories: directories its sockets go in (create them first).
        listen_networks: display networks its graphics listen on (`vdsm-…`),
            to check against libvirt by `prepare`.
    """

    xml: str
    directories: tuple[Path, ...] = ()
    listen_networks: tuple[str, ...] = field(default=())


def localize(xml: str, layout: Layout) -> Localized:
    """Map the Engine's socket paths in `xml` onto `layout`. Pure; does not block.

    Raises:
        InvalidArgument: `xml` is not well-formed.
    """
    root = _parse(xml)
    directories: set[Path] = set()
    changed = _map_nvram(root, layout, directories)
    devices = root.find("devices")
    if devices is None:
        return Localized(
            ET.tostring(root, encoding="unicode") if changed else xml,
            directories=tuple(sorted(directories)),
        )
    for device in devices:
        if device.tag not in _CHARDEVS or device.get("type") != "unix":
            continue
        source = device.find("source")
        path = source.get("path") if source is not None else None
        if source is None or not path:
            continue
        mapped = _map_socket(PurePosixPath(path), device, layout)
        if mapped is None:
            del source.attrib["path"]
            changed = True
            continue
        if str(mapped) != path:
            source.set("path", str(mapped))
            changed = True
        directories.add(Path(mapped.parent))
    networks = tuple(
        listen.get("network", "")
        for graphics in devices.iterfind("graphics")
        for listen in graphics.iterfind("listen")
        if listen.get("type") == "network"
    )
    return Localized(
        xml=ET.tostring(root, encoding="unicode") if changed else xml,
        directories=tuple(sorted(directories)),
        listen_networks=networks,
    )


def _map_nvram(root: ET.Element, layout: Layout, directories: set[Path]) -> bool:
    """Map the Engine's `<os><nvram>` file under an embed root; True if it changed.

    The Engine names `/var/lib/libvirt/qemu/nvram/<vmId>.fd`; an embedded libvirt
    must not write outside its root and does not create the file's directory, so the
    file goes to its own NVRAM directory there, which `prepare` creates.
    """
    nvram = root.find("os/nvram")
    text = (nvram.text or "").strip() if nvram is not None else ""
    if nvram is None or not text or layout.embed_root is None:
        return False
    path = PurePosixPath(text)
    if path.parent != ENGINE_NVRAM_DIR:
        return False  # not the Engine's path: the client meant it as it is
    mapped = PurePosixPath(layout.embed_root) / EMBED_NVRAM_DIR / path.name
    nvram.text = str(mapped)
    directories.add(Path(mapped.parent))
    return True


def _map_socket(path: PurePosixPath, device: ET.Element, layout: Layout) -> PurePosixPath | None:
    """Where the socket at `path` goes on this host; None: let libvirt choose one."""
    if layout.embed_root is None:
        return path
    short = ENGINE_DIRS.get(path.parent)
    if short is None:
        return path  # not a path the Engine makes up: the client meant it as it is
    mapped = PurePosixPath(layout.embed_root) / short / path.name
    if len(str(mapped)) <= MAX_SOCKET_PATH:
        return mapped
    target = device.find("target")
    if device.tag == "channel" and target is not None and target.get("name"):
        return None  # a named virtio channel: libvirt generates a short path
    shorter = PurePosixPath(layout.embed_root) / short / (path.name[:8] + path.suffix)
    if len(str(shorter)) > MAX_SOCKET_PATH:
        raise InvalidArgument(
            param="xml", reason=f"socket {path} has no short enough path under {layout.embed_root}"
        )
    return shorter


def resolve_listen(xml: str, missing: set[str], address_of: Callable[[str], str | None]) -> str:
    """Return `xml` with graphics listening on each `missing` network listening on an address.

    `address_of(interface)` gives the interface's IPv4 address, or None. Pure but for
    that callable.
    """
    if not missing:
        return xml
    root = _parse(xml)
    for graphics in root.iterfind("devices/graphics"):
        for listen in graphics.iterfind("listen"):
            network = listen.get("network", "")
            if listen.get("type") != "network" or network not in missing:
                continue
            interface = network.removeprefix(DISPLAY_NETWORK_PREFIX)
            address = address_of(interface) or FALLBACK_LISTEN
            log.info(
                "display network %s is not a libvirt network here; graphics listen on %s",
                network,
                address,
            )
            listen.attrib.clear()
            listen.set("type", "address")
            listen.set("address", address)
            if graphics.get("listen") not in (None, address):
                graphics.set("listen", address)
    return ET.tostring(root, encoding="unicode")


def interface_address(name: str) -> str | None:
    """The first IPv4 address of host interface `name`, or None (blocks briefly)."""
    for address in psutil.net_if_addrs().get(name, ()):
        if address.family == socket.AF_INET:
            return str(address.address)
    return None


def prepare(conn: Any, xml: str) -> str:
    """Make the host ready for `xml` and return the XML to launch (blocking).

    Runs on a worker: creates the socket directories, and asks libvirt whether each
    display network exists.

    Raises:
        InvalidArgument: the XML is not well-formed, or a socket cannot be placed.
        OSError: a directory could not be created.
    """
    layout = layout_of(conn.getURI())
    if not layout.host:
        return xml
    localized = localize(xml, layout)
    for directory in localized.directories:
        if not directory.is_dir():
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            log.info("created %s for the sockets of VMs", directory)
    missing = {
        network
        for network in localized.listen_networks
        if layout.embed_root is not None or not _has_network(conn, network)
    }
    xml = resolve_listen(localized.xml, missing, interface_address)
    return without_spice_tls(xml) if layout.embed_root is not None else xml


def without_spice_tls(xml: str) -> str:
    """Return `xml` with SPICE's TLS port and secure channels removed. Pure."""
    root = _parse(xml)
    changed = False
    for graphics in root.iterfind("devices/graphics"):
        if graphics.get("type") != "spice":
            continue
        for name in ("tlsPort", "defaultMode"):
            if name in graphics.attrib:
                del graphics.attrib[name]
                changed = True
        for channel in graphics.findall("channel"):
            graphics.remove(channel)
            changed = True
    if not changed:
        return xml
    log.info("SPICE TLS is not configured for the embedded libvirt; SPICE runs without TLS")
    return ET.tostring(root, encoding="unicode")


def _has_network(conn: Any, name: str) -> bool:
    try:
        conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def _parse(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - checked by domxml.check_untrusted first
    except ET.ParseError as error:
        raise InvalidArgument(param="xml", reason=f"not well-formed XML: {error}") from None
