"""A volume on storage that crawls: its file a FIFO that a reader drains slowly.

libvirt writes a memory dump (a save, a snapshot with memory) through its iohelper
into whatever the volume's path names; when that is a FIFO read at 8 KiB/s, the
dump of a guest with hundreds of MiB of memory takes minutes, as on an overloaded
NFS server, and the reader decides when the storage recovers (`hurry`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

SLOW_CHUNK, SLOW_PAUSE = 4096, 0.5


def make_crawling(path: Path) -> SlowReader:
    """Replace the volume file at `path` by a FIFO, and start its slow reader."""
    path.unlink()
    os.mkfifo(path, 0o660)
    return SlowReader(path)


class SlowReader:
    """Reads a FIFO at a crawl until `hurry()`, then drains it to its end."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.read = 0
        self._fast = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.fifo.open("rb", buffering=0) as fifo:
            while True:
                chunk = fifo.read(1 << 20 if self._fast.is_set() else SLOW_CHUNK)
                if not chunk:
                    return
                self.read += len(chunk)
                if not self._fast.is_set():
                    self._fast.wait(SLOW_PAUSE)

    def hurry(self) -> None:
        """The storage recovers: drain at full speed from now on."""
        self._fast.set()

    def stop(self) -> None:
        """Drain whatever comes; if no writer ever opened the FIFO, open one to end it."""
        self._fast.set()
        if self._thread.is_alive():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        self._thread.join(30)
