"""Fencing another host through a fence agent, as VDSM's `Global.fenceNode` does.

The Engine asks one host to power-manage another through the latter's power
management device. The agent (`/usr/sbin/fence_<agent>`, Debian's fence-agents)
reads its parameters as `key=value` lines on stdin — so the password is never on
a command line — and answers with its exit status: for `status`, 0 is on and 2
is off; for `on`, `off` and `reboot`, 0 is done. VDSM's result shape:

    status, rc 0 / 2          -> {"power": "on" / "off"}
    status, other rc          -> error, code rc (1 if not 0-2), the agent's output
    on/off/reboot, rc 0       -> {"power": "unknown", "operationStatus": "initiated"}
    on/off/reboot, rc != 0    -> error, code rc (1 if not 0-2), the agent's output
    skipped by the policy     -> {"operationStatus": "skipped"}
    no such agent             -> UnsupportedFenceAgent (code 43)

The fencing policy: VDSM skips on/off/reboot when the target still renews its
sanlock lease on a domain of `storageDomainHostIdMap`; when that cannot be told
(here: no lease probe is wired, as when VDSM fails to ask), it fences. Gluster
policies are, as on a VDSM host without vdsm-gluster, logged and not enforced.

`run_agent` blocks (a subprocess); the fence actor runs it off its turn. The
rest is pure.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from hostvisor.actors.admin.errors import FenceFailed, UnsupportedFenceAgent
from hostvisor.actors.errors import InvalidArgument

log = logging.getLogger(__name__)

AGENT_DIR = Path("/usr/sbin")
AGENT_TIMEOUT = 170.0
"""Seconds an agent may run before it is killed (an IPMI power cycle can take minutes)."""
Action = Literal["status", "on", "off", "reboot"]
ACTIONS: Final = ("status", "on", "off", "reboot")
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_POLICY_BOOLEANS = ("skipFencingIfGlusterBricksUp", "skipFencingIfGlusterQuorumNotMet")


@dataclass(frozen=True, slots=True)
class Secret:
    """A password: its repr and str never show it (logs, error contexts, tracebacks)."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        """Never the value."""
        return "****"


LeaseProbe = Callable[[Mapping[str, int]], bool | None]
"""Returns whether the fenced host still holds a live lease on one of the domains
(domain UUID -> its host id); None when that cannot be told. Blocking."""


def _unknown_lease(_host_ids: Mapping[str, int]) -> bool | None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class FenceRequest:
    """One Host.fenceNode call, checked (see `request`)."""

    addr: str
    port: str
    agent: str
    username: str
    password: Secret
    action: Action
    secure: bool = False
    options: str = ""
    policy: Mapping[str, Any] | None = None

    def stdin(self) -> str:
        """The agent's input, as VDSM writes it (holds the password: never log it)."""
        text = (
            f"agent=fence_{self.agent}\nipaddr={self.addr}\nlogin={self.username}\n"
            f"action={self.action}\npasswd={self.password.value}\n"
        )
        if self.port:
            text += f"port={self.port}\n"
        if self.secure:
            text += "secure=yes\n"
        return text + self.options


def redacted(stdin: str) -> str:
    """`stdin` with the password line masked, for the debug log (VDSM's hidePasswd)."""
    return "".join(
        "passwd=XXXX\n" if line.startswith("passwd=") else line
        for line in stdin.splitlines(keepends=True)
    )


@dataclass(frozen=True, slots=True)
class FenceResult:
    """What fenceNode answers on success: `power` and/or `operationStatus`."""

    power: str | None = None
    operation_status: str | None = None

    def wire(self) -> dict[str, str]:
        """The JSON-RPC result (VDSM's Host_fenceNode_Ret: only the keys that are set)."""
        result = {}
        if self.power is not None:
            result["power"] = self.power
        if self.operation_status is not None:
            result["operationStatus"] = self.operation_status
        return result


SKIPPED = FenceResult(operation_status="skipped")


# -- checking the Engine's params (pure) -------------------------------------------------------


def tobool(value: Any) -> bool:
    """VDSM's conv.tobool: True, "true" (any case) or a non-zero integer (or its string).

    Raises:
        InvalidArgument: `value` is neither a boolean, a string nor an integer.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        if value.strip().lower() == "true":
            return True
        try:
            return int(value) != 0
        except ValueError:
            return False
    raise InvalidArgument(param="secure", expected="boolean")


def request(  # noqa: PLR0913 - the verb's params, as the Engine sends them
    *,
    addr: str,
    port: str | int,
    agent: str,
    username: str,
    password: str,
    action: str,
    secure: Any = False,
    options: str = "",
    policy: Mapping[str, Any] | None = None,
) -> FenceRequest:
    """Return the checked request (pure).

    The Engine sends `port` and `secure` as strings ("" when unset), so both
    spellings are taken. A newline in a one-line param would let the caller
    add lines of its own to the agent's input, so it is refused.

    Raises:
        InvalidArgument: an unknown action, a newline in a one-line param, a policy
            of the wrong shape.
        UnsupportedFenceAgent: `agent` cannot be an agent's name.
    """
    if action not in ACTIONS:
        raise InvalidArgument(param="action", expected=f"one of {', '.join(ACTIONS)}")
    if not _AGENT_NAME.fullmatch(agent):
        raise UnsupportedFenceAgent(agent=agent)
    port_text = str(port)
    for name, value in (("addr", addr), ("port", port_text), ("username", username)):
        if "\n" in value or "\r" in value:
            raise InvalidArgument(param=name, reason="must be one line")
    if "\n" in password or "\r" in password:
        raise InvalidArgument(param="password", reason="must be one line")
    _check_policy(policy)
    if options and not options.endswith("\n"):
        options += "\n"
    return FenceRequest(
        addr=addr,
        port=port_text,
        agent=agent,
        username=username,
        password=Secret(password),
        action=action,  # type: ignore[arg-type]  # checked against ACTIONS above
        secure=tobool(secure),
        options=options,
        policy=policy,
    )


def _check_policy(policy: Mapping[str, Any] | None) -> None:
    if policy is None:
        return
    host_ids = policy.get("storageDomainHostIdMap")
    if host_ids is not None and not (
        isinstance(host_ids, dict) and all(type(host_id) is int for host_id in host_ids.values())
    ):
        raise InvalidArgument(param="policy", reason="storageDomainHostIdMap: {uuid: int}")
    for name in _POLICY_BOOLEANS:
        if name in policy and not isinstance(policy[name], bool):
            raise InvalidArgument(param="policy", reason=f"{name} must be a boolean")


def should_fence(request: FenceRequest, lease_live: LeaseProbe = _unknown_lease) -> bool:
    """Whether the policy lets `request` run (blocking only through `lease_live`).

    `status` always runs; without a policy, or without storage domains in it, so
    does everything; a host holding a live lease is not fenced; when that cannot
    be told, it is (VDSM's behaviour when asking for lease status fails).
    """
    policy = request.policy
    if request.action == "status" or not policy:
        return True
    host_ids = policy.get("storageDomainHostIdMap")
    if host_ids:
        live = lease_live(host_ids)
        if live:
            log.info("not fencing %s: it holds a live storage lease", request.addr)
            return False
        if live is None:
            log.warning("lease status of %s unknown: fencing", request.addr)
    if any(policy.get(name) for name in _POLICY_BOOLEANS):
        log.error("gluster fencing policies are not enforced on this host (no gluster)")
    return True


# -- running the agent (blocking) ---------------------------------------------------------------


def agent_path(agent: str, agent_dir: Path = AGENT_DIR) -> Path:
    """Return the executable of `agent` (blocking: one stat).

    Raises:
        UnsupportedFenceAgent: no executable `fence_<agent>` in `agent_dir`.
    """
    path = agent_dir / f"fence_{agent}"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise UnsupportedFenceAgent(agent=agent)
    return path


def run_agent(
    request: FenceRequest,
    *,
    agent_dir: Path = AGENT_DIR,
    timeout: float = AGENT_TIMEOUT,
    lease_live: LeaseProbe = _unknown_lease,
) -> FenceResult:
    """Run the agent for `request` and return VDSM's answer (blocking: a subprocess).

    The agent's argv is its path alone; every parameter, the password included,
    goes on its stdin.

    Raises:
        UnsupportedFenceAgent: the agent is not installed.
        FenceFailed: the agent failed, timed out, or could not tell the power state.
    """
    if not should_fence(request, lease_live):
        return SKIPPED
    path = agent_path(request.agent, agent_dir)
    stdin = request.stdin()
    log.info(
        "fence agent %s: %s %s (port %r)", path.name, request.action, request.addr, request.port
    )
    try:
        done = subprocess.run(
            [str(path)],
            input=stdin.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FenceFailed(1, f"fence agent {path.name} timed out after {timeout:g} s") from None
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    log.debug("rc %s in %s out %s err %s", done.returncode, redacted(stdin), out, err)
    return interpret(request.action, done.returncode, out + err)


def interpret(action: str, rc: int, output: str) -> FenceResult:
    """VDSM's reading of an agent's exit status (pure; see the module's table).

    Raises:
        FenceFailed: the action failed, or the power state is unknown.
    """
    if not 0 <= rc <= 2:  # noqa: PLR2004 - the agents' documented exit statuses
        raise FenceFailed(1, output)
    if action == "status":
        if rc == 0:
            return FenceResult(power="on")
        if rc == 2:  # noqa: PLR2004
            return FenceResult(power="off")
        raise FenceFailed(rc, output)
    if rc != 0:
        raise FenceFailed(rc, output)
    return FenceResult(power="unknown", operation_status="initiated")
