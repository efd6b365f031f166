"""One writer at a time of a VM's `ovirt-vm` metadata element.

Several parts of a VM keep state in that element of the live domain: the balloon
target, the guest's disk mapping, block jobs and replications, snapshot jobs and the
drives' volumes, hotplugged devices, device tunables. Each reads the element (or the
live XML), changes it and writes the whole element back, from a worker thread of the
work facility. Two such edits at once lose one of them — a stale write could undo a
snapshot's new `volumeID`. `editing(domain)` serialises them per domain: hold it from
the read to the write, and read inside it.

Worker threads only (the lock may be held for a libvirt round trip). Re-entrant, so
a helper that takes it may call another that does.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["editing"]


class _Holder:
    """A per-domain lock that can be referred to weakly (a bare RLock cannot)."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.RLock()


_holders: weakref.WeakValueDictionary[str, _Holder] = weakref.WeakValueDictionary()
_guard = threading.Lock()


@contextmanager
def editing(domain: Any) -> Iterator[None]:
    """Hold the domain's metadata lock for a read-modify-write (blocks while another holds it).

    Keyed by the domain's UUID (`UUIDString`, no libvirt round trip); forgotten once
    nobody holds or waits for it.
    """
    key = domain.UUIDString()
    with _guard:
        holder = _holders.get(key)
        if holder is None:
            holder = _holders[key] = _Holder()
    with holder.lock:
        yield
