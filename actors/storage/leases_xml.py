"""A VM's `<lease>` devices as the Engine sends them, filled in with Lease.info (pure).

The Engine does not know where a VM lease lives on a host's mount, so its domain
XML names the lease and leaves placeholders (VDSM's virt/vmdevices/lease.py)::

    <lease>
      <key>LEASE_ID</key>
      <lockspace>SD_ID</lockspace>
      <target offset="LEASE-OFFSET:LEASE_ID:SD_ID" path="LEASE-PATH:LEASE_ID:SD_ID"/>
    </lease>

Before the VM starts, the host looks each lease up (`LeaseInfoRead` on the domain,
actors/storage/leases.py) and writes its own path and offset in; libvirt's sanlock
lock manager then acquires it for QEMU. The XML is edited as text, so nothing
else in it (namespaced metadata, formatting) changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

_LEASE: Final = re.compile(r"<lease\b.*?</lease>", re.DOTALL)
_KEY: Final = re.compile(r"<key>\s*([^<\s]+)\s*</key>")
_LOCKSPACE: Final = re.compile(r"<lockspace>\s*([^<\s]+)\s*</lockspace>")
_PLACEHOLDER: Final = re.compile(r"""(path|offset)=(["'])LEASE-(?:PATH|OFFSET)(?::[^"']*)?\2""")

LeaseKey = tuple[str, str]
"""(sd_id, lease_id)."""


def leases_to_fill(xml: str) -> list[LeaseKey]:
    """The (sd_id, lease_id) of every `<lease>` whose target still holds a placeholder."""
    found = []
    for match in _LEASE.finditer(xml):
        device = match.group(0)
        key, lockspace = _KEY.search(device), _LOCKSPACE.search(device)
        if key and lockspace and _PLACEHOLDER.search(device):
            found.append((lockspace.group(1), key.group(1)))
    return found


def fill_leases(xml: str, infos: Mapping[LeaseKey, Mapping[str, Any]]) -> str:
    """`xml` with each placeholder replaced by its lease's `path` and `offset` (Lease.info).

    Raises:
        KeyError: a lease with a placeholder is missing from `infos`.
    """

    def device(match: re.Match[str]) -> str:
        text = match.group(0)
        key, lockspace = _KEY.search(text), _LOCKSPACE.search(text)
        if not (key and lockspace and _PLACEHOLDER.search(text)):
            return text
        info = infos[(lockspace.group(1), key.group(1))]

        def value(attr: re.Match[str]) -> str:
            name, quote = attr.group(1), attr.group(2)
            return f"{name}={quote}{info[name]}{quote}"

        return _PLACEHOLDER.sub(value, text)

    return _LEASE.sub(device, xml)
