"""MemoryActor: MOM's job for this host — balloons and KSM by MOM's default policy.

Every `interval` seconds a round runs, as messages:

    PolicyRound --(worker: /proc/meminfo, QEMU sizes, one getAllDomainStats, KSM sysfs)-->
        averaged into the window -> decide() (pure, mompolicy)
        -> KSM knobs that change --(worker: sysfs writes)--> round done
        -> each balloon target handed to `set_balloon` (a tell to the VM's owner)

One round at a time: a tick that comes while one runs is dropped. The Engine's
`Host.setMOMPolicyParameters` changes the policy's parameters (a new round runs at
once); `Host.setKsmTune` writes KSM's knobs directly, as VDSM's supervdsm does (the
next round may change them again, as MOM would).

Held in memory only: the parameters (the Engine sends them on every host
activation, as it does to VDSM, whose MOM also forgets them on restart) and the
averaging window (rebuilt by sampling). Nothing blocks the actor's turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostvisor.actors import errors
from hostvisor.actors.actor import Actor
from hostvisor.actors.admin import ksm
from hostvisor.actors.admin.errors import KsmUpdateFailed, MomPolicyUpdateFailed
from hostvisor.actors.admin.memread import GuestReading, Reading, averaged, read_host
from hostvisor.actors.admin.mompolicy import Decision, PolicyParameters, Window, decide, updated
from hostvisor.actors.future import Later

log = logging.getLogger(__name__)

POLICY_INTERVAL = 10.0
"""Seconds between policy rounds (MOM's `policy-engine-interval` as VDSM configures it)."""

SetBalloon = Callable[[str, int], None]
"""Asks the owner of VM `vm_id` to set its balloon target (KiB). Called on the actor's
turn: it must only tell, never block."""

ReadGuests = Callable[[], tuple[GuestReading, ...]]
"""Returns every running guest's balloon (blocking; run on a worker)."""


def _no_guests() -> tuple[GuestReading, ...]:
    return ()


def _balloon_not_wired(vm_id: str, target_kib: int) -> None:
    log.info("balloon target of %s would be %d KiB: no VM seam wired", vm_id, target_kib)


@dataclass(frozen=True, slots=True)
class PolicyRound:
    """Tell (from the timer service, or after new parameters): run a policy round."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundReport:
    """What the last round decided and whether its KSM writes went through."""

    decision: Decision
    ksm_error: str | None = None


class MemoryActor(Actor):
    """Runs MOM's default memory policy on this host. Methods never block.

    Args:
        read_guests: returns every running guest's balloon (blocking, on a worker).
        set_balloon: hands a balloon target to the VM's owner (a tell).
        interval: seconds between rounds; 0 runs rounds only when told.
        ksm_root: KSM's sysfs directory (tests may point it elsewhere).
        read_host: returns the host's memory (blocking, on a worker).
        drive_ksm: whether rounds write the KSM knobs they decide. KSM is the whole
            machine's; a host whose libvirt is embedded in its own process (tests,
            development; several may share a machine) decides but leaves KSM alone.
            `set_ksm_tune` writes either way: it is an explicit request.
    """

    def __init__(
        self,
        *,
        read_guests: ReadGuests = _no_guests,
        set_balloon: SetBalloon = _balloon_not_wired,
        interval: float = POLICY_INTERVAL,
        ksm_root: Path = ksm.KSM_ROOT,
        read_host: Callable[[], Any] = read_host,
        drive_ksm: bool = True,
    ) -> None:
        """Keep the seams; nothing is read until `on_start`."""
        super().__init__()
        self._read_guests = read_guests
        self._set_balloon = set_balloon
        self._interval = interval
        self._ksm_root = ksm_root
        self._read_host = read_host
        self._drive_ksm = drive_ksm
        self._params = PolicyParameters()
        self._window = Window()
        self._busy = False
        self._again = False
        self._last: RoundReport | None = None
        self._rounds = 0

    def on_start(self) -> None:
        """Start the rounds (on the actor's turn; does not block)."""
        if self._interval > 0:
            self.tick_every(self._interval, PolicyRound(), first=min(1.0, self._interval))

    # -- the API's calls (on the actor's turn) ------------------------------------------------

    def parameters(self) -> PolicyParameters:
        """The policy's parameters now."""
        return self._params

    def set_parameters(self, key_value_store: Mapping[str, Any]) -> bool:
        """Lay the Engine's parameters over the policy's and run a round.

        Raises:
            MomPolicyUpdateFailed: a key is not a policy variable or a value not a
                boolean; nothing changes.
        """
        try:
            self._params = updated(self._params, key_value_store)
        except ValueError as error:
            raise MomPolicyUpdateFailed(reason=str(error)) from None
        log.info("memory policy parameters: %s", self._params)
        self._round()
        return True

    def set_ksm_tune(self, tuning: Mapping[str, Any]) -> Later:
        """Write KSM's knobs (answered once written, off the actor's turn).

        Raises (through the answer):
            KsmUpdateFailed: an unknown knob or a bad value (nothing is written),
                or the kernel refused a value.
        """
        try:
            values = ksm.checked(tuning)
        except ValueError as error:
            raise KsmUpdateFailed(reason=str(error)) from None
        reply = Later()
        root = self._ksm_root

        def written(outcome: Any) -> None:
            if isinstance(outcome, OSError):
                failure = KsmUpdateFailed(reason=f"{type(outcome).__name__}: {outcome}")
                reply.set_exception(exc_info=(KsmUpdateFailed, failure, None))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                reply.set(True)

        self.run_off(lambda: ksm.write(values, root), written, name="ksm-tune")
        return reply

    def status(self) -> str:
        """GetStats' `momStatus`: "active" while the policy runs (this actor answers)."""
        return "active"

    def last_round(self) -> RoundReport | None:
        """What the last finished round decided (for tests and the console)."""
        return self._last

    def rounds(self) -> int:
        """How many rounds have finished."""
        return self._rounds

    # -- rounds --------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle the timer's `PolicyRound`."""
        if isinstance(message, PolicyRound):
            self._round()
            return None
        return super().on_receive(message)

    def _round(self) -> None:
        if self._busy:
            self._again = True  # parameters changed meanwhile: one more round after this
            return
        self._busy = True
        root, read_host, read_guests = self._ksm_root, self._read_host, self._read_guests

        def read() -> Reading:
            return Reading(host=read_host(), ksm=ksm.read_state(root), guests=read_guests())

        self.run_off(read, self._read, name="memory-read")

    def _read(self, outcome: Any) -> None:
        if isinstance(outcome, errors.HostvisorError | OSError):
            log.warning("memory policy round skipped: %s", outcome)
            self._done(None)
            return
        if isinstance(outcome, BaseException):
            raise outcome
        decision = decide(averaged(self._window, outcome), self._params)
        for vm_id, target in decision.balloons.items():
            self._set_balloon(vm_id, target)
        if not decision.ksm or not self._drive_ksm:
            self._done(RoundReport(decision=decision))
            return
        log.info("KSM: %s", dict(decision.ksm))
        root, knobs = self._ksm_root, dict(decision.ksm)

        def applied(result: Any) -> None:
            if isinstance(result, OSError):
                log.warning("KSM refused %s: %s", knobs, result)
                self._done(RoundReport(decision=decision, ksm_error=str(result)))
            elif isinstance(result, BaseException):
                raise result
            else:
                self._done(RoundReport(decision=decision))

        self.run_off(lambda: ksm.write(knobs, root), applied, name="ksm-apply")

    def _done(self, report: RoundReport | None) -> None:
        self._busy = False
        self._rounds += 1
        if report is not None:
            self._last = report
        if self._again:
            self._again = False
            self._round()
