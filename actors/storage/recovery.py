"""Storage recovery: reconnect the stored connections, start every domain's actor.

The sources of truth are outside the process: the connections this host made are
in its connection store (reconnected by their owner, the connections actor: after
a host boot the mounts are gone; after an agent restart they are still there and
reconnecting is a no-op), and each domain's metadata is on its mount. The pool
connection is persisted too; the pool actor reads it back in its own `on_start`.
The SPM role is not recovered: its lock died with the old process (or actor).

`recover_storage` is a plain function over injected callables, run by the storage
branch's recoverer whenever the branch starts. A failed connection is logged and
left out; it never keeps the host from opening.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


def recover_storage(
    *,
    reconnect: Callable[[], Sequence[dict[str, Any]]],
    adopt_all: Callable[[], int],
) -> int:
    """Reconnect the stored storage servers, then start an actor for every domain found.

    Args:
        reconnect: reconnects every stored connection; returns [{id, status}] (blocks).
        adopt_all: starts an actor for each domain on the connected mounts that has
            none; returns how many domains have one (blocks).

    Returns how many domains are managed. Raises what the callables raise (the
    recoverer then crashes and is restarted, retrying).
    """
    for status in reconnect():
        if status["status"] != 0:
            log.error("storage connection %s failed: code %d", status["id"], status["status"])
    return adopt_all()
