"""One embedded-QEMU connection per process, however often it is opened."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from hostvisor.actors.hypervisor.connection import embed_uri, open_connection

# libvirt 9.0 refuses the 17th `qemu:///embed` open of a process ("Too many drivers,
# cannot register QEMU"), even with another connection still open.
OPENS = 40


@pytest.mark.libvirt
def test_the_embedded_driver_can_be_opened_any_number_of_times(embed_root: Path):
    uri = embed_uri(embed_root)
    kept = open_connection(uri)
    for _ in range(OPENS):
        conn = open_connection(uri)
        assert conn.getType() == "QEMU"
        conn.close()
    assert kept.isAlive()  # closing other handles leaves this one working
    kept.close()
    with pytest.raises(libvirt.libvirtError, match="closed"):
        kept.getURI()
    kept.close()  # idempotent
