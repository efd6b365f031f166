"""Live migration, the pure part: the Engine's request, libvirt's terms, the schedule, progress.

Nothing here calls libvirt or the network; the VM actor and the work facility do
(`actors/vm/migrating.py`). Facts follow VDSM (`lib/vdsm/virt/migration.py`) and the
Engine's `MigrateBrokerVDSCommand`, which sends, in `VM.migrate`'s `params`:

- `dst` ("host" or "host:port" of the destination agent), `dstqemu` (the address
  QEMU's stream goes to, a migration network), `method` ("online"), `src`, `vmId`;
- strings "true"/"false" for `tunneled`, `abortOnError`, `autoConverge`,
  `compressed`; booleans for `encrypted`, `enableGuestEvents`, `zerocopy`;
- integers for `maxBandwidth` (MiB/s), `parallel` (connections), `incomingLimit`,
  `outgoingLimit`; `downtime` (ms, as a string) when it sends no schedule;
- `convergenceSchedule`: `{"init": [action…], "stalling": [{"limit": n,
  "action": action}…]}`, an action being `{"name": "setDowntime"|"postcopy"|
  "abort", "params": ["…"]}`; limit -1 means "once every other step is spent";
- `cpusets` and `numaNodesets` (lists of strings) for a VM with an exclusive CPU
  pinning policy: its pinning on the destination (`actors/vm/migration_pinning.py`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import libvirt

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import migration_pinning
from hostvisor.actors.vm.migration_pinning import CpuSets, NodeSets

SET_DOWNTIME = "setDowntime"
POSTCOPY = "postcopy"
ABORT = "abort"
ACTIONS = frozenset({SET_DOWNTIME, POSTCOPY, ABORT})

DEFAULT_PORT = 54321
MAX_PORT = 65535
DEFAULT_DOWNTIME_MS = 500
"""VDSM's `migration_downtime`: the largest pause a legacy (scheduleless) migration allows."""
DOWNTIME_STEPS = 10
"""VDSM's `migration_downtime_steps`."""
DEFAULT_BANDWIDTH = 52
"""VDSM's `migration_max_bandwidth` (MiB/s) when the Engine names none."""


# -- the convergence schedule --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a schedule: set the allowed downtime, switch to post-copy, or abort."""

    name: str
    params: tuple[str, ...] = ()

    @property
    def downtime_ms(self) -> int:
        """The downtime a `setDowntime` action sets (milliseconds)."""
        return int(self.params[0])


@dataclass(frozen=True, slots=True)
class StallingStep:
    """Run `action` once the migration has stalled for more than `limit` iterations."""

    limit: int
    action: Action


@dataclass(frozen=True, slots=True)
class Schedule:
    """What to do at the start (`init`) and while the migration stalls (`stalling`)."""

    init: tuple[Action, ...] = ()
    stalling: tuple[StallingStep, ...] = ()

    @property
    def wants_postcopy(self) -> bool:
        """Whether some step may switch to post-copy (libvirt must be told at the start)."""
        return any(step.action.name == POSTCOPY for step in self.stalling)

    @classmethod
    def from_wire(cls, value: Any) -> Schedule:
        """Parse the Engine's `convergenceSchedule`.

        Raises:
            InvalidArgument: not the shape above, or an unknown action.
        """
        if not isinstance(value, Mapping):
            raise InvalidArgument(param="convergenceSchedule", reason="must be an object")
        init = _list(value.get("init", []), "convergenceSchedule.init")
        stalling = _list(value.get("stalling", []), "convergenceSchedule.stalling")
        steps = []
        for n, step in enumerate(stalling):
            where = f"convergenceSchedule.stalling[{n}]"
            if not isinstance(step, Mapping):
                raise InvalidArgument(param=where, reason="must be an object")
            steps.append(
                StallingStep(
                    limit=_int(step.get("limit"), f"{where}.limit"),
                    action=_action(step.get("action"), f"{where}.action"),
                )
            )
        actions = tuple(_action(a, f"convergenceSchedule.init[{n}]") for n, a in enumerate(init))
        return cls(init=actions, stalling=tuple(steps))

    @classmethod
    def legacy(cls, max_downtime_ms: int, steps: int = DOWNTIME_STEPS) -> Schedule:
        """The schedule VDSM computes when the Engine sends none (old Engines, fallback).

        The allowed downtime grows exponentially to `max_downtime_ms`, one step per
        stalled iteration; stalled long after that, the migration is aborted.
        """
        downtimes = list(exponential_downtime(max_downtime_ms, steps))
        init = (Action(SET_DOWNTIME, (str(downtimes[0]),)),)
        stalling = [
            StallingStep(limit, Action(SET_DOWNTIME, (str(downtime),)))
            for limit, downtime in enumerate(downtimes[1:], start=1)
        ]
        stalling.append(StallingStep(42, Action(SET_DOWNTIME, (str(downtimes[-1]),))))
        stalling.append(StallingStep(-1, Action(ABORT)))
        return cls(init=init, stalling=tuple(stalling))


def exponential_downtime(downtime: int, steps: int) -> Iterator[int]:
    """`steps` downtimes from about downtime/steps up to `downtime`, growing exponentially."""
    if steps <= 1:
        yield downtime
        return
    offset = downtime / steps
    base = (downtime - offset) ** (1 / (steps - 1))
    for i in range(steps):
        yield int(offset + base**i)


@dataclass(slots=True)
class ScheduleRunner:
    """Where a running migration is in its schedule (owned by the VM actor; not thread-safe).

    Feed it each progress sample; it answers the actions now due. As VDSM: a step
    runs when the migration has gone more memory iterations than the step's limit
    since the first sample, one step per new iteration; -1 steps run last.
    """

    schedule: Schedule
    _pending: list[StallingStep] = field(default_factory=list)
    _first_iteration: int | None = None
    _last_iteration: int | None = None
    lowmark: int | None = None
    """The least data remaining seen so far (bytes): more than it means stalling."""

    def __post_init__(self) -> None:
        """Take the schedule's stalling steps as the ones still to run."""
        self._pending = list(self.schedule.stalling)

    def start(self) -> tuple[Action, ...]:
        """The actions to run as the migration starts."""
        return self.schedule.init

    def on_progress(self, progress: Progress, *, postcopy: bool = False) -> list[Action]:
        """Return the actions due after `progress` (none once post-copy runs)."""
        if self._first_iteration is None:
            self._first_iteration = self._last_iteration = progress.mem_iteration
        if postcopy:
            return []
        if self.lowmark is None or progress.data_remaining < self.lowmark:
            self.lowmark = progress.data_remaining
        last = self._last_iteration if self._last_iteration is not None else progress.mem_iteration
        if progress.mem_iteration <= last or not self._pending:
            return []
        self._last_iteration = progress.mem_iteration
        stalled = progress.mem_iteration - self._first_iteration
        head = self._pending[0]
        if head.limit < stalled:
            self._pending.pop(0)
            return [head.action]
        return []


# -- progress --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """One sample of libvirt's migration job (`virDomainGetJobStats`)."""

    elapsed_ms: int
    data_total: int
    data_processed: int
    data_remaining: int
    mem_bps: int = 0
    dirty_rate: int = -1
    mem_iteration: int = -1

    @classmethod
    def from_job_stats(cls, stats: Mapping[str, Any]) -> Progress:
        """Read a job-stats mapping (keys as libvirt's typed parameters name them)."""
        return cls(
            elapsed_ms=int(stats.get(libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED, 0)),
            data_total=int(stats.get(libvirt.VIR_DOMAIN_JOB_DATA_TOTAL, 0)),
            data_processed=int(stats.get(libvirt.VIR_DOMAIN_JOB_DATA_PROCESSED, 0)),
            data_remaining=int(stats.get(libvirt.VIR_DOMAIN_JOB_DATA_REMAINING, 0)),
            mem_bps=int(stats.get(libvirt.VIR_DOMAIN_JOB_MEMORY_BPS, 0)),
            dirty_rate=int(stats.get("memory_dirty_rate", -1)),
            mem_iteration=int(stats.get("memory_iteration", -1)),
        )

    @property
    def percentage(self) -> int:
        """Data sent so far, 0-99 while running (100 only once nothing remains)."""
        if self.data_remaining == 0 and self.data_total:
            return 100
        done = 100 - 100 * self.data_remaining // self.data_total if self.data_total else 0
        return min(done, 99)


def outgoing(stats: Mapping[str, Any]) -> bool:
    """Whether a job-stats mapping shows an outgoing migration under way."""
    kind = stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE)
    operation = stats.get("operation")
    return bool(
        kind != libvirt.VIR_DOMAIN_JOB_NONE
        and operation == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
    )


# -- the request -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationRequest:
    """`VM.migrate`'s params, checked and typed."""

    vm_id: str
    dst_host: str
    dst_port: int
    dstqemu: str = ""
    tunneled: bool = False
    abort_on_error: bool = False
    compressed: bool = False
    auto_converge: bool = False
    encrypted: bool = False
    zerocopy: bool = False
    enable_guest_events: bool = False
    max_bandwidth: int = DEFAULT_BANDWIDTH
    parallel: int | None = None
    console_address: str | None = None
    incoming_limit: int | None = None
    outgoing_limit: int | None = None
    schedule: Schedule = field(default_factory=lambda: Schedule.legacy(DEFAULT_DOWNTIME_MS))
    cpusets: CpuSets | None = None
    """Each vCPU's cpuset on the destination (the Engine's `cpusets`), or None."""
    numa_nodesets: NodeSets | None = None
    """Each vNUMA cell's host nodes on the destination (`numaNodesets`), or None."""

    @classmethod
    def from_params(cls, vm_id: str, params: Any) -> MigrationRequest:
        """Check and type the Engine's params (unknown keys are ignored, as VDSM does).

        Raises:
            InvalidArgument: a missing `dst`, a value of the wrong type, a bad schedule,
                `cpusets`/`numaNodesets` not lists of cpulist strings (their lengths are
                checked against the VM by `check_pinning`).
        """
        if not isinstance(params, Mapping):
            raise InvalidArgument(param="params", reason="must be an object")
        if params.get("mode", "remote") != "remote":
            raise InvalidArgument(param="mode", reason="only remote migration is supported")
        host, port = split_host_port(_text(params.get("dst"), "dst"))
        if "convergenceSchedule" in params:
            schedule = Schedule.from_wire(params["convergenceSchedule"])
        else:
            downtime = params.get("downtime", DEFAULT_DOWNTIME_MS)
            schedule = Schedule.legacy(_int(downtime, "downtime"))
        parallel = _optional_int(params.get("parallel"), "parallel")
        return cls(
            vm_id=vm_id,
            dst_host=host,
            dst_port=port,
            dstqemu=_text(params.get("dstqemu", ""), "dstqemu", empty=True),
            tunneled=_flag(params.get("tunneled"), "tunneled"),
            abort_on_error=_flag(params.get("abortOnError"), "abortOnError"),
            compressed=_flag(params.get("compressed"), "compressed"),
            auto_converge=_flag(params.get("autoConverge"), "autoConverge"),
            encrypted=_flag(params.get("encrypted"), "encrypted"),
            zerocopy=_flag(params.get("zerocopy"), "zerocopy"),
            enable_guest_events=_flag(params.get("enableGuestEvents"), "enableGuestEvents"),
            max_bandwidth=_optional_int(params.get("maxBandwidth"), "maxBandwidth")
            or DEFAULT_BANDWIDTH,
            parallel=parallel if parallel and parallel > 0 else None,
            console_address=_optional_text(params.get("consoleAddress"), "consoleAddress"),
            incoming_limit=_limit(params.get("incomingLimit"), "incomingLimit"),
            outgoing_limit=_limit(params.get("outgoingLimit"), "outgoingLimit"),
            schedule=schedule,
            cpusets=migration_pinning.cpusets_from_wire(params.get("cpusets")),
            numa_nodesets=migration_pinning.nodesets_from_wire(params.get("numaNodesets")),
        )

    def check_pinning(self, xml: str) -> None:
        """Check `cpusets`/`numaNodesets` against the VM's domain XML (as VDSM's migrate).

        Raises:
            InvalidArgument: a list whose length is not the VM's vCPUs or vNUMA cells.
        """
        migration_pinning.check_against(xml, self.cpusets, self.numa_nodesets)

    def destination_xml(self, xml: str) -> str:
        """`xml` re-pinned for the destination (`xml` itself when nothing changes)."""
        return migration_pinning.retarget(xml, self.cpusets, self.numa_nodesets)

    def flags(self) -> int:
        """Return libvirt's flags for this request (always live and peer-to-peer)."""
        flags: int = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
        # The destination keeps the domain defined, as VDSM does for clusters >= 4.2.
        flags |= libvirt.VIR_MIGRATE_PERSIST_DEST
        for wanted, flag in (
            (self.tunneled, libvirt.VIR_MIGRATE_TUNNELLED),
            (self.abort_on_error, libvirt.VIR_MIGRATE_ABORT_ON_ERROR),
            (self.compressed, libvirt.VIR_MIGRATE_COMPRESSED),
            (self.auto_converge, libvirt.VIR_MIGRATE_AUTO_CONVERGE),
            (self.encrypted, libvirt.VIR_MIGRATE_TLS),
            (self.parallel is not None, libvirt.VIR_MIGRATE_PARALLEL),
            (self.schedule.wants_postcopy, libvirt.VIR_MIGRATE_POSTCOPY),
            (self.zerocopy, getattr(libvirt, "VIR_MIGRATE_ZEROCOPY", 0)),
        ):
            if wanted:
                flags |= int(flag)
        return flags

    def destination_uri(self, *, tls: bool) -> str:
        """The destination's libvirtd, as the source's libvirtd reaches it (peer-to-peer)."""
        return f"qemu+{'tls' if tls else 'tcp'}://{_literal(self.dst_host)}/system"

    @property
    def migration_uri(self) -> str:
        """Where QEMU sends the memory: the migration network's address, else the host's."""
        return f"tcp://{_literal(self.dstqemu or self.dst_host)}"

    def libvirt_params(self, *, domain_xml: str, graphics: str | None) -> dict[str, Any]:
        """The typed parameters of `virDomainMigrateToURI3` for this request.

        Args:
            domain_xml: the migratable XML; the destination defines it re-pinned as
                `destination_xml` says.
            graphics: "spice" or "vnc" when the VM has a console to hand over.
        """
        params: dict[str, Any] = {
            libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: self.max_bandwidth,
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: self.destination_xml(domain_xml),
        }
        if self.parallel is not None:
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = self.parallel
        if not self.tunneled:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = self.migration_uri
        if self.console_address and graphics:
            params[libvirt.VIR_MIGRATE_PARAM_GRAPHICS_URI] = f"{graphics}://{self.console_address}"
        if self.encrypted:
            # The certificate names the host, not a migration network's address.
            params[libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION] = self.dst_host
        return params


_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>\d{1,5}))?$")


def split_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split "host", "host:port", "[v6]" or "[v6]:port" (brackets dropped from the host).

    Raises:
        InvalidArgument: not one of those forms, or a port out of range.
    """
    match = _HOST_PORT.match(text.strip())
    if match is None:
        raise InvalidArgument(param="dst", reason=f"not a host or host:port: {text!r}")
    host = match["host"].strip("[]")
    port = int(match["port"]) if match["port"] else default_port
    if not 0 < port <= MAX_PORT:
        raise InvalidArgument(param="dst", reason=f"port out of range: {port}")
    return host, port


def _literal(host: str) -> str:
    """An address as it goes in a URI: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


# -- checking one value ----------------------------------------------------------------


def _flag(value: Any, name: str) -> bool:
    """A boolean the Engine sends as a JSON boolean or as "true"/"false"."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidArgument(param=name, reason=f"must be a boolean, not {value!r}")


def _int(value: Any, name: str) -> int:
    """An integer the Engine may send as a number or as its decimal string."""
    if isinstance(value, bool):
        raise InvalidArgument(param=name, reason="must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,12}", value.strip()):
        return int(value)
    raise InvalidArgument(param=name, reason=f"must be an integer, not {value!r}")


def _optional_int(value: Any, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _limit(value: Any, name: str) -> int | None:
    limit = _optional_int(value, name)
    if limit is not None and limit < 1:
        raise InvalidArgument(param=name, reason="must be at least 1")
    return limit


def _text(value: Any, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise InvalidArgument(param=name, reason="must be a non-empty string")
    return value


def _optional_text(value: Any, name: str) -> str | None:
    return None if value in (None, "") else _text(value, name)


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidArgument(param=name, reason="must be a list")
    return value


def _action(value: Any, name: str) -> Action:
    if not isinstance(value, Mapping):
        raise InvalidArgument(param=name, reason="must be an object")
    action = value.get("name")
    if action not in ACTIONS:
        raise InvalidArgument(param=f"{name}.name", reason=f"unknown action {action!r}")
    params = tuple(str(p) for p in _list(value.get("params", []), f"{name}.params"))
    if action == SET_DOWNTIME:
        if len(params) != 1:
            raise InvalidArgument(param=f"{name}.params", reason="setDowntime takes one downtime")
        _int(params[0], f"{name}.params[0]")
    return Action(action, params)
