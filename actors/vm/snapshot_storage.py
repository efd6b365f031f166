"""The storage read a live snapshot needs: the Engine's new volume, ready for qemu.

A snapshot's new volume sits on a chain the VM already runs on (prepared when the
VM started, or by the last snapshot): checking the whole chain again, as a VM's
first prepare does (`VolumeData`: each member's metadata, and `qemu-img info` of
each for its size), would cost a process per layer and grow with every snapshot.
`NewLeaf` reads the new volume only, on the domain's reader (a `DomainRead`, asked
through the pool as `StorageApi.prepare_disk` asks its reads): it exists, is LEGAL,
and its path and qemu format are what libvirt is given. The leaf is made writable by
its owner and group, as a prepare makes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hostvisor.actors.storage.domain_ops import DomainRead
from hostvisor.actors.storage.errors import ImageIsNotLegalChain
from hostvisor.actors.storage.filevolume import VOLUME_MODE
from hostvisor.actors.storage.model import Legality, VolumeFormat

if TYPE_CHECKING:
    from hostvisor.actors.storage.filedomain import FileDomain


@dataclass(frozen=True, slots=True, kw_only=True)
class NewLeaf(DomainRead[tuple[str, str, int]]):
    """A volume's (path, qemu format, capacity), the volume itself checked LEGAL."""

    img: str
    vol: str
    op = "prepare"

    def apply(self, domain: FileDomain) -> tuple[str, str, int]:
        """Read the volume's metadata (a worker thread; blocks briefly).

        Raises:
            ImageDoesNotExistInSD / VolumeDoesNotExist: no such image or volume.
            ImageIsNotLegalChain: the volume is not LEGAL or its data file is missing.
        """
        info = domain.volume_info(self.img, self.vol)
        if info["legality"] != Legality.LEGAL or info["status"] != "OK":
            raise ImageIsNotLegalChain(imgUUID=self.img, illegal=self.vol)
        path = domain.volume_path(self.img, self.vol)
        path.chmod(VOLUME_MODE)
        return str(path), VolumeFormat[info["format"]].qemu_format, int(info["capacity"])
