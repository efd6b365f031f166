"""The pure parts of container VMs: settings from the domain XML, docker's answers read,
exits decided and stats converted, on the shapes docker 20.10 really sends (cgroup v1)."""

from __future__ import annotations

import uuid

import pytest

from harness.dockerd import container_xml
from hostvisor.actors.container.engine import epoch_ns, event_of, state_of
from hostvisor.actors.container.lifecycle import exit_of, status_of
from hostvisor.actors.container.spec import LABEL_VM_ID, container_spec
from hostvisor.actors.container.stats import ContainerSample, CpuLimits, container_stats
from hostvisor.actors.guest.status import ExitCode, ExitReason, VmStatus
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.errors import VmCreateError


def _spec(**options):
    vm_id = str(uuid.uuid4())
    return container_spec(domxml.parse(container_xml(vm_id, **options)), network="none")


def test_memory_and_cpu_become_docker_limits():
    spec = _spec(memory_mib=128, vcpus=2)
    host = spec.host_options()
    assert host["mem_limit"] == host["memswap_limit"] == 128 * 1024 * 1024
    assert (host["cpu_period"], host["cpu_quota"]) == (100_000, 200_000)  # two CPUs' worth
    assert "cpu_shares" not in host
    assert host["network_mode"] == "none"
    assert spec.container_options()["name"] == f"hostvisor-{spec.vm_id}"
    assert spec.labels[LABEL_VM_ID] == spec.vm_id


def test_cputune_quota_is_per_vcpu_and_minus_one_is_no_limit():
    tuned = _spec(vcpus=3, cputune="<cputune><period>20000</period><quota>5000</quota></cputune>")
    assert (tuned.cpu_period, tuned.cpu_quota) == (20000, 15000)
    unlimited = _spec(cputune="<cputune><quota>-1</quota><shares>2048</shares></cputune>")
    assert "cpu_quota" not in unlimited.host_options()
    assert unlimited.host_options()["cpu_shares"] == 2048


def test_volume_map_resolves_disks_by_target():
    devices = (
        "<disk type='file'><source file='/images/a.raw'/><target dev='vda'/></disk>"
        "<disk type='block'><source dev='/dev/loop7'/><target dev='vdb'/><readonly/></disk>"
    )
    custom = {"containerType": "docker", "containerImage": "x", "volumeMap": "vda:data, vdb:/srv"}
    mounts = _spec(custom=custom, devices=devices).host_options()["mounts"]
    assert mounts == [
        {"Type": "bind", "Source": "/images/a.raw", "Target": "/data", "ReadOnly": False},
        {"Type": "bind", "Source": "/dev/loop7", "Target": "/srv", "ReadOnly": True},
    ]


@pytest.mark.parametrize(
    ("custom", "reason"),
    [
        ({"containerType": "lxc", "containerImage": "x"}, "'lxc' is not supported"),
        ({"containerType": "docker", "containerImage": " "}, "containerImage is required"),
        ({"containerType": "docker", "containerImage": "x", "volumeMap": "vda:../etc"}, "not"),
        ({"containerType": "docker", "containerImage": "x", "volumeMap": "vdq:data"}, "'vdq'"),
    ],
)
def test_bad_container_settings_say_what_is_wrong(custom, reason):
    with pytest.raises(VmCreateError) as raised:
        _spec(custom=custom)
    assert raised.value.code == 9
    assert reason in str(raised.value)


def test_docker_times_and_states_are_read():
    assert epoch_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert epoch_ns("2026-11-23T23:41:54.715419986Z") % 1_000_000_000 == 715_419_986
    assert epoch_ns("0001-01-01T00:00:00Z") == 0
    state = state_of(
        {
            "Id": "abc",
            "State": {"Status": "exited", "ExitCode": 137, "OOMKilled": True, "Error": ""},
            "Config": {"StopSignal": "SIGINT"},
        }
    )
    assert (state.status, state.exit_code, state.oom_killed, state.stop_signal) == (
        "exited",
        137,
        True,
        "SIGINT",
    )


def test_only_lifecycle_events_of_vm_containers_become_messages():
    raw = {
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": "c1", "Attributes": {LABEL_VM_ID: "vm1", "exitCode": "7"}},
        "timeNano": 42,
    }
    event = event_of(raw)
    assert event is not None
    assert (event.vm_id, event.container_id, event.action, event.exit_code) == (
        "vm1",
        "c1",
        "die",
        7,
    )
    assert event_of({**raw, "Action": "exec_start: ping -c 1"}) is None
    assert event_of({**raw, "Actor": {"ID": "c2", "Attributes": {}}}) is None
    assert event_of({**raw, "Type": "network"}) is None


def test_statuses_and_exits_follow_vdsm():
    assert status_of("running") is VmStatus.UP
    assert status_of("paused") is VmStatus.PAUSED
    assert status_of("restarting") is VmStatus.REBOOT_IN_PROGRESS
    assert status_of("exited") is VmStatus.DOWN
    assert status_of("created") is VmStatus.WAIT_FOR_LAUNCH
    admin = exit_of(137, requested=True)
    assert (admin.code, admin.reason) == (ExitCode.NORMAL, ExitReason.ADMIN_SHUTDOWN)
    assert "status 137" in admin.message
    user = exit_of(0, requested=False)
    assert (user.code, user.reason) == (ExitCode.NORMAL, ExitReason.USER_SHUTDOWN)
    crash = exit_of(0, requested=False, oom=True)
    assert (crash.code, crash.reason) == (ExitCode.ERROR, ExitReason.GENERIC_ERROR)
    assert "want of memory" in crash.message


def _raw(user_ns, kernel_ns, pgfault, rx=0, tx=0):
    return {
        "cpu_stats": {
            "cpu_usage": {
                "total_usage": user_ns + kernel_ns,
                "usage_in_usermode": user_ns,
                "usage_in_kernelmode": kernel_ns,
            }
        },
        "memory_stats": {
            "usage": 40 * 1024 * 1024,
            "limit": 64 * 1024 * 1024,
            "stats": {"total_inactive_file": 8 * 1024 * 1024, "pgfault": pgfault, "pgmajfault": 2},
        },
        "networks": {"eth0": {"rx_bytes": rx, "tx_bytes": tx, "rx_errors": 0, "tx_dropped": 0}},
    }


def test_stats_have_vdsm_names_and_types():
    first = ContainerSample(taken_at=100.0, raw=_raw(0, 0, 1000))
    second = ContainerSample(
        taken_at=102.0, raw=_raw(500_000_000, 100_000_000, 1400, rx=1234, tx=99)
    )
    stats = container_stats(second, first, cpu=CpuLimits(vcpus=2, quota=50_000))
    assert stats["cpuUser"] == "25.00"  # 0.5 s of 2 s
    assert stats["cpuSys"] == "5.00"
    assert stats["cpuUsage"] == "600000000"
    assert (stats["vcpuCount"], stats["vcpuQuota"], stats["vcpuPeriod"]) == ("2", "50000", "100000")
    assert stats["memUsage"] == "50"  # (40 - 8 reclaimable) of 64 MiB
    memory = stats["memoryStats"]
    assert memory["mem_total"] == str(64 * 1024)
    assert memory["mem_free"] == memory["mem_unused"] == str(32 * 1024)
    assert memory["mem_cached"] == str(8 * 1024)
    assert (memory["pageflt"], memory["majflt"], memory["minflt"]) == (200, 0, 200)
    nic = stats["network"]["eth0"]
    assert (nic["rx"], nic["tx"], nic["speed"], nic["sampleTime"]) == ("1234", "99", "1000", 102.0)
    assert "disks" not in stats
    assert "balloonInfo" not in stats
    alone = container_stats(first, None, cpu=CpuLimits())
    assert (alone["cpuUser"], alone["memoryStats"]["pageflt"]) == ("0.00", 0)
