"""VmBoard: every VM's last entry, so a listing over all VMs is one ask.

Each VmActor tells the board a fresh `VmEntry` whenever what it reports changes
(tells go up). `Host.getAllVmStats`, `getVMFullList`, `dumpxmls` and `getVMList`
ask the board once, instead of asking a thousand actors and waiting on a thousand
threads. The board is a cache, not a source of truth: the caller says which VMs
exist (the guest supervisors' children), and a VM the board has no entry for (the
board restarted) is named in `missing` for the caller to ask directly.

A VM's actor that stops or crashes tells `Forget`, but its guest may well run on
(the actor is being restarted, is given up for a backoff, or its branch restarts):
the board keeps its last entry as an *orphan*, and a listing that asks for orphans
shows it with its last known status — to the Engine a VM missing from a listing has
gone down, and an HA VM would be started elsewhere. An orphan ends when the VM's actor
posts again, when `VM.destroy` drops it (`Drop`), or when a recovery settles the
board (`Settle`): a VM that no supervisor holds after its branch re-read the source
of truth is really gone. Listings render every entry the board holds, not only the
VMs the caller names: while a branch restarts, its supervisor holds no VM at all.
An entry kept from an incarnation that stopped is refreshed by the VM's next post
(its next change or sample).
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
class Drop:
    """Tell (from `VM.destroy`, once the VM's actor is deleted): the VM is gone for good."""

    vm_id: str


@dataclass(frozen=True, slots=True)
class Settle:
    """Tell (from the `vms` recoverer, after each recovery): drop every VM not in `keep`.

    `keep` holds every VM a guest supervisor holds now, running or not. An entry of a
    VM just created whose supervisor had not yet published it is dropped too: the
    listing then asks that VM directly, and its next post puts it back.
    """

    keep: frozenset[str]


@dataclass(frozen=True, slots=True)
class Rendered:
    """The answer of `VmBoard.render`."""

    answers: list[dict[str, Any]]
    missing: list[str]
    """Requested VMs the board has no entry for."""


class VmBoard(Actor):
    """Holds the last entry of every VM; renders answers over many VMs at once.

    Every method runs on the board's thread and returns at once.
    """

    def __init__(self) -> None:
        """Start empty: VmActors post on their next change or sample."""
        super().__init__()
        self._entries: dict[str, VmEntry] = {}
        self._orphans: dict[str, VmEntry] = {}
        """Last entries of VMs whose actor stopped, by VM id (see the module doc)."""

    def on_receive(self, message: Any) -> Any:
        """Store posted entries; keep stopped VMs' entries as orphans; drop gone VMs."""
        match message:
            case Post(entry):
                self._entries[entry.vm_id] = entry
                self._orphans.pop(entry.vm_id, None)
            case PostMany(entries):
                held = self._entries
                orphans = self._orphans
                for entry in entries:
                    held.setdefault(entry.vm_id, entry)
                    orphans.pop(entry.vm_id, None)
            case Forget(vm_id):
                last = self._entries.pop(vm_id, None)
                if last is not None:
                    self._orphans[vm_id] = last
            case Drop(vm_id):
                self._entries.pop(vm_id, None)
                self._orphans.pop(vm_id, None)
            case Settle(keep):
                self._entries = {k: v for k, v in self._entries.items() if k in keep}
                self._orphans = {k: v for k, v in self._orphans.items() if k in keep}
            case _:
                return super().on_receive(message)
        return None

    def render(self, kind: str, vm_ids: Iterable[str], *, orphans: bool = True) -> Rendered:
        """Render `kind` ("brief", "info", "stats", "definition") of each of `vm_ids`.

        A VM whose actor is down answers its last entry. With `orphans` (the default),
        every other VM the board holds is rendered too, after them: a listing must show
        every VM that may run — the caller names the VMs its supervisors hold, and a VM
        whose supervisor is restarting is held by none (a caller that wanted only some
        VMs filters). Raises InvalidArgument for an unknown `kind`.
        """
        try:
            rendering = RENDERINGS[kind]
        except KeyError:
            raise InvalidArgument(reason=f"unknown rendering {kind!r}") from None
        now = self.clock.monotonic()
        answers = []
        missing = []
        entries = self._entries
        lost = self._orphans
        seen = set()
        for vm_id in vm_ids:
            seen.add(vm_id)
            entry = entries.get(vm_id) or lost.get(vm_id)
            if entry is None:
                missing.append(vm_id)
            else:
                answers.append(rendering(entry, now))
        if orphans and len(answers) < len(entries) + len(lost):  # some were not asked for
            for held in (entries, lost):
                answers.extend(rendering(e, now) for vm_id, e in held.items() if vm_id not in seen)
        return Rendered(answers=answers, missing=missing)

    def entries(self) -> dict[str, VmEntry]:
        """Every entry the board holds, orphans included, by VM id (a copy; entries are frozen).

        For the metrics: a scrape renders them off the board's thread, so the board
        answers at once and `getAllVmStats` never waits behind a scrape's rendering.
        """
        return {**self._orphans, **self._entries}

    def size(self) -> int:
        """How many entries the board holds (orphans included)."""
        return len(self._entries) + len(self._orphans)

    def orphans(self) -> frozenset[str]:
        """The VMs whose actor is down and whose last entry the board keeps."""
        return frozenset(self._orphans)
