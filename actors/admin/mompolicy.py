"""The memory policy MOM runs for VDSM, as pure functions of one sample.

VDSM leaves memory to MOM, which evaluates its default policy files
(`02-balloon.policy`, `03-ksm.policy`) every policy interval over the host's and
each running guest's statistics, and applies the controls they set: a balloon
target per guest (VM.setBalloonTarget) and KSM's sysfs knobs (Host.setKsmTune).
Here the same rules are plain functions: `decide(sample, params)` returns the
`Decision` (balloon targets, KSM knobs that change) and touches nothing; the
memory actor (`hostvisor.actors.admin.memory`) takes the samples and applies it.

Units are MOM's: memory in KiB, `mem_free` the host's free memory including
buffers and page cache (MemFree + Buffers + Cached), `mem_available` its total.
The "averaged" fields are MOM's `StatAvg`: the mean over the last samples
(`Window`), the others are the latest value.

Everything here is pure and runs on whatever thread calls it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# -- 02-balloon.policy's constants ----------------------------------------------------------
PRESSURE_THRESHOLD = 0.20
"""Below this fraction of free host memory the host is under pressure."""
PRESSURE_CRITICAL = 0.05
"""At or below it the pressure is critical: guests are squeezed into swapping."""
MIN_GUEST_FREE_PERCENT = 0.20
"""The free fraction an unconstrained guest keeps."""
MAX_BALLOON_CHANGE_PERCENT = 0.05
"""A balloon moves by at most this fraction of its current size per round."""
MIN_BALLOON_CHANGE_PERCENT = 0.0025
"""Smaller changes than this fraction of the current size are not worth doing."""

# -- 03-ksm.policy's constants --------------------------------------------------------------
KSM_PAGES_BOOST = 300
KSM_PAGES_DECAY = -50
KSM_NPAGES_MIN = 64
KSM_NPAGES_MAX = 1250
KSM_SLEEP_MS_BASELINE = 10
"""Milliseconds between scans on a 16 GiB host; bigger hosts sleep less."""
KSM_FREE_PERCENT = 0.20
_SIXTEEN_GIB_KIB = 16 * 1024 * 1024

KSM_STOP, KSM_RUN, KSM_UNMERGE = 0, 1, 2
"""The values of /sys/kernel/mm/ksm/run."""

HISTORY = 10
"""Samples MOM averages over (its `sample-history-length`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyParameters:
    """The tunables the Engine sets with Host.setMOMPolicyParameters (00-defines.policy)."""

    balloon_enabled: bool = False
    ksm_enabled: bool = True
    ksm_merge_across_nodes: bool = True


WIRE_NAMES = {
    "balloonEnabled": "balloon_enabled",
    "ksmEnabled": "ksm_enabled",
    "ksmMergeAcrossNodes": "ksm_merge_across_nodes",
}
"""setMOMPolicyParameters' keys -> `PolicyParameters` fields."""


def updated(params: PolicyParameters, key_value_store: Mapping[str, Any]) -> PolicyParameters:
    """Return `params` with the Engine's `key_value_store` laid over it.

    Values are booleans, or MOM's spelling of them (the integers 0 and 1, which
    00-defines.policy names False and True).

    Raises:
        ValueError: a key is not one of MOM's policy variables, or a value is not a
            boolean; nothing is changed then.
    """
    changes: dict[str, bool] = {}
    for key, value in key_value_store.items():
        name = WIRE_NAMES.get(key)
        if name is None:
            raise ValueError(f"{key!r} is not a policy variable")
        if isinstance(value, bool):
            changes[name] = value
        elif type(value) is int and value in {0, 1}:
            changes[name] = bool(value)
        else:
            raise ValueError(f"{key!r} must be a boolean, not {value!r}")
    return replace(params, **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class KsmState:
    """What /sys/kernel/mm/ksm says (HostKSM's fields, without their `ksm_` prefix)."""

    run: int
    pages_to_scan: int
    sleep_millisecs: int
    merge_across_nodes: int
    pages_shared: int
    pages_sharing: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HostMemory:
    """The host's memory, in KiB (MOM's HostMemory and HostKSM collectors).

    Attributes:
        mem_available: total memory (MemTotal).
        mem_free: free memory including buffers and cache, averaged over the window.
        ksm_shareable: memory the guests' QEMUs offer KSM (their virtual sizes).
    """

    mem_available: int
    mem_free: float
    ksm_shareable: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestMemory:
    """One running guest's balloon, in KiB (MOM's GuestBalloon and GuestMemory).

    Attributes:
        vm_id: the VM's UUID.
        balloon_cur: the balloon's current size (the memory the guest has now).
        balloon_min: the guaranteed memory (`ovirt-vm:minGuaranteedMemoryMb`).
        balloon_max: the VM's memory size.
        balloon_cur_avg: `balloon_cur` averaged over the window.
        mem_unused: memory the guest reports unused, averaged; None when the guest
            reports none (no balloon driver statistics): MOM then skips its balloon.
    """

    vm_id: str
    balloon_cur: int
    balloon_min: int
    balloon_max: int
    balloon_cur_avg: float
    mem_unused: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemorySample:
    """Everything one policy round reads."""

    host: HostMemory
    ksm: KsmState
    guests: tuple[GuestMemory, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What a round asks for.

    Attributes:
        balloons: the new balloon target of each guest whose balloon moves (KiB).
        ksm: the KSM knobs whose value changes (sysfs name -> value); MOM's KSM
            controller writes only those.
    """

    balloons: Mapping[str, int] = field(default_factory=dict)
    ksm: Mapping[str, int] = field(default_factory=dict)


def decide(sample: MemorySample, params: PolicyParameters) -> Decision:
    """Return what MOM's default policy does with `sample` under `params` (pure)."""
    return Decision(balloons=balloon_targets(sample, params), ksm=ksm_changes(sample, params))


# -- ballooning (02-balloon.policy) ---------------------------------------------------------


def host_free_percent(host: HostMemory) -> float:
    """The host's free fraction: averaged free memory over total memory."""
    return host.mem_free / host.mem_available if host.mem_available > 0 else 1.0


def balloon_targets(sample: MemorySample, params: PolicyParameters) -> dict[str, int]:
    """Return the balloon target of each guest whose balloon should move (KiB).

    Under pressure, with ballooning enabled, each guest shrinks by at most 5 % a
    round, never below what it uses plus a free margin that narrows as the pressure
    grows, nor below its guaranteed memory; otherwise (no pressure, or ballooning
    disabled) inflated guests grow back by at least 5 % a round up to their size.
    Last, any guest below its guaranteed memory is given it back, whatever else
    was decided (MOM's "minimum guaranteed memory" ruleset).
    """
    free = host_free_percent(sample.host)
    pressure = free < PRESSURE_THRESHOLD and params.balloon_enabled
    targets: dict[str, int] = {}
    for guest in sample.guests:
        if guest.mem_unused is not None:
            target = _shrink(guest, free) if pressure else _grow(guest, free)
            if target is not None:
                targets[guest.vm_id] = target
        if guest.balloon_cur < guest.balloon_min:
            targets[guest.vm_id] = guest.balloon_min
    return targets


def _guest_free_percent(host_free: float) -> float:
    if host_free <= PRESSURE_CRITICAL:
        return -0.05 + host_free  # negative: force the guest to swap
    return MIN_GUEST_FREE_PERCENT * (host_free / PRESSURE_THRESHOLD)


def _floor(guest: GuestMemory, host_free: float) -> float:
    """The least a guest may keep: what it uses plus its free margin, at least its minimum."""
    assert guest.mem_unused is not None  # noqa: S101 - checked by the caller
    used = guest.balloon_cur_avg - guest.mem_unused
    return max(guest.balloon_min, used + _guest_free_percent(host_free) * guest.balloon_cur)


def _big_enough(guest: GuestMemory, target: float) -> bool:
    return abs(target - guest.balloon_cur) > MIN_BALLOON_CHANGE_PERCENT * guest.balloon_cur


def _shrink(guest: GuestMemory, host_free: float) -> int | None:
    size = max(guest.balloon_cur * (1 - MAX_BALLOON_CHANGE_PERCENT), _floor(guest, host_free))
    if size <= guest.balloon_cur and _big_enough(guest, size):
        return int(size)
    return None


def _grow(guest: GuestMemory, host_free: float) -> int | None:
    if guest.balloon_cur >= guest.balloon_max:
        return None
    size = max(guest.balloon_cur * (1 + MAX_BALLOON_CHANGE_PERCENT), _floor(guest, host_free))
    size = min(size, guest.balloon_max)
    return int(size) if _big_enough(guest, size) else None


# -- KSM (03-ksm.policy) --------------------------------------------------------------------


def ksm_controls(sample: MemorySample, params: PolicyParameters) -> dict[str, int]:
    """Return the KSM knobs MOM's policy sets this round (sysfs name -> value).

    KSM runs when free memory is low or the guests' shareable memory is large,
    scanning harder (more pages a round) while free memory stays low and easing
    off otherwise, sleeping less on bigger hosts. With KSM disabled, or when the
    Engine's NUMA merge policy differs from the kernel's while pages are shared,
    every shared page is unmerged first (run = 2); merge_across_nodes is only
    written when no page is shared (the kernel refuses it otherwise).
    """
    host, ksm = sample.host, sample.ksm
    wanted_merge = int(params.ksm_merge_across_nodes)
    controls: dict[str, int] = {}
    if ksm.pages_shared == 0:
        controls["merge_across_nodes"] = wanted_merge
    unmerge = ksm.pages_shared > 0 and (
        ksm.merge_across_nodes != wanted_merge or not params.ksm_enabled
    )
    action = KSM_UNMERGE if unmerge else KSM_STOP
    threshold = host.mem_available * KSM_FREE_PERCENT
    idle = threshold + host.ksm_shareable < host.mem_available and host.mem_free > threshold
    if idle or not params.ksm_enabled or action != KSM_STOP:
        controls["run"] = action
        return controls
    controls["run"] = KSM_RUN
    controls["sleep_millisecs"] = int(
        max(10, KSM_SLEEP_MS_BASELINE * _SIXTEEN_GIB_KIB / max(host.mem_available, 1))
    )
    delta = KSM_PAGES_BOOST if host.mem_free < threshold else KSM_PAGES_DECAY
    controls["pages_to_scan"] = min(max(ksm.pages_to_scan + delta, KSM_NPAGES_MIN), KSM_NPAGES_MAX)
    return controls


def ksm_changes(sample: MemorySample, params: PolicyParameters) -> dict[str, int]:
    """Return the knobs of `ksm_controls` whose value differs from the kernel's."""
    current = {
        "run": sample.ksm.run,
        "pages_to_scan": sample.ksm.pages_to_scan,
        "sleep_millisecs": sample.ksm.sleep_millisecs,
        "merge_across_nodes": sample.ksm.merge_across_nodes,
    }
    wanted = ksm_controls(sample, params)
    return {key: value for key, value in wanted.items() if current[key] != value}


# -- averaging (MOM's StatAvg) --------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """The last `HISTORY` readings of each named value; `mean` is MOM's StatAvg.

    Not thread-safe: owned by one actor.
    """

    size: int = HISTORY
    _values: dict[str, deque[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> float:
        """Record `value` under `name` and return the mean of its window."""
        values = self._values.setdefault(name, deque(maxlen=self.size))
        values.append(value)
        return sum(values) / len(values)

    def keep_only(self, names: Iterable[str]) -> None:
        """Forget every name not in `names` (guests that went away)."""
        keep = set(names)
        for name in [name for name in self._values if name not in keep]:
            del self._values[name]
