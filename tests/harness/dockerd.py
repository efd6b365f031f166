"""A private docker engine for tests, and a busybox image made without any registry.

`PrivateDockerd` runs `dockerd` (Debian's docker.io) in a network namespace of its
own (entered with `nsenter --net`, which keeps the host's cgroup mounts, unlike
`ip netns exec`), with its own socket, data root, exec root and pidfile in a short
/tmp directory, `--iptables=false --bridge=none` and the vfs storage driver
(ENVIRONMENT.md). Containers join `hvnet`, a bridge network inside that namespace
on 203.0.113.0/24 (a documentation range), so their network counters move without
touching the host's network. It is started and stopped by its own pid (`Daemon`);
`restart()` stops and starts the same engine on the same data root.

The image is imported from a tarball of `/usr/bin/busybox` (busybox-static) plus a
symlink per applet; its command sleeps until SIGTERM, then exits with `exit_status`.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.types

from harness.components import need
from harness.daemons import Daemon

BUSYBOX = Path("/usr/bin/busybox")
IMAGE = "hostvisor-test/busybox"
NETWORK = "hvnet"
SUBNET = "203.0.113.0/24"
GATEWAY = "203.0.113.1"
API_VERSION = "1.41"


def waiting_command(exit_status: int = 0) -> list[str]:
    """A container command that idles until SIGTERM, then exits with `exit_status`."""
    script = f"trap 'exit {exit_status}' TERM; while :; do sleep 1 & wait $!; done"
    return ["/bin/sh", "-c", script]


def busybox_rootfs() -> bytes:
    """A tarball of a root filesystem: /bin/busybox and a symlink per applet, /tmp."""
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for directory in ("tmp", "proc", "sys", "dev", "etc"):
            entry = tarfile.TarInfo(directory)
            entry.type = tarfile.DIRTYPE
            entry.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(entry)
    return buffer.getvalue()


def need_docker() -> None:
    """Skip (fail with CI=true) unless dockerd, busybox-static, nsenter and ip exist."""
    for tool in ("dockerd", "nsenter", "ip"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (Debian docker.io)")
    need(BUSYBOX.exists(), "busybox-static is not installed")


class PrivateDockerd:
    """One private docker engine: start, restart, stop by pid; clean up its namespace."""

    def __init__(self, *flags: str) -> None:
        """Make the namespace and directory; `flags` are more dockerd options."""
        need_docker()
        self.flags = flags
        self.directory = Path(tempfile.mkdtemp(prefix="hv-dk-", dir="/tmp"))
        self.socket = f"unix://{self.directory}/docker.sock"
        self.netns = f"hv-dk-{uuid.uuid4().hex[:8]}"
        self.runs: list[Daemon] = []
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True
        )
        self._client: docker.DockerClient | None = None

    @property
    def daemon(self) -> Daemon:
        """The running (last started) dockerd."""
        return self.runs[-1]

    @property
    def client(self) -> docker.DockerClient:
        """A docker SDK client of this engine (the test's own view of docker)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.socket, version=API_VERSION)
        return self._client

    def start(self) -> PrivateDockerd:
        """Start dockerd and wait until it answers."""
        d = self.directory
        argv = [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            "dockerd",
            f"--host={self.socket}",
            f"--data-root={d / 'data'}",
            f"--exec-root={d / 'exec'}",
            f"--pidfile={d / 'dockerd.pid'}",
            "--iptables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--shutdown-timeout=5",
            *self.flags,
        ]
        daemon = Daemon(argv, d / f"dockerd-{len(self.runs)}.log")
        self.runs.append(daemon)
        daemon.wait_ready(self.answers, timeout=60)
        return self

    def answers(self) -> bool:
        """Whether the engine answers a ping now."""
        try:
            return bool(self.client.ping())
        except (docker.errors.DockerException, OSError):
            return False
        except Exception:  # noqa: BLE001 - requests' errors while the socket appears
            return False

    def stop(self) -> int:
        """Stop dockerd by its pid (it stops its containers first); return its status."""
        status = self.daemon.stop(timeout=30)
        if self._client is not None:
            self._client.close()
            self._client = None
        return status

    def stop_engine(self) -> None:
        """Stop dockerd only (with --live-restore its containers keep running)."""
        self.stop()

    def restart(self) -> None:
        """Stop dockerd and start it again on the same data root and socket."""
        self.stop()
        self.start()

    def prepare(self) -> PrivateDockerd:
        """Import the busybox image and create the network.

        Tags: `latest` exits 0 on SIGTERM, `exit7` exits 7 on it, and `stubborn` is a
        bare `sleep` as PID 1, which never hears SIGTERM (only SIGKILL ends it).
        """
        rootfs = busybox_rootfs()
        for tag, status in (("latest", 0), ("exit7", 7)):
            self.import_image(rootfs, tag, waiting_command(status))
        self.import_image(rootfs, "stubborn", ["/bin/sleep", "86400"])
        self.client.networks.create(
            NETWORK,
            driver="bridge",
            ipam=docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=SUBNET, gateway=GATEWAY)]
            ),
        )
        return self

    def import_image(self, rootfs: bytes, tag: str, command: list[str]) -> str:
        """Import `rootfs` as `IMAGE:tag` whose command is `command`; return the reference."""
        quoted = ", ".join(f'"{part}"' for part in (arg.replace('"', '\\"') for arg in command))
        self.client.api.import_image_from_data(
            rootfs, repository=IMAGE, tag=tag, changes=[f"CMD [{quoted}]"]
        )
        return f"{IMAGE}:{tag}"

    def labelled(self) -> list[Any]:
        """Every container (running or not) that carries a VM label."""
        return self.client.containers.list(all=True, filters={"label": "org.ovirt.hostvisor.vm-id"})

    def close(self) -> None:
        """Remove every container, stop dockerd, delete its namespace and its directory.

        Containers go first: with --live-restore they would outlive dockerd.
        """
        with contextlib.suppress(IndexError):
            if self.daemon.alive():
                if self.answers():
                    for container in self.client.containers.list(all=True):
                        container.remove(force=True)
                self.stop()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)
        self.unmount()
        shutil.rmtree(self.directory, ignore_errors=True)

    def unmount(self) -> None:
        """Unmount what dockerd left mounted under its directory (a restarted dockerd
        bind-mounts its data root once more and unmounts it only once), deepest first."""
        for _ in range(16):
            mounted = [
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(f"{self.directory}/")
            ]
            if not mounted:
                return
            for point in sorted(mounted, key=len, reverse=True):
                subprocess.run(["umount", point], check=False)


OVIRT_VM_NS = "http://ovirt.org/vm/1.0"


def container_xml(  # noqa: PLR0913 - keyword-only options of one XML
    vm_id: str,
    *,
    image: str = f"{IMAGE}:latest",
    name: str = "ct",
    memory_mib: int = 64,
    vcpus: int = 1,
    custom: dict[str, str] | None = None,
    devices: str = "",
    cputune: str = "",
) -> str:
    """A domain XML as the Engine sends a container VM (custom properties in metadata).

    `custom` replaces the default properties (containerType=docker, containerImage).
    """
    properties = {"containerType": "docker", "containerImage": image} if custom is None else custom
    tags = "".join(f"<ovirt-vm:{k}>{v}</ovirt-vm:{k}>" for k, v in properties.items())
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>{cputune}
  <metadata><ovirt-vm:vm xmlns:ovirt-vm="{OVIRT_VM_NS}">
    <ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>
    <ovirt-vm:custom>{tags}</ovirt-vm:custom>
  </ovirt-vm:vm></metadata>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>{devices}
    <interface type='bridge'><source bridge='ovirtmgmt'/><model type='virtio'/></interface>
  </devices>
</domain>"""
