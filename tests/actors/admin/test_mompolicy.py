"""MOM's default memory policy as pure functions, over recorded samples (no host needed).

Each expected number is worked out by hand from 02-balloon.policy and 03-ksm.policy
(the comment beside it shows the arithmetic), so a change in the rules shows here.
"""

from __future__ import annotations

import pytest

from hostvisor.actors.admin import ksm
from hostvisor.actors.admin.memread import GuestReading, HostReading, Reading, averaged
from hostvisor.actors.admin.mompolicy import (
    GuestMemory,
    HostMemory,
    KsmState,
    MemorySample,
    PolicyParameters,
    Window,
    balloon_targets,
    decide,
    ksm_changes,
    ksm_controls,
    updated,
)

pytestmark = pytest.mark.unit

GIB = 1024 * 1024  # KiB
HOST_TOTAL = 16 * GIB
KSM_IDLE = KsmState(
    run=0, pages_to_scan=100, sleep_millisecs=20, merge_across_nodes=1, pages_shared=0
)
BALLOONING = PolicyParameters(balloon_enabled=True)


def host(free_fraction: float, *, total: int = HOST_TOTAL, shareable: int = 0) -> HostMemory:
    return HostMemory(mem_available=total, mem_free=total * free_fraction, ksm_shareable=shareable)


def guest(
    vm_id: str = "vm-1",
    *,
    cur: int = 4 * GIB,
    maximum: int = 4 * GIB,
    minimum: int = 1 * GIB,
    unused: float | None = 2 * GIB,
) -> GuestMemory:
    return GuestMemory(
        vm_id=vm_id,
        balloon_cur=cur,
        balloon_min=minimum,
        balloon_max=maximum,
        balloon_cur_avg=cur,
        mem_unused=unused,
    )


def sample(
    free_fraction: float, *guests: GuestMemory, ksm_state: KsmState = KSM_IDLE
) -> MemorySample:
    return MemorySample(host=host(free_fraction), ksm=ksm_state, guests=guests)


# -- ballooning ---------------------------------------------------------------------------------


def test_pressure_up_shrinks_a_guest_by_at_most_five_percent():
    # 10 % free: guest free margin 0.2 * 0.10 / 0.20 = 0.10; used 2 GiB;
    # floor 2 GiB + 0.1 * 4 GiB = 2.4 GiB; 5 % step: 4 GiB * 0.95 = 3984588.8 > floor
    assert balloon_targets(sample(0.10, guest()), BALLOONING) == {"vm-1": 3984588}


def test_pressure_up_never_squeezes_a_guest_below_what_it_uses_plus_its_margin():
    # used 4 GiB - 0.5 GiB = 3.5 GiB; margin 0.10 * 4 GiB: floor 3.9 GiB > 4 GiB * 0.95
    busy = guest(unused=0.5 * GIB)
    assert balloon_targets(sample(0.10, busy), BALLOONING) == {"vm-1": int(3.9 * GIB)}
    # a guest using nearly everything: the floor is above its size, nothing to give
    full = guest(unused=0.05 * 4 * GIB)
    assert balloon_targets(sample(0.10, full), BALLOONING) == {}


def test_critical_pressure_makes_the_margin_negative():
    # 4 % free (<= 5 %): margin -0.05 + 0.04 = -0.01; used 3.9 GiB;
    # floor 3.9 GiB - 0.01 * 4 GiB = 3.86 GiB, above 4 GiB * 0.95 = 3.8 GiB
    squeezed = guest(unused=0.1 * GIB)
    assert balloon_targets(sample(0.04, squeezed), BALLOONING) == {"vm-1": int(3.86 * GIB)}


def test_pressure_down_gives_memory_back_up_to_the_guests_size():
    # 50 % free: margin 0.2 * 0.5 / 0.2 = 0.5; cur 3 GiB, used 2 GiB;
    # floor 2 GiB + 0.5 * 3 GiB = 3.5 GiB, above 3 GiB * 1.05
    ballooned = guest(cur=3 * GIB, unused=1 * GIB)
    assert balloon_targets(sample(0.50, ballooned), BALLOONING) == {"vm-1": int(3.5 * GIB)}
    # a guest close to its size is given the rest: min(3.9 GiB * 1.05, 4 GiB)
    nearly = guest(cur=int(3.9 * GIB), unused=3 * GIB)
    assert balloon_targets(sample(0.50, nearly), BALLOONING) == {"vm-1": 4 * GIB}
    # a guest at its size is left alone
    assert balloon_targets(sample(0.50, guest()), BALLOONING) == {}


def test_changes_smaller_than_a_quarter_percent_are_not_made():
    # cur 4 GiB - 4 MiB: growing to 4 GiB moves it by 0.1 % < 0.25 %
    almost = guest(cur=4 * GIB - 4096, unused=2 * GIB)
    assert balloon_targets(sample(0.50, almost), BALLOONING) == {}


def test_the_guaranteed_floor_bounds_shrinking():
    # 10 % free, the 5 % step would give 3.8 GiB, but 3.9 GiB is guaranteed
    guaranteed = guest(minimum=int(3.9 * GIB))
    assert balloon_targets(sample(0.10, guaranteed), BALLOONING) == {"vm-1": int(3.9 * GIB)}


def test_a_guest_below_its_guaranteed_memory_gets_it_back_whatever_the_pressure():
    below = guest(cur=2 * GIB, minimum=3 * GIB, unused=None)  # no guest statistics either
    for free in (0.02, 0.10, 0.50):
        assert balloon_targets(sample(free, below), BALLOONING) == {"vm-1": 3 * GIB}
        assert balloon_targets(sample(free, below), PolicyParameters()) == {"vm-1": 3 * GIB}


def test_balloon_disabled_never_shrinks_and_only_deflates():
    disabled = PolicyParameters(balloon_enabled=False)
    assert balloon_targets(sample(0.10, guest()), disabled) == {}
    assert balloon_targets(sample(0.02, guest()), disabled) == {}
    # a ballooned guest grows back even under pressure: 10 % free gives margin 0.1,
    # floor 1 GiB + 0.1 * 3 GiB = 1.3 GiB, so the 5 % step wins: 3 GiB * 1.05
    ballooned = guest(cur=3 * GIB, unused=2 * GIB)
    assert balloon_targets(sample(0.10, ballooned), disabled) == {"vm-1": int(3 * GIB * 1.05)}


def test_a_guest_without_statistics_is_not_ballooned():
    silent = guest(unused=None)
    assert balloon_targets(sample(0.10, silent), BALLOONING) == {}


def test_each_guest_is_decided_alone():
    guests = (
        guest("a"),
        guest("b", unused=0.05 * 4 * GIB),
        guest("c", cur=2 * GIB, minimum=3 * GIB),
    )
    assert balloon_targets(sample(0.10, *guests), BALLOONING) == {"a": 3984588, "c": 3 * GIB}


# -- KSM ------------------------------------------------------------------------------------------


def test_ksm_stays_off_on_an_idle_host_and_is_stopped_if_running():
    assert ksm_changes(sample(0.80), PolicyParameters()) == {}
    running = KsmState(
        run=1, pages_to_scan=400, sleep_millisecs=10, merge_across_nodes=1, pages_shared=0
    )
    assert ksm_changes(sample(0.80, ksm_state=running), PolicyParameters()) == {"run": 0}


def test_ksm_runs_and_scans_harder_under_pressure():
    # 10 % free < 20 %: run; sleep 10 ms * 16 GiB / 16 GiB; pages 100 + 300
    controls = ksm_controls(sample(0.10), PolicyParameters())
    assert controls == {
        "merge_across_nodes": 1,
        "run": 1,
        "sleep_millisecs": 10,
        "pages_to_scan": 400,
    }
    assert ksm_changes(sample(0.10), PolicyParameters()) == {
        "run": 1,
        "sleep_millisecs": 10,
        "pages_to_scan": 400,
    }


def test_ksm_runs_when_guests_offer_much_memory_and_eases_off_while_free_memory_is_plenty():
    # 3.2 GiB threshold + 14 GiB of QEMUs > 16 GiB: run; free 50 % > 20 %: pages 100 - 50 -> 64
    crowded = MemorySample(host=host(0.50, shareable=14 * GIB), ksm=KSM_IDLE)
    controls = ksm_controls(crowded, PolicyParameters())
    assert controls["run"] == 1
    assert controls["pages_to_scan"] == 64


def test_ksm_sleeps_longer_on_a_small_host_and_scans_at_most_1250_pages():
    small = MemorySample(
        host=host(0.05, total=4 * GIB),
        ksm=KsmState(
            run=1, pages_to_scan=1200, sleep_millisecs=10, merge_across_nodes=1, pages_shared=5
        ),
    )
    controls = ksm_controls(small, PolicyParameters())
    assert controls["sleep_millisecs"] == 40  # 10 ms * 16 GiB / 4 GiB
    assert controls["pages_to_scan"] == 1250  # 1200 + 300, capped


def test_ksm_disabled_unmerges_shared_pages_then_stays_off():
    shared = KsmState(
        run=1, pages_to_scan=100, sleep_millisecs=10, merge_across_nodes=1, pages_shared=9
    )
    disabled = PolicyParameters(ksm_enabled=False)
    assert ksm_changes(sample(0.10, ksm_state=shared), disabled) == {"run": 2}
    unmerged = KsmState(
        run=2, pages_to_scan=100, sleep_millisecs=10, merge_across_nodes=1, pages_shared=0
    )
    assert ksm_changes(sample(0.10, ksm_state=unmerged), disabled) == {"run": 0}


def test_a_new_numa_merge_policy_unmerges_first_and_is_written_once_nothing_is_shared():
    per_node = PolicyParameters(ksm_merge_across_nodes=False)
    shared = KsmState(
        run=1, pages_to_scan=100, sleep_millisecs=10, merge_across_nodes=1, pages_shared=9
    )
    assert ksm_changes(sample(0.10, ksm_state=shared), per_node) == {"run": 2}
    drained = KsmState(
        run=2, pages_to_scan=100, sleep_millisecs=10, merge_across_nodes=1, pages_shared=0
    )
    changes = ksm_changes(sample(0.10, ksm_state=drained), per_node)
    assert changes["merge_across_nodes"] == 0
    assert changes["run"] == 1


def test_decide_returns_both_halves():
    decision = decide(sample(0.10, guest()), BALLOONING)
    assert decision.balloons == {"vm-1": 3984588}
    assert decision.ksm["run"] == 1


# -- parameters, knobs and averaging ------------------------------------------------------------


def test_the_engines_parameters_are_booleans_or_moms_zero_and_one():
    params = updated(PolicyParameters(), {"balloonEnabled": True, "ksmEnabled": 0})
    assert params == PolicyParameters(balloon_enabled=True, ksm_enabled=False)
    assert updated(params, {"ksmMergeAcrossNodes": False}).ksm_merge_across_nodes is False
    for bad in ({"balloonEnabled": "yes"}, {"ksmEnabled": 2}, {"cpuTuneEnabled": True}, {"x": 1}):
        with pytest.raises(ValueError, match=r"must be a boolean|not a policy variable"):
            updated(params, bad)


def test_ksm_knobs_are_checked_as_supervdsm_checks_them():
    assert ksm.checked({"run": 1, "pages_to_scan": "300"}) == {"run": 1, "pages_to_scan": 300}
    bad = (
        {"run": 3},
        {"merge_across_nodes": 2},
        {"sleep_millisecs": -1},
        {"pages_to_scan": 2**32},
        {"frobnicate": 1},
        {"run": True},
        {"run": "fast"},
        {"run": [1]},
        {"run": 1.5},
    )
    for tuning in bad:
        with pytest.raises(ValueError, match="KSM parameter"):
            ksm.checked(tuning)


def test_the_window_averages_like_moms_statavg_and_forgets_gone_guests():
    window = Window(size=3)
    ksm_state = KSM_IDLE
    frees = (10 * GIB, 8 * GIB, 6 * GIB, 4 * GIB)
    result = None
    for free in frees:
        reading = Reading(
            host=HostReading(mem_available=HOST_TOTAL, mem_free=free),
            ksm=ksm_state,
            guests=(
                GuestReading(
                    vm_id="a",
                    balloon_cur=4 * GIB,
                    balloon_min=0,
                    balloon_max=4 * GIB,
                    mem_unused=free,
                ),
            ),
        )
        result = averaged(window, reading)
    assert result is not None
    assert result.host.mem_free == 6 * GIB  # mean of the last three: 8, 6, 4
    assert result.guests[0].mem_unused == 6 * GIB
    gone = Reading(host=HostReading(mem_available=HOST_TOTAL, mem_free=GIB), ksm=ksm_state)
    assert averaged(window, gone).guests == ()
    assert set(window._values) == {"host.mem_free"}
