"""fenceNode's input and result rules, as VDSM's Global.fenceNode has them (pure)."""

from __future__ import annotations

import pytest

from hostvisor.actors.admin.errors import FenceFailed, UnsupportedFenceAgent
from hostvisor.actors.admin.fence import (
    SKIPPED,
    FenceResult,
    interpret,
    redacted,
    request,
    run_agent,
    should_fence,
    tobool,
)
from hostvisor.actors.errors import InvalidArgument

pytestmark = pytest.mark.unit

ENGINE = {
    "addr": "192.0.2.7",
    "port": "",
    "agent": "ipmilan",
    "username": "admin",
    "password": "pa55",
    "action": "status",
    "secure": "",
    "options": "lanplus=1\npower_wait=4",
}


def test_the_agents_input_is_vdsms_and_the_password_shows_nowhere_else():
    checked = request(**{**ENGINE, "port": 623, "secure": "true"})
    assert checked.stdin() == (
        "agent=fence_ipmilan\nipaddr=192.0.2.7\nlogin=admin\naction=status\npasswd=pa55\n"
        "port=623\nsecure=yes\nlanplus=1\npower_wait=4\n"
    )
    assert "pa55" not in repr(checked)
    assert "pa55" not in str(checked.password)
    assert "pa55" not in redacted(checked.stdin())
    assert "passwd=XXXX" in redacted(checked.stdin())
    # the Engine's empty port and secure strings: no port line, not secure
    assert request(**ENGINE).stdin().count("\n") == 7


def test_secure_is_read_as_vdsms_tobool():
    assert [tobool(v) for v in (True, "true", "TRUE", "1", 1)] == [True] * 5
    assert [tobool(v) for v in (False, "", "false", "yes", "0", 0)] == [False] * 6
    with pytest.raises(InvalidArgument):
        tobool([True])


@pytest.mark.parametrize(
    "change",
    [
        {"action": "explode"},
        {"addr": "192.0.2.7\naction=off"},
        {"username": "admin\rx"},
        {"port": "1\npasswd=x"},
        {"password": "a\nb"},
        {"policy": {"storageDomainHostIdMap": {"sd": "one"}}},
        {"policy": {"storageDomainHostIdMap": ["sd"]}},
        {"policy": {"skipFencingIfGlusterBricksUp": "yes"}},
        {"secure": {"on": True}},
    ],
)
def test_input_that_could_change_the_agents_lines_is_refused(change):
    with pytest.raises(InvalidArgument):
        request(**{**ENGINE, **change})


@pytest.mark.parametrize("agent", ["", "../../bin/sh", "ipmi lan", "-x", "a/b"])
def test_an_agent_that_cannot_be_a_name_is_an_unsupported_agent(agent):
    with pytest.raises(UnsupportedFenceAgent) as raised:
        request(**{**ENGINE, "agent": agent})
    assert raised.value.code == 43


def test_an_agent_that_is_not_installed_is_unsupported(tmp_path):
    with pytest.raises(UnsupportedFenceAgent):
        run_agent(request(**{**ENGINE, "agent": "nosuchagent"}), agent_dir=tmp_path)


def test_exit_statuses_read_as_vdsm_reads_them():
    assert interpret("status", 0, "") == FenceResult(power="on")
    assert interpret("status", 2, "") == FenceResult(power="off")
    for action in ("on", "off", "reboot"):
        assert interpret(action, 0, "").wire() == {
            "power": "unknown",
            "operationStatus": "initiated",
        }
    failures = (("status", 1, 1), ("off", 1, 1), ("on", 2, 2), ("reboot", 5, 1), ("status", -9, 1))
    for action, rc, code in failures:
        with pytest.raises(FenceFailed) as raised:
            interpret(action, rc, "Unable to connect/login to fencing device\n")
        assert raised.value.code == code
        assert "Unable to connect" in raised.value.render()
    assert SKIPPED.wire() == {"operationStatus": "skipped"}


def test_the_policy_skips_a_host_with_a_live_lease_but_never_a_status():
    policy = {"storageDomainHostIdMap": {"3b7d0a4e-0000-4000-8000-000000000001": 2}}
    off = request(**{**ENGINE, "action": "off", "policy": policy})
    assert should_fence(off, lambda _ids: True) is False
    assert should_fence(off, lambda _ids: False) is True
    assert should_fence(off, lambda _ids: None) is True  # unknown: fence, as VDSM does
    assert should_fence(request(**{**ENGINE, "policy": policy}), lambda _ids: True) is True
    assert should_fence(request(**{**ENGINE, "action": "off", "policy": {}})) is True
    skipped = run_agent(off, lease_live=lambda _ids: True)
    assert skipped == SKIPPED
