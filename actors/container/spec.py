"""ContainerSpec: how a VM whose custom properties say `containerType=docker` runs.

The Engine sends a container VM as any other VM: a libvirt domain XML whose
`<metadata><ovirt-vm:vm><ovirt-vm:custom>` carries the VM's custom properties
(reference/vdsm-wire.md §6):

- `containerType`: the runtime; only `docker` is known.
- `containerImage`: the image to run, any reference docker accepts
  (`busybox`, `registry.example/app:1.2`, `sha256:…`).
- `volumeMap`: `disk:label[,disk:label…]`, e.g. `vda:data`: the source of the
  domain's disk whose target is `vda` (a file, a block device or a directory) is
  bind-mounted in the container at `/data` (a label that starts with `/` is used as
  the mount point as is). A disk marked `<readonly/>` is mounted read-only.

Only memory and CPU settings are honoured, as VDSM did: `<memory>` becomes the
memory limit (swap included, so the container cannot grow past it), `<vcpu>` the
CPU quota (one host CPU's worth of time per vCPU, or libvirt's per-vCPU
`<cputune><quota>` and `<period>` when given) and `<cputune><shares>` the CPU
shares. Every other device is ignored.

The container carries everything needed to rebuild its actor in labels, so docker
alone is the source of truth (DESIGN rule 1):

- `org.ovirt.hostvisor.vm-id`: the VM id (events and recovery select on it);
- `org.ovirt.hostvisor.domain-xml`: the domain XML the VM was created from.

Its name is `hostvisor-<vm id>`, so docker itself refuses a second container for
the same VM.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.vm.domxml import DomainSpec
from hostvisor.actors.vm.errors import VmCreateError

RUNTIME = "docker"
LABEL_VM_ID = "org.ovirt.hostvisor.vm-id"
LABEL_DOMAIN_XML = "org.ovirt.hostvisor.domain-xml"
NAME_PREFIX = "hostvisor-"
CPU_PERIOD_US = 100_000
"""The CFS period when the domain XML gives none (the kernel's default, 100 ms)."""
_LABEL = re.compile(r"^/?[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """One `volumeMap` entry resolved against the domain's disks."""

    disk: str
    """The disk's target name (`vda`)."""
    source: str
    """The disk's path on the host."""
    target: str
    """Where the container sees it (`/data`)."""
    read_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerSpec:
    """Everything docker needs to run one container VM."""

    domain: DomainSpec
    image: str
    mounts: tuple[Mount, ...] = ()
    memory_bytes: int = 0
    """0: no limit."""
    cpu_period: int = CPU_PERIOD_US
    cpu_quota: int = 0
    """Microseconds of CPU per period for the whole container; 0: no quota."""
    cpu_shares: int = 0
    """0: docker's default weight."""
    network: str = "bridge"

    @property
    def vm_id(self) -> str:
        """The VM's id."""
        return self.domain.vm_id

    @property
    def name(self) -> str:
        """The container's name (`hostvisor-<vm id>`)."""
        return container_name(self.vm_id)

    @property
    def labels(self) -> dict[str, str]:
        """The labels that tie the container to its VM."""
        return {LABEL_VM_ID: self.vm_id, LABEL_DOMAIN_XML: self.domain.xml}

    def container_options(self) -> dict[str, Any]:
        """Keyword arguments of the SDK's low-level `create_container` (no host config)."""
        return {"image": self.image, "name": self.name, "labels": self.labels, "detach": True}

    def host_options(self) -> dict[str, Any]:
        """Keyword arguments of the SDK's `create_host_config` for this VM."""
        options: dict[str, Any] = {
            "network_mode": self.network,
            "mounts": [
                {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
                for m in self.mounts
            ],
        }
        if self.memory_bytes:
            options["mem_limit"] = self.memory_bytes
            options["memswap_limit"] = self.memory_bytes
        if self.cpu_quota:
            options["cpu_period"] = self.cpu_period
            options["cpu_quota"] = self.cpu_quota
        if self.cpu_shares:
            options["cpu_shares"] = self.cpu_shares
        return options


def container_name(vm_id: str) -> str:
    """The docker name of the container of VM `vm_id`."""
    return f"{NAME_PREFIX}{vm_id}"


def container_spec(domain: DomainSpec, *, network: str = "bridge") -> ContainerSpec:
    """Read a container VM's settings from its domain XML.

    Raises:
        VmCreateError: not a docker VM, no image, or a `volumeMap` that does not
            match the domain's disks.
    """
    runtime = domain.container_type
    if runtime != RUNTIME:
        raise VmCreateError(
            vmId=domain.vm_id,
            reason=f"containerType {runtime!r} is not supported; Hostvisor runs {RUNTIME!r}",
        )
    image = domain.custom.get("containerImage", "").strip()
    if not image:
        raise VmCreateError(vmId=domain.vm_id, reason="containerImage is required")
    root = ET.fromstring(domain.xml)  # noqa: S314 - parsed once already by domxml.parse
    period, quota, shares = _cpu_tune(root, domain.vcpus)
    return ContainerSpec(
        domain=domain,
        image=image,
        mounts=_mounts(domain, root),
        memory_bytes=domain.memory_kib * 1024,
        cpu_period=period,
        cpu_quota=quota,
        cpu_shares=shares,
        network=network,
    )


def _cpu_tune(root: ET.Element, vcpus: int) -> tuple[int, int, int]:
    """(period µs, quota µs for all vCPUs or 0, shares or 0) from `<cputune>`."""
    period = _int(root.findtext("cputune/period"), CPU_PERIOD_US)
    per_vcpu = _int(root.findtext("cputune/quota"), period)
    quota = 0 if per_vcpu < 0 else per_vcpu * max(1, vcpus)  # libvirt: -1 is no limit
    return period, quota, max(0, _int(root.findtext("cputune/shares"), 0))


def _int(text: str | None, default: int) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return default


def _mounts(domain: DomainSpec, root: ET.Element) -> tuple[Mount, ...]:
    text = domain.custom.get("volumeMap", "").strip()
    if not text:
        return ()
    disks = _disks(root)
    mounts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        disk, sep, label = item.partition(":")
        disk, label = disk.strip(), label.strip()
        if not sep or not disk or not _LABEL.match(label) or ".." in label.split("/"):
            raise VmCreateError(
                vmId=domain.vm_id, reason=f"volumeMap entry {item!r} is not 'disk:label'"
            )
        if disk not in disks:
            raise VmCreateError(
                vmId=domain.vm_id,
                reason=f"volumeMap names disk {disk!r}, which the domain XML does not have "
                "(or it has no source path)",
            )
        source, read_only = disks[disk]
        target = label if label.startswith("/") else f"/{label}"
        mounts.append(Mount(disk=disk, source=source, target=target, read_only=read_only))
    return tuple(mounts)


def _disks(root: ET.Element) -> dict[str, tuple[str, bool]]:
    """Each disk's target name -> (source path, read-only)."""
    disks = {}
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or source is None:
            continue
        path = source.get("file") or source.get("dev") or source.get("dir")
        if path and target.get("dev"):
            disks[target.get("dev", "")] = (path, disk.find("readonly") is not None)
    return disks
