"""Two hosts on one machine: each its own namespaces, libvirtd and Hostvisor agent.

The recipe of ENVIRONMENT.md ("Two hosts on one machine"), as a harness every
cross-host test uses (migration, and later sanlock and SPM contention):

    fabric (netns, bridge br0 198.51.100.1/24)
      ├── veth ── host h1 (netns + mount ns): eth0 198.51.100.11, libvirtd, agent :54321
      └── veth ── host h2 (netns + mount ns): eth0 198.51.100.12, libvirtd, agent :54321

Each host's libvirtd runs in its own network namespace and a private mount
namespace where /etc/libvirt, /run/libvirt, /var/lib/libvirt and /var/log/libvirt
are the test's own directories; it listens for peers on TCP inside its namespace.
The agent is started inside the same namespaces (nsenter on libvirtd's pid) on
`qemu:///system`, with TLS and a host certificate of the test's CA, and a host id
of its own. Disks live under the test's directory, which both hosts see at the same
path. Addresses are TEST-NET-2 (RFC 5737), only inside namespaces the harness made.

The test process reaches each libvirtd through its unix socket (the private run
directory is a plain directory here) and each agent through the fabric namespace.
Everything is stopped by the pid the harness started, and the namespaces deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import ssl
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from harness.components import need
from harness.daemons import Daemon
from harness.netns import TestNamespace, ip
from harness.pki import Pki, host_cert, make_pki
from hostvisor.api.client import Client, connect
from hostvisor.api.tls import client_context

T = TypeVar("T")

SUBNET = "198.51.100"
"""TEST-NET-2 (RFC 5737): documentation addresses, used only inside our namespaces."""

AGENT_PORT = 54321
SERVE = [sys.executable, "-m", "hostvisor.api.cli", "serve"]

QEMU_CONF = """\
user = "root"
group = "root"
security_driver = "none"
stdio_handler = "file"
"""

LIBVIRTD_CONF = """\
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
listen_addr = "{address}"
host_uuid = "{host_uuid}"
unix_sock_group = "root"
"""

AGENT_CONF = """\
[vars]
ssl = true
vm_sample_interval = 0.5
host_sample_stats_interval = 1
[addresses]
management_ip = {address}
management_port = {port}
[hostvisor]
libvirt_uri = qemu:///system
key_file = {key}
cert_file = {cert}
ca_file = {ca}
vm_powering_up_seconds = 0
migration_libvirt_transport = tcp
migration_allow_unsafe = true
{extra}[sanlock]
io_timeout = 1
"""
"""A test host's agent config. `[sanlock] io_timeout = 1` (VDSM's default is 10) makes a
lockspace join take ~3 s instead of ~21 s; every host of a test data center has it."""

# libvirtd's private directories: the machine path each one is bind-mounted over.
PRIVATE_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
}

_hosts = itertools.count(11)


class Fabric:
    """The test network: a namespace holding the bridge every test host is plugged into."""

    def __init__(self) -> None:
        need(os.geteuid() == 0, "two test hosts need root (namespaces, bridges, libvirtd)")
        for tool in ("libvirtd", "nsenter", "unshare", "ip", "openssl"):
            need(shutil.which(tool) is not None, f"{tool} is not installed")
        self.namespace = TestNamespace(nics=(), prefix="hvfab")
        self.namespace.ip("link", "add", "br0", "type", "bridge")
        self.namespace.ip("addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        self.namespace.ip("link", "set", "br0", "up")
        self._ports = itertools.count(1)

    def plug(self, host_namespace: str, address: str) -> None:
        """Give `host_namespace` an `eth0` at `address`, wired to the bridge."""
        port = f"port{next(self._ports)}"
        self.namespace.ip(
            "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host_namespace
        )
        self.namespace.ip("link", "set", port, "master", "br0", "up")
        ip("-n", host_namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", host_namespace, "link", "set", "eth0", "up")

    def run_inside(self, fn: Callable[[], T]) -> T:
        """Run `fn` where the hosts are reachable (sockets it makes stay in the fabric)."""
        return self.namespace.run_inside(fn)

    def delete(self) -> None:
        self.namespace.delete()


class TestHost:
    """One test host: a network namespace on the fabric, its libvirtd, its agent."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        fabric: Fabric,
        pki: Pki,
        directory: Path,
        *,
        qemu_extra: str = "",
        **agent_settings: Any,
    ) -> None:
        """Make the host's namespace and directories and start its libvirtd (not the agent).

        `qemu_extra`: lines added to its qemu.conf (`lock_manager = "sanlock"`).
        """
        self.qemu_extra = qemu_extra
        self.fabric = fabric
        self.pki = pki
        self.directory = directory
        self.index = next(_hosts)
        self.name = f"h{self.index}"
        self.address = f"{SUBNET}.{self.index}"
        self.host_uuid = str(uuid.uuid4())
        self.state_dir = directory / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "host.id").write_text(self.host_uuid + "\n")
        self.namespace = TestNamespace(nics=(), prefix="hvmig")
        fabric.plug(self.namespace.name, self.address)
        self.cert, self.key = host_cert(pki, self.name, self.address)
        self.agent_settings = agent_settings
        self.libvirtd = self._start_libvirtd()
        self.agents: list[Daemon] = []

    # -- libvirt ------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.directory / "run" / "libvirt-sock"

    @property
    def libvirt_uri(self) -> str:
        """This host's libvirtd, as the test process reaches it (its unix socket)."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def peer_uri(self) -> str:
        """This host's libvirtd, as another host's libvirtd reaches it (TCP on the fabric)."""
        return f"qemu+tcp://{self.address}/system"

    @property
    def migration_uri(self) -> str:
        """Where QEMU sends a guest's memory to this host (not the machine's hostname)."""
        return f"tcp://{self.address}"

    def _start_libvirtd(self) -> Daemon:
        for name in PRIVATE_DIRS:
            (self.directory / name).mkdir(exist_ok=True)
        etc = self.directory / "etc"
        # SPICE over TLS with the host's certificate, as `vdsm-tool configure` sets it
        # up on a VDSM host (the Engine's XML asks for a TLS port and secure channels).
        spice = self.directory / "spice"
        spice.mkdir(exist_ok=True)
        shutil.copyfile(self.pki.ca_cert, spice / "ca-cert.pem")
        shutil.copyfile(self.cert, spice / "server-cert.pem")
        shutil.copyfile(self.key, spice / "server-key.pem")
        (etc / "qemu.conf").write_text(
            QEMU_CONF + f'spice_tls = 1\nspice_tls_x509_cert_dir = "{spice}"\n' + self.qemu_extra
        )
        (etc / "libvirtd.conf").write_text(
            LIBVIRTD_CONF.format(address=self.address, host_uuid=self.host_uuid)
        )
        mounts = []
        for name, target in PRIVATE_DIRS.items():
            Path(target).mkdir(parents=True, exist_ok=True)  # the mount point, empty
            mounts.append(f"mount --bind {self.directory / name} {target}")
        pid_file = self.directory / "libvirtd.pid"
        script = " && ".join([*mounts, f"exec libvirtd --listen --pid-file {pid_file}"])
        daemon = Daemon(
            ["ip", "netns", "exec", self.namespace.name,
             "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            self.directory / "libvirtd.log",
        )  # fmt: skip
        daemon.wait_ready(self.socket.exists, timeout=30)
        return daemon

    # -- the agent ----------------------------------------------------------------------

    def start_agent(self) -> Daemon:
        """Start `hostvisor serve` inside this host's namespaces (libvirtd's); do not wait."""
        config = self.directory / "vdsm.conf"
        extra = "".join(f"{key} = {value}\n" for key, value in self.agent_settings.items())
        config.write_text(
            AGENT_CONF.format(
                address=self.address,
                port=AGENT_PORT,
                key=self.key,
                cert=self.cert,
                ca=self.pki.ca_cert,
                extra=extra,
            )
        )
        argv = [
            "nsenter", "-t", str(self.libvirtd.pid), "-m", "-n", "--",
            *SERVE, "--config", str(config), "--state-dir", str(self.state_dir),
        ]  # fmt: skip
        agent = Daemon(argv, self.directory / f"agent-{len(self.agents)}.log")
        self.agents.append(agent)
        return agent

    @property
    def agent(self) -> Daemon:
        """The agent started last."""
        return self.agents[-1]

    def client_context(self) -> ssl.SSLContext:
        """An Engine's TLS identity for this host (the test CA's client certificate)."""
        pki = self.pki
        return client_context(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)

    def connect(self, timeout: float = 30.0) -> Client:
        """A client of this host's agent, as the Engine connects (TLS, from the fabric)."""
        context = self.client_context()
        return self.fabric.run_inside(
            lambda: connect(self.address, AGENT_PORT, tls=context, timeout=timeout)
        )

    def wait_agent(self, timeout: float = 60.0) -> None:
        """Wait until the agent answers `Host.ping` (failing early if it exits)."""

        def answers() -> bool:
            try:
                with self.connect(timeout=5) as cli:
                    cli.Host.ping()
            except (OSError, ssl.SSLError):
                return False
            except Exception:  # noqa: BLE001 - recovering (code 99) or not yet serving
                return False
            return True

        self.agent.wait_ready(answers, timeout=timeout)

    # -- teardown -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the agents and libvirtd by their pids (guests die with libvirtd's cleanup)."""
        for agent in self.agents:
            agent.stop()
        self._destroy_guests()
        self.libvirtd.stop()
        self.namespace.delete()

    def _destroy_guests(self) -> None:
        import libvirt  # noqa: PLC0415 - only where libvirt is installed

        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(self.libvirt_uri)
            try:
                for domain in conn.listAllDomains():
                    with contextlib.suppress(libvirt.libvirtError):
                        domain.destroy()
            finally:
                conn.close()


def engine_migration_params(destination: TestHost, vm_id: str, **changes: Any) -> dict[str, Any]:
    """VM.migrate's params as the Engine's MigrateBrokerVDSCommand puts them (`changes` win)."""
    params: dict[str, Any] = {
        "vmId": vm_id,
        "src": f"{SUBNET}.1",
        "dst": f"{destination.address}:{AGENT_PORT}",
        "method": "online",
        "tunneled": "false",
        "abortOnError": "true",
        "autoConverge": "true",
        "compressed": "false",
        "encrypted": False,
        "maxBandwidth": 500,
        "enableGuestEvents": True,
        "incomingLimit": 2,
        "outgoingLimit": 2,
        "convergenceSchedule": {
            "init": [{"name": "setDowntime", "params": ["100"]}],
            "stalling": [
                {"limit": 1, "action": {"name": "setDowntime", "params": ["150"]}},
                {"limit": -1, "action": {"name": "abort", "params": []}},
            ],
        },
    }
    params.update(changes)
    return params


def vm_statuses(host: TestHost) -> dict[str, dict[str, Any]]:
    """`Host.getAllVmStats` of `host`'s agent, by VM id."""
    with host.connect() as cli:
        return {vm["vmId"]: vm for vm in cli.Host.getAllVmStats()}


def status_of(host: TestHost, vm_id: str) -> str | None:
    """The VM's status as `host`'s agent reports it; None if it reports no such VM."""
    vm = vm_statuses(host).get(vm_id)
    return None if vm is None else str(vm["status"])


def domain_state(host: TestHost, vm_id: str) -> int | None:
    """libvirt's state of the domain on `host`, None if that libvirt has no such domain."""
    import libvirt  # noqa: PLC0415 - only where libvirt is installed

    conn = libvirt.open(host.libvirt_uri)
    try:
        state: int = conn.lookupByUUIDString(vm_id).state()[0]
    except libvirt.libvirtError:
        return None
    else:
        return state
    finally:
        conn.close()


@contextlib.contextmanager
def two_hosts(directory: Path, **agent_settings: Any) -> Iterator[tuple[TestHost, TestHost]]:
    """Bring up two test hosts with their libvirtd and agent; tear everything down after."""
    fabric = Fabric()
    hosts: list[TestHost] = []
    try:
        pki = make_pki(directory / "pki")
        for n in (1, 2):
            host = TestHost(fabric, pki, directory / f"h{n}", **agent_settings)
            hosts.append(host)
            host.start_agent()
        for host in hosts:
            host.wait_agent()
        yield hosts[0], hosts[1]
    finally:
        for host in hosts:
            host.stop()
        fabric.delete()
