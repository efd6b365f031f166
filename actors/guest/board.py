"""VmBoard: every VM's last entry, so a listing over all VMs is one ask.

Each VmActor tells the board a fresh `VmEntry` whenever what it reports changes
(tells go up). `Host.getAllVmStats`, `getVMFullList`, `dumpxmls` and `getVMList`
ask the board once, instead of asking a thousand actors and waiting on a thousand
threads. The board is a cache, not a source of truth: the caller says which VMs
exist (the `vms` supervisor's children), so the entry of a VM gone is never shown
(a VmActor forgets its entry when it stops), and a VM the board has no entry for
(the board restarted) is named in `missing` for the caller to ask directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hostvisor.actors.actor import Actor
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.guest.entry import RENDERINGS, VmEntry


@dataclass(frozen=True, slots=True)
class Post:
    """Tell (from a VmActor): this is what I report now."""

    entry: VmEntry


@dataclass(frozen=True, slots=True)
class PostMany:
    """Tell (from the `vms` recoverer): the first entries of the VMs it just adopted.

    One message instead of one wake-up of the board per adopted VM. An entry the board
    already holds is newer (that VM's actor posted since) and is kept.
    """

    entries: tuple[VmEntry, ...]


@dataclass(frozen=True, slots=True)
class Forget:
    """Tell (from a VmActor that stopped): drop my entry."""

    vm_id: str


@dataclass(frozen=True, slots=True)
class Rendered:
    """The answer of `VmBoard.render`."""

    answers: list[dict[str, Any]]
    missing: list[str]
    """Requested VMs the board has no entry for."""


class VmBoard(Actor):
    """Holds the last entry of every VM; renders answers over many VMs at once."""

    def __init__(self) -> None:
        """Start empty: VmActors post on their next change or sample."""
        super().__init__()
        self._entries: dict[str, VmEntry] = {}

    def on_receive(self, message: Any) -> Any:
        """Store posted entries; forget stopped VMs."""
        match message:
            case Post(entry):
                self._entries[entry.vm_id] = entry
            case PostMany(entries):
                held = self._entries
                for entry in entries:
                    held.setdefault(entry.vm_id, entry)
            case Forget(vm_id):
                self._entries.pop(vm_id, None)
            case _:
                return super().on_receive(message)
        return None

    def render(self, kind: str, vm_ids: Iterable[str]) -> Rendered:
        """Render `kind` ("brief", "info", "stats", "definition") of each of `vm_ids`."""
        try:
            rendering = RENDERINGS[kind]
        except KeyError:
            raise InvalidArgument(reason=f"unknown rendering {kind!r}") from None
        now = self.clock.monotonic()
        answers = []
        missing = []
        entries = self._entries
        for vm_id in vm_ids:
            entry = entries.get(vm_id)
            if entry is None:
                missing.append(vm_id)
            else:
                answers.append(rendering(entry, now))
        return Rendered(answers=answers, missing=missing)

    def size(self) -> int:
        """How many entries the board holds."""
        return len(self._entries)
