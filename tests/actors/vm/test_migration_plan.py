"""Live migration's pure part: the Engine's params, libvirt's flags and params, the schedule."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm.migration import (
    ABORT,
    POSTCOPY,
    SET_DOWNTIME,
    Action,
    MigrationRequest,
    Progress,
    Schedule,
    ScheduleRunner,
    exponential_downtime,
    outgoing,
    split_host_port,
)

pytestmark = pytest.mark.unit

VM = "8a3c2d3e-2f6b-4c3f-9a51-1c1e9a7d0b11"

# What MigrateBrokerVDSCommand.createMigrationInfo puts in `params` (ovirt-engine),
# with the schedule ConvergenceSchedule.asMap builds for the "minimal downtime" policy.
ENGINE_PARAMS: dict[str, Any] = {
    "vmId": VM,
    "src": "198.51.100.11",
    "dst": "198.51.100.12:54321",
    "method": "online",
    "tunneled": "false",
    "abortOnError": "true",
    "autoConverge": "true",
    "compressed": "false",
    "encrypted": False,
    "consoleAddress": "198.51.100.12",
    "maxBandwidth": 62,
    "parallel": 0,
    "enableGuestEvents": True,
    "incomingLimit": 2,
    "outgoingLimit": 2,
    "convergenceSchedule": {
        "init": [{"name": "setDowntime", "params": ["100"]}],
        "stalling": [
            {"limit": 1, "action": {"name": "setDowntime", "params": ["150"]}},
            {"limit": 2, "action": {"name": "setDowntime", "params": ["200"]}},
            {"limit": 3, "action": {"name": "setDowntime", "params": ["300"]}},
            {"limit": -1, "action": {"name": "abort", "params": []}},
        ],
    },
}


def test_the_engines_params_are_read_with_their_wire_types():
    request = MigrationRequest.from_params(VM, ENGINE_PARAMS)
    assert (request.dst_host, request.dst_port) == ("198.51.100.12", 54321)
    assert (request.abort_on_error, request.auto_converge) == (True, True)
    assert (request.tunneled, request.compressed, request.encrypted) == (False, False, False)
    assert request.enable_guest_events
    assert request.max_bandwidth == 62
    assert request.parallel is None  # 0: parallel migration off
    assert request.incoming_limit == request.outgoing_limit == 2
    assert request.schedule.init == (Action(SET_DOWNTIME, ("100",)),)
    assert [s.limit for s in request.schedule.stalling] == [1, 2, 3, -1]
    assert request.schedule.stalling[-1].action.name == ABORT


def test_flags_are_live_peer_to_peer_and_what_was_asked():
    flags = MigrationRequest.from_params(VM, ENGINE_PARAMS).flags()
    for flag in ("LIVE", "PEER2PEER", "PERSIST_DEST", "ABORT_ON_ERROR", "AUTO_CONVERGE"):
        assert flags & getattr(libvirt, f"VIR_MIGRATE_{flag}"), flag
    for flag in ("TUNNELLED", "COMPRESSED", "TLS", "PARALLEL", "POSTCOPY"):
        assert not flags & getattr(libvirt, f"VIR_MIGRATE_{flag}"), flag


def test_a_schedule_with_postcopy_asks_libvirt_for_postcopy_at_the_start():
    params = dict(ENGINE_PARAMS)
    params["convergenceSchedule"] = {
        "init": [],
        "stalling": [{"limit": 2, "action": {"name": "postcopy", "params": []}}],
    }
    assert MigrationRequest.from_params(VM, params).flags() & libvirt.VIR_MIGRATE_POSTCOPY


def test_libvirt_params_send_memory_to_dstqemu_and_name_the_host_for_tls():
    params = dict(ENGINE_PARAMS, dstqemu="203.0.113.7", encrypted=True, parallel=4)
    request = MigrationRequest.from_params(VM, params)
    typed = request.libvirt_params(domain_xml="<domain/>", graphics="vnc")
    assert typed[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://203.0.113.7"
    assert typed[libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION] == "198.51.100.12"
    assert typed[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] == 4
    assert typed[libvirt.VIR_MIGRATE_PARAM_GRAPHICS_URI] == "vnc://198.51.100.12"
    assert typed[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 62
    assert request.destination_uri(tls=True) == "qemu+tls://198.51.100.12/system"


def test_a_tunnelled_migration_names_no_migration_uri():
    request = MigrationRequest.from_params(VM, dict(ENGINE_PARAMS, tunneled="true"))
    assert libvirt.VIR_MIGRATE_PARAM_URI not in request.libvirt_params(
        domain_xml="<domain/>", graphics=None
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.12", ("198.51.100.12", 54321)),
        ("198.51.100.12:1234", ("198.51.100.12", 1234)),
        ("[2001:db8::5]:54321", ("2001:db8::5", 54321)),
        ("[2001:db8::5]", ("2001:db8::5", 54321)),
        ("host.example.org", ("host.example.org", 54321)),
    ],
)
def test_dst_forms(text, expected):
    assert split_host_port(text) == expected


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"dst": None}, "dst"),
        ({"dst": ""}, "dst"),
        ({"dst": "a:b:c"}, "dst"),
        ({"dst": "host:70000"}, "dst"),
        ({"tunneled": "maybe"}, "tunneled"),
        ({"encrypted": 1}, "encrypted"),
        ({"maxBandwidth": "fast"}, "maxBandwidth"),
        ({"incomingLimit": 0}, "incomingLimit"),
        ({"convergenceSchedule": []}, "convergenceSchedule"),
        ({"convergenceSchedule": {"init": [{"name": "explode"}]}}, "name"),
        ({"convergenceSchedule": {"init": [{"name": "setDowntime", "params": []}]}}, "params"),
        ({"convergenceSchedule": {"stalling": [{"limit": "x", "action": {}}]}}, "limit"),
        ({"mode": "file"}, "mode"),
    ],
)
def test_bad_params_are_refused_with_what_is_wrong(changes, param):
    with pytest.raises(InvalidArgument) as refused:
        MigrationRequest.from_params(VM, dict(ENGINE_PARAMS, **changes))
    assert param in str(refused.value)
    assert refused.value.code == 91


def test_without_a_schedule_the_downtime_grows_to_the_engines_limit_then_aborts():
    params = {k: v for k, v in ENGINE_PARAMS.items() if k != "convergenceSchedule"}
    schedule = MigrationRequest.from_params(VM, dict(params, downtime="400")).schedule
    downtimes = [schedule.init[0].downtime_ms] + [
        step.action.downtime_ms for step in schedule.stalling if step.action.name == SET_DOWNTIME
    ]
    assert downtimes == sorted(downtimes)
    assert downtimes[-1] == 400
    assert schedule.stalling[-1].action.name == ABORT
    assert list(exponential_downtime(500, 1)) == [500]


def progress(iteration: int, remaining: int = 100) -> Progress:
    return Progress(
        elapsed_ms=0,
        data_total=1000,
        data_processed=1000 - remaining,
        data_remaining=remaining,
        mem_iteration=iteration,
    )


def test_the_runner_steps_through_the_schedule_one_step_per_stalled_iteration():
    runner = ScheduleRunner(MigrationRequest.from_params(VM, ENGINE_PARAMS).schedule)
    assert [a.downtime_ms for a in runner.start()] == [100]
    due = [runner.on_progress(progress(i)) for i in (5, 5, 6, 7, 8, 9, 10, 11)]
    names = [[(a.name, a.params) for a in actions] for actions in due]
    assert names == [
        [],  # the first sample fixes iteration 5 as the start
        [],  # same iteration: nothing new
        [],  # 1 stalled iteration is not more than limit 1
        [(SET_DOWNTIME, ("150",))],  # 2 > 1
        [(SET_DOWNTIME, ("200",))],  # 3 > 2
        [(SET_DOWNTIME, ("300",))],  # 4 > 3
        [(ABORT, ())],  # 5 > -1: the last step
        [],  # nothing left
    ]


def test_the_runner_does_nothing_more_once_postcopy_runs():
    runner = ScheduleRunner(
        Schedule.from_wire(
            {
                "stalling": [
                    {"limit": 0, "action": {"name": POSTCOPY}},
                    {"limit": -1, "action": {"name": ABORT}},
                ]
            }
        )
    )
    runner.on_progress(progress(1))
    assert [a.name for a in runner.on_progress(progress(2))] == [POSTCOPY]
    assert runner.on_progress(progress(3), postcopy=True) == []


def test_progress_reads_libvirts_job_stats():
    stats = {
        "type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
        "operation": libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
        libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED: 1500,
        libvirt.VIR_DOMAIN_JOB_DATA_TOTAL: 4096,
        libvirt.VIR_DOMAIN_JOB_DATA_PROCESSED: 1024,
        libvirt.VIR_DOMAIN_JOB_DATA_REMAINING: 3072,
        "memory_iteration": 3,
    }
    sample = Progress.from_job_stats(stats)
    assert (sample.percentage, sample.mem_iteration) == (25, 3)
    assert outgoing(stats)
    assert not outgoing({"type": libvirt.VIR_DOMAIN_JOB_NONE})
    assert progress(0, remaining=0).percentage == 100
    assert Progress(0, 1000, 999, 1).percentage == 99  # never 100 while data remains
