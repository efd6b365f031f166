"""Typed clients of the VM actors: what api/ and supervision/ call them through.

Each method sends the call of the actor's method of the same name and returns at
once with a future of its answer (`hostvisor.actors.actor.call`: the message a
pykka proxy sends, without building one per call). This module is the only place
those method names are strings, next to the actors, so a misspelt call fails
mypy, not a client. Read a future with a timeout, or await it on the API loop
(`hostvisor.api.rpc.bridge.settled`). Asks to a dead actor fail with
`pykka.ActorDeadError` when the future is read.

An operation (`pause`, `cont`, `reset`, `shutdown`, `destroy`, `set_balloon_target`)
answers with a second future, which settles once libvirt has done the work: await
both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, final

import pykka

from hostvisor.actors.actor import call
from hostvisor.actors.guest.board import Rendered
from hostvisor.actors.guest.entry import VmEntry

Rendering = Literal["brief", "info", "stats", "definition"]
"""The answers every VM actor and the board render from an entry."""

UnsupportedVerb = Literal["snapshot"]
"""VM verbs a libvirt VM has and a container VM does not, sent by name before their params
are checked: the container's actor answers them code 75."""

Operation = pykka.Future[None]
"""Settles once the guest's runtime has done the work (or fails with its error)."""


class VmProxy:
    """Calls to one VmActor (or any actor answering the VM verbs: see ContainerProxy).

    Thread-safe and cheap: it holds the ref only; make one per call site.
    """

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the actor behind `ref`."""
        self.ref = ref

    # -- answers (fast, from the actor's state) -------------------------------------------

    def brief(self) -> pykka.Future[dict[str, Any]]:
        """`{vmId, status}` (getVMList with onlyUUID=false)."""
        return call(self.ref, "brief")

    def info(self) -> pykka.Future[dict[str, Any]]:
        """The VM's status fields (VM.getInfo)."""
        return call(self.ref, "info")

    def stats(self) -> pykka.Future[dict[str, Any]]:
        """VM.getStats' entry: status fields and the last sampled figures."""
        return call(self.ref, "stats")

    def definition(self) -> pykka.Future[dict[str, Any]]:
        """Host.getVMFullList's entry: the status fields and the domain XML."""
        return call(self.ref, "definition")

    def rendered(self, kind: Rendering) -> pykka.Future[dict[str, Any]]:
        """The answer named `kind`: `brief`, `info`, `stats` or `definition`."""
        return call(self.ref, kind)

    def entry(self) -> pykka.Future[VmEntry]:
        """What the VM reports now, frozen."""
        return call(self.ref, "entry")

    # -- operations (each answers a future of the work) -----------------------------------

    def pause(self) -> pykka.Future[Operation]:
        """Suspend the guest's vCPUs. Raises (in the future) VmIsDown, Conflict."""
        return call(self.ref, "pause")

    def cont(self) -> pykka.Future[Operation]:
        """Resume a paused guest."""
        return call(self.ref, "cont")

    def reset(self) -> pykka.Future[Operation]:
        """Reset the guest."""
        return call(self.ref, "reset")

    def shutdown(
        self, *, timeout: float, reboot: bool = False, force: bool = False
    ) -> pykka.Future[Operation]:
        """Shut the guest down (ACPI) or reboot it; forced off after `timeout` s if `force`."""
        return call(self.ref, "shutdown", timeout=timeout, reboot=reboot, force=force)

    def destroy(self) -> pykka.Future[Operation]:
        """Kill the guest if it runs (idempotent)."""
        return call(self.ref, "destroy")

    def set_balloon_target(self, target_kib: int) -> pykka.Future[Operation]:
        """Set the guest's balloon target, KiB.

        Raises (in the futures) InvalidArgument, BalloonError, NoSuchVm; a
        container VM's actor answers UnsupportedOperation (75).
        """
        return call(self.ref, "set_balloon_target", target_kib)

    def migrate(self, params: Mapping[str, Any]) -> pykka.Future[None]:
        """Start migrating the VM as the Engine's `params` say (returns once started)."""
        return call(self.ref, "migrate", params)

    def migrate_cancel(self) -> pykka.Future[None]:
        """Cancel the VM's outgoing migration."""
        return call(self.ref, "migrate_cancel")

    def migration_status(self) -> pykka.Future[dict[str, Any]]:
        """The outgoing migration's `migrationStats`."""
        return call(self.ref, "migration_status")

    def unsupported(self, verb: UnsupportedVerb) -> pykka.Future[Any]:
        """Send `verb`, which the actor's runtime declares unsupported: fails with code 75."""
        return call(self.ref, verb)


@final
class VmBoardProxy:
    """Calls to the VM board (`hostvisor.actors.vm.addresses.VM_BOARD`)."""

    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Call the board behind `ref`."""
        self.ref = ref

    def render(
        self, kind: Rendering, vm_ids: Iterable[str], *, orphans: bool = True
    ) -> pykka.Future[Rendered]:
        """Render `kind` of each of `vm_ids`; those it has no entry for are `missing`.

        With `orphans`, every VM whose actor is down is rendered too.
        """
        return call(self.ref, "render", kind, vm_ids, orphans=orphans)

    def entries(self) -> pykka.Future[dict[str, VmEntry]]:
        """Every entry the board holds (orphans included), by VM id."""
        return call(self.ref, "entries")

    def size(self) -> pykka.Future[int]:
        """How many entries the board holds."""
        return call(self.ref, "size")
