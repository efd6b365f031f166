"""The hook runner on real scripts: what they get, what they may change, how they fail.

Each test writes executable shell scripts into a hooks directory of its own, as a
site administrator would into /usr/libexec/vdsm/hooks/<point>/, and runs a point
with `Hooks.run` (blocking, as a worker would).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import psutil
import pytest

from harness.waiting import wait_for
from hostvisor.actors.hooks import NO_HOOKS, POINTS, HookError, Hooks, VmContext

HOOK_ERROR = 1500  # VDSM's exception.HookError
DOMAIN = (
    "<domain type='kvm'><name>g</name><uuid>5b0d6a52-4c3e-4a8e-9d6e-0b1a11000042</uuid></domain>"
)


def script(hooks_dir: Path, point: str, name: str, body: str, *, mode: int = 0o755) -> Path:
    """Write `body` as the shell script `name` of hook point `point`."""
    directory = hooks_dir / point
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    return tmp_path / "hooks"


def test_scripts_run_in_lexical_order_and_edit_the_xml_in_turn(hooks_dir: Path, tmp_path: Path):
    log = tmp_path / "order"
    script(
        hooks_dir,
        "before_vm_start",
        "20_second",
        f"echo 20 >> {log}\n"
        'sed -i "s#</domain>#<description>by 20</description></domain>#" "$_hook_domxml"',
    )
    script(
        hooks_dir,
        "before_vm_start",
        "10_first",
        f'echo 10 >> {log}\nsed -i "s#<name>g</name>#<name>renamed</name>#" "$_hook_domxml"',
    )
    script(hooks_dir, "before_vm_start", "05_not_executable", f"echo 05 >> {log}", mode=0o644)
    script(hooks_dir, "before_vm_start", ".hidden", f"echo hidden >> {log}")

    left = Hooks(directory=hooks_dir).run("before_vm_start", DOMAIN)

    assert log.read_text().split() == ["10", "20"]
    assert "<name>renamed</name>" in left
    assert left.endswith("<description>by 20</description></domain>")


def test_the_environment_has_vm_id_custom_properties_and_params(hooks_dir: Path, tmp_path: Path):
    out = tmp_path / "env"
    script(hooks_dir, "before_nic_hotplug", "dump",
           f'printf "%s\\n%s\\n%s\\n%s\\n" "$vmId" "$sap_agent" "$nic_prop" "$_hook_domxml" > {out}'
           f'\ncat "$_hook_domxml" >> {out}')  # fmt: skip
    hooks = Hooks(directory=hooks_dir)
    vm = VmContext("5b0d6a52-4c3e-4a8e-9d6e-0b1a11000042", {"sap_agent": "true"})

    hooks.run("before_nic_hotplug", "<interface/>", vm=vm, params={"nic_prop": "x y"})

    vm_id, custom, param, path, data = out.read_text().splitlines()
    assert (vm_id, custom, param, data) == (vm.vm_id, "true", "x y", "<interface/>")
    assert not Path(path).exists()  # the data file is gone afterwards


def test_the_vms_custom_properties_win_over_the_params(hooks_dir: Path, tmp_path: Path):
    out = tmp_path / "env"
    script(hooks_dir, "after_vm_start", "dump", f'echo "$prop" > {out}')
    vm = VmContext("5b0d6a52-4c3e-4a8e-9d6e-0b1a11000042", {"prop": "vm"})
    Hooks(directory=hooks_dir).run("after_vm_start", DOMAIN, vm=vm, params={"prop": "device"})
    assert out.read_text().strip() == "vm"


def test_a_failing_before_hook_raises_vdsms_hook_error_after_the_others_ran(
    hooks_dir: Path, tmp_path: Path
):
    ran = tmp_path / "ran"
    script(
        hooks_dir, "before_vm_migrate_source", "10_fails", "echo 'no migration today' >&2; exit 1"
    )
    script(hooks_dir, "before_vm_migrate_source", "20_runs", f"touch {ran}")

    with pytest.raises(HookError) as raised:
        Hooks(directory=hooks_dir).run("before_vm_migrate_source", DOMAIN)

    error = raised.value
    assert error.code == HOOK_ERROR
    assert error.context == {
        "hook": "before_vm_migrate_source",
        "script": "10_fails",
        "rc": 1,
        "err": "no migration today",
    }
    assert str(error).startswith("Hook Error: ")
    assert ran.exists()  # exit status 1 does not stop the scripts after it (VDSM)


def test_exit_status_2_skips_the_scripts_after_it(hooks_dir: Path, tmp_path: Path):
    ran = tmp_path / "ran"
    script(hooks_dir, "before_vm_cont", "10_stop", "exit 2")
    script(hooks_dir, "before_vm_cont", "20_skipped", f"touch {ran}")
    with pytest.raises(HookError) as raised:
        Hooks(directory=hooks_dir).run("before_vm_cont", DOMAIN)
    assert raised.value.context["rc"] == 2
    assert not ran.exists()


def test_a_failing_after_hook_is_only_logged_and_its_edits_are_kept(
    hooks_dir: Path, caplog: pytest.LogCaptureFixture
):
    script(hooks_dir, "after_vm_destroy", "fails", 'echo edited > "$_hook_domxml"; exit 1')
    assert POINTS["after_vm_destroy"].vetoes is False
    assert Hooks(directory=hooks_dir).run("after_vm_destroy", DOMAIN) == "edited\n"
    assert "Hook Error" in caplog.text


def test_a_script_past_its_timeout_is_killed_with_its_children(hooks_dir: Path, tmp_path: Path):
    pid_file = tmp_path / "child"
    # the script leaves a child behind that would hold its pipes open
    script(hooks_dir, "before_vm_start", "hangs", f"sleep 60 & echo $! > {pid_file}; wait")
    started = time.monotonic()
    with pytest.raises(HookError) as raised:
        Hooks(directory=hooks_dir, timeout=0.5).run("before_vm_start", DOMAIN)
    assert time.monotonic() - started < 10
    assert raised.value.context["rc"] is None
    assert "killed after 0.5 s" in raised.value.context["err"]
    child = int(pid_file.read_text())
    wait_for(lambda: not _alive(child), 5, "the script's child to be killed too")


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a reaper does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_json_point_hands_over_and_takes_back_a_document(hooks_dir: Path):
    script(hooks_dir, "before_network_setup", "add_option",
           'python3 -c "import json,os; p=os.environ[\'_hook_json\']; d=json.load(open(p)); '
           "d['request']['options']['hooked'] = True; json.dump(d, open(p, 'w'))\"")  # fmt: skip
    data = {"request": {"networks": {}, "bondings": {}, "options": {}}}
    left = Hooks(directory=hooks_dir).run("before_network_setup", data)
    assert left == {"request": {"networks": {}, "bondings": {}, "options": {"hooked": True}}}


def test_json_a_script_breaks_fails_a_vetoing_point(hooks_dir: Path):
    script(hooks_dir, "before_network_setup", "breaks", 'echo "{not json" > "$_hook_json"')
    with pytest.raises(HookError, match="does not parse"):
        Hooks(directory=hooks_dir).run("before_network_setup", {"request": {}})


def test_a_point_with_no_scripts_or_no_directory_changes_nothing(hooks_dir: Path):
    assert Hooks(directory=hooks_dir).run("before_vm_start", DOMAIN) == DOMAIN
    assert NO_HOOKS.run("before_vm_start", DOMAIN) == DOMAIN
    assert NO_HOOKS.installed() == {}
    assert Hooks(directory=hooks_dir).installed() == {}  # the directory does not even exist


def test_an_unknown_point_is_a_bug_of_the_caller(hooks_dir: Path):
    with pytest.raises(KeyError):
        Hooks(directory=hooks_dir).run("before_lunch", DOMAIN)


def test_installed_lists_every_point_with_sha256_checksums_as_vdsm(hooks_dir: Path):
    start = script(hooks_dir, "before_vm_start", "50_edit", "exit 0")
    log_one = script(hooks_dir, "after_vm_destroy", "10_log", "logger destroyed")
    script(hooks_dir, "after_vm_destroy", "README", "not a hook", mode=0o644)
    (hooks_dir / "before_vm_pause").mkdir()  # empty: not listed

    installed = Hooks(directory=hooks_dir).installed()

    def checksum(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert installed == {
        "after_vm_destroy": {"10_log": {"checksum": checksum(log_one)}},
        "before_vm_start": {"50_edit": {"checksum": checksum(start)}},
    }
    json.dumps(installed)  # goes on the wire as it is


def test_vm_hooks_bind_the_vm_and_notify_never_raises(hooks_dir: Path, tmp_path: Path):
    out = tmp_path / "id"
    script(hooks_dir, "before_nic_hotunplug", "fails", f'echo "$vmId" > {out}; exit 1')
    vm_hooks = Hooks(directory=hooks_dir).for_vm("5b0d6a52-4c3e-4a8e-9d6e-0b1a11000042")
    assert vm_hooks.notify("before_nic_hotunplug", "<interface/>") == "<interface/>"
    assert out.read_text().strip() == vm_hooks.vm.vm_id
    with pytest.raises(HookError):
        vm_hooks.run("before_nic_hotunplug", "<interface/>")


def test_a_vdsm_style_python_hook_imports_hooking(hooks_dir: Path):
    # The shape of VDSM's own Python hooks (vdsm-hook-*): hooking.read_domxml/write_domxml.
    directory = hooks_dir / "before_vm_start"
    directory.mkdir(parents=True)
    hook = directory / "50_vdsm_style"
    hook.write_text(
        "#!/usr/bin/python3\n"
        "import os\n"
        "import hooking\n"
        "domxml = hooking.read_domxml()\n"
        "domain = domxml.getElementsByTagName('domain')[0]\n"
        "description = domxml.createElement('description')\n"
        "description.appendChild(domxml.createTextNode('label=' + os.environ['site_label']))\n"
        "domain.appendChild(description)\n"
        "if hooking.tobool(os.environ.get('site_strict', 'false')):\n"
        "    hooking.exit_hook('strict sites refuse', 2)\n"
        "hooking.write_domxml(domxml)\n"
    )
    hook.chmod(0o755)
    hooks = Hooks(directory=hooks_dir).for_vm(
        "5b0d6a52-4c3e-4a8e-9d6e-0b1a11000042", {"site_label": "blue"}
    )

    assert "<description>label=blue</description></domain>" in hooks.run("before_vm_start", DOMAIN)

    strict = Hooks(directory=hooks_dir).for_vm(
        hooks.vm.vm_id, {"site_label": "red", "site_strict": "True"}
    )
    with pytest.raises(HookError, match="strict sites refuse"):
        strict.run("before_vm_start", DOMAIN)
