"""Keep the agent's heap from holding on to memory a burst of work has freed.

glibc's malloc keeps freed memory for reuse: up to 8 arenas per core, each trimmed only
above a threshold that grows with the largest block freed (a 5 MiB request body raises
it to 5 MiB). After a storm of large requests RSS stays at its peak for good, which
reads as a leak on a host that runs for months. `tune()` sets, once at start and before
the tree's threads exist: two arenas, and fixed mmap and trim thresholds of 128 KiB —
large buffers go to mmap and back to the kernel when freed, and a heap's free top is
returned at once. The systemd unit sets the same through MALLOC_* variables, which
glibc reads before Python starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

SETTINGS = ((M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, 128 * 1024), (M_TRIM_THRESHOLD, 128 * 1024))


def tune() -> bool:
    """Apply the settings above (main thread, at start); False where malloc is not glibc's."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS)
    if not applied:
        log.warning("malloc tuning was refused; RSS may stay high after bursts")
    return applied
