"""Run the scripts of a hook point, as VDSM's `hooks._runHooksDir` does (blocking).

For a point P, the scripts are the executable files directly in `<directory>/P/`
(hidden files aside), run one after the other in lexical order. Each gets:

- the data in a temporary file its environment names: `_hook_domxml` (the domain or
  device XML; empty for points that hand over nothing) or `_hook_json` (a JSON
  document). A script edits the data by rewriting that file; the next script, and
  the operation, get the file as the last script left it;
- the agent's environment, plus the operation's parameters (a device's custom
  properties), the VM's custom properties (`ovirt-vm:custom`, which win), and `vmId`;
  its PYTHONPATH ends with the directory of `hooking` (`scripting/`), so that VDSM's
  Python hooks' `import hooking` works;
- no stdin; its stdout is ignored, its stderr is kept for the error and the log.

Exit status 0 is success, 1 a failure, 2 a failure that skips the scripts after it;
anything else is a failure logged as unexpected. A script that outlives `timeout`
is killed with its whole process group and counts as a failure (VDSM waits forever;
an agent must not). When a script failed, a vetoing point raises `HookError` with
the last failure (after the other scripts ran, as VDSM); any other point logs it.

Every method blocks (fork/exec, file I/O, waiting for scripts): call them on the
work facility, never on an actor's thread. A `Hooks` is immutable and may be used
from several workers at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostvisor.actors.hooks.errors import HookError
from hostvisor.actors.hooks.points import Point, point

__all__ = ["DEFAULT_DIRECTORY", "NO_HOOKS", "Hooks", "VmContext", "VmHooks"]

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path("/usr/libexec/vdsm/hooks")
"""Where VDSM's hooks live (VDSM's P_VDSM_HOOKS)."""
DEFAULT_TIMEOUT = 120.0
"""Seconds one script may run before it is killed."""
SKIP_REST = 2
"""A script's exit status that stops the scripts after it (VDSM)."""
_ERR_CHARS = 2000
"""The most characters of a script's stderr kept in an error."""
SCRIPTING = Path(__file__).resolve().parent / "scripting"
"""Put on the scripts' PYTHONPATH: Python hooks `import hooking`, as under VDSM."""


@dataclass(frozen=True, slots=True)
class VmContext:
    """The VM a hook runs for (VDSM's `vmconf`): its id and custom properties.

    Attributes:
        vm_id: exported to the scripts as `vmId`.
        custom: the VM's custom properties (`<ovirt-vm:custom>`), exported by name.
    """

    vm_id: str
    custom: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Failure:
    script: str
    rc: int | None
    err: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Hooks:
    """A host's hooks directory, and how long one script may run.

    Attributes:
        directory: holds one directory per hook point; None: no hooks at all.
        timeout: seconds one script may run before it is killed (a failure).
    """

    directory: Path | None = DEFAULT_DIRECTORY
    timeout: float = DEFAULT_TIMEOUT

    @property
    def enabled(self) -> bool:
        """Whether there is a hooks directory to look in (does not block)."""
        return self.directory is not None

    def for_vm(self, vm_id: str, custom: Mapping[str, str] | None = None) -> VmHooks:
        """These hooks, run for VM `vm_id` with its custom properties (does not block)."""
        return VmHooks(self, VmContext(vm_id, dict(custom or {})))

    def scripts(self, name: str) -> list[Path]:
        """The scripts of hook point `name`, in the order they run (blocking: lists a dir)."""
        if self.directory is None:
            return []
        return _scripts(self.directory / point(name).name)

    def installed(self) -> dict[str, dict[str, dict[str, str]]]:
        """Return getCapabilities' `hooks`: {point: {script: {"checksum": sha256 hex}}} (blocking).

        As VDSM's `hooks.installed()`: every directory of the hooks directory that
        holds at least one script, whatever its name; a script that cannot be read
        has an empty checksum. No directory: no hooks.
        """
        if self.directory is None or not self.directory.is_dir():
            return {}
        found: dict[str, dict[str, dict[str, str]]] = {}
        for entry in sorted(self.directory.iterdir()):
            scripts = _scripts(entry) if entry.is_dir() else []
            if scripts:
                found[entry.name] = {s.name: {"checksum": _checksum(s)} for s in scripts}
        return found

    def run(
        self,
        name: str,
        data: Any = None,
        *,
        vm: VmContext | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Run the scripts of hook point `name` on `data`; return the data they leave.

        `data` is an XML string for an "xml" point, a JSON-serialisable value for a
        "json" one, and ignored (None is returned) for a point that hands nothing over.
        With no scripts, `data` comes back as it is, and nothing is written.

        Raises:
            HookError: a script of a vetoing point failed (or left JSON that does
                not parse); the data it left is not used.
            KeyError: VDSM has no hook point `name`.
        """
        hook = point(name)
        scripts = self.scripts(name)
        if not scripts:
            return data
        fd, path = tempfile.mkstemp(prefix=f"hook-{hook.name}-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(_encode(hook, data))
            env = _environment(hook, path, vm, params)
            failures = self._run_scripts(hook, scripts, env)
            text = Path(path).read_text(encoding="utf-8")
        finally:
            with contextlib.suppress(OSError):
                Path(path).unlink()
        if failures:
            _failed(hook, failures[-1])
        return _decode(hook, text, data)

    def _run_scripts(self, hook: Point, scripts: list[Path], env: dict[str, str]) -> list[_Failure]:
        failures: list[_Failure] = []
        for script in scripts:
            rc, err = _run_one(script, env, self.timeout)
            log.info("hook %s: %s: rc=%s err=%s", hook.name, script.name, rc, err[:200])
            if rc == 0:
                continue
            failures.append(_Failure(script.name, rc, err))
            if rc == SKIP_REST:
                break
            if rc is not None and rc > SKIP_REST:
                log.warning("hook %s: %s returned unexpected code %s", hook.name, script, rc)
        return failures


@dataclass(frozen=True, slots=True)
class VmHooks:
    """A host's hooks bound to one VM: what the VM's parts call, on a worker.

    A VM part (start, destroy, migration, hotplug…) runs a point in the blocking
    call it hands the work facility, around its libvirt call:

        xml = self.hooks.run("before_nic_hotplug", nic_xml, params=nic_custom)
        ... attach xml ...
        self.hooks.notify("after_nic_hotplug", xml, params=nic_custom)

    `run` raises `HookError` for a vetoing point (the operation then fails with its
    code, 1500, as VDSM's hotplug, pause and cont do); `notify` never raises.
    """

    hooks: Hooks
    vm: VmContext

    @property
    def enabled(self) -> bool:
        """Whether there is a hooks directory to look in (does not block)."""
        return self.hooks.enabled

    def has(self, name: str) -> bool:
        """Whether hook point `name` has scripts (blocking: lists a directory)."""
        return bool(self.hooks.scripts(name))

    def run(self, name: str, data: Any = None, *, params: Mapping[str, str] | None = None) -> Any:
        """Run hook point `name` for this VM (`Hooks.run`; blocking).

        Raises:
            HookError: a script of a vetoing point failed.
            OSError: the data file could not be written or read.
        """
        return self.hooks.run(name, data, vm=self.vm, params=params)

    def notify(
        self, name: str, data: Any = None, *, params: Mapping[str, str] | None = None
    ) -> Any:
        """Run hook point `name` for this VM; log any failure and never raise (blocking).

        Returns the data the scripts left, or `data` when they failed.
        """
        try:
            return self.hooks.run(name, data, vm=self.vm, params=params)
        except (HookError, OSError) as error:
            log.warning("VM %s: hook %s failed: %s", self.vm.vm_id, name, error)
            return data


NO_HOOKS = Hooks(directory=None)
"""No hooks directory: every point runs nothing."""


def _scripts(directory: Path) -> list[Path]:
    """Executable regular files directly in `directory` (hidden ones aside), sorted."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    runnable = (e for e in entries if not e.name.startswith(".") and e.is_file())
    return sorted((e for e in runnable if os.access(e, os.X_OK)), key=lambda e: e.name)


def _checksum(script: Path) -> str:
    try:
        return hashlib.sha256(script.read_bytes()).hexdigest()
    except OSError:
        return ""


def _encode(hook: Point, data: Any) -> str:
    if hook.data == "json":
        return json.dumps(data)
    if hook.data == "none" or data is None:
        return ""
    return str(data)


def _decode(hook: Point, text: str, data: Any) -> Any:
    if hook.data == "none":
        return None
    if hook.data == "xml":
        return text
    try:
        return json.loads(text)
    except ValueError as error:
        failure = _Failure("", None, f"the JSON the scripts left does not parse: {error}")
        _failed(hook, failure)
        return data  # not vetoing: the operation goes on with its own data


def _environment(
    hook: Point, path: str, vm: VmContext | None, params: Mapping[str, str] | None
) -> dict[str, str]:
    """The scripts' environment: the agent's, the params, the VM's custom properties, vmId."""
    env = dict(os.environ)
    for source in (params or {}, vm.custom if vm is not None else {}):
        for key, value in source.items():
            if key and "=" not in key and "\0" not in key + str(value):
                env[key] = str(value)
    if vm is not None and vm.vm_id:
        env["vmId"] = vm.vm_id
    env["PYTHONPATH"] = ":".join(
        [*filter(None, env.get("PYTHONPATH", "").split(":")), str(SCRIPTING)]
    )
    env["_hook_json" if hook.data == "json" else "_hook_domxml"] = path
    return env


def _run_one(script: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run one script; return its exit status (None: killed at the timeout) and stderr."""
    try:
        process = subprocess.Popen(  # the host's own hook scripts, no shell
            [str(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except OSError as error:  # not a runnable file after all (no interpreter, bad ELF)
        return 1, f"cannot run: {error}"
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, f"killed after {timeout:g} s"
    if out:
        log.debug("hook script %s wrote: %s", script, out[:_ERR_CHARS])
    return process.returncode, err.decode("utf-8", "replace").strip()[:_ERR_CHARS]


def _failed(hook: Point, failure: _Failure) -> None:
    """Raise `HookError` for a vetoing point; log the failure otherwise."""
    error = HookError(hook=hook.name, script=failure.script, rc=failure.rc, err=failure.err)
    if hook.vetoes:
        raise error
    log.warning("%s", error)
