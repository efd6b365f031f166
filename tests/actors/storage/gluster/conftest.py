"""A real GlusterFS server for the storage tests: glusterd in a network namespace.

    root namespace (the test, its embedded host, the FUSE client)
      hvglN ── veth ── eth0 in namespace hvgl-<pid>: glusterd, the brick's glusterfsd
      198.51.100.249/30        198.51.100.250/30

glusterd (Debian glusterfs-server) runs in a network namespace made for the test
and in a private mount namespace whose /run/gluster and /var/log/glusterfs are
bind-mounted from the test's directory; its working directory, CLI socket and
listening address come from its own volfile, so nothing of the machine's gluster
state is used or left behind. It runs in the foreground (`-N`): the pid the test
started is glusterd's (one per test session). Each test gets a one-brick volume of
its own on a directory of the root file system (`force`: gluster refuses a brick on
`/` otherwise), created and started for it, stopped and deleted after it; the brick
process glusterd spawns is found by the pid glusterd reports for it (`volume status
--xml`), never by name.

The host mounts `198.51.100.250:/<volume>` with the FUSE client from the root
namespace, over the veth. The client names its own pid in its log (`Pid of current
running process is N`): the test passes `log-file=` in `mnt_options`, as an Engine
user may, and so knows which process to wait for (or stop) after the unmount.

Teardown, in reverse: each volume is stopped (glusterd stops its brick, whose pid is
killed if it is still there) and deleted; glusterd is stopped by its pid, and the
namespace is deleted (which deletes the veth pair).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.components import need
from harness.daemons import Daemon
from harness.sanlockd import Sanlockd, build_shim, need_sanlock
from harness.waiting import wait_for
from hostvisor.actors.storage.connections import mounts

SERVER = "198.51.100.250"
"""glusterd's address inside its namespace (TEST-NET-2, a /30 of its own)."""
CLIENT = "198.51.100.249"
"""The root namespace's end of the veth."""

GLUSTERD_VOL = """\
volume management
    type mgmt/glusterd
    option working-directory {lib}
    option glusterd-sockfile {socket}
    option transport-type socket
    option transport.socket.listen-port 24007
    option transport.socket.bind-address {address}
    option ping-timeout 0
    option event-threads 1
end-volume
"""

_CLIENT_PID = re.compile(rb"Pid of current running process is (\d+)")


def need_gluster() -> None:
    """Skip (fail under CI=true) unless glusterd, the gluster CLI and FUSE are here."""
    for tool in ("glusterd", "gluster", "glusterfs", "ip", "unshare"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (Debian glusterfs-server)")
    need(os.geteuid() == 0, "glusterd and a FUSE mount need root")
    need(Path("/dev/fuse").exists(), "no /dev/fuse: the kernel has no FUSE")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float = 10) -> None:
    """Wait for `pid` (a brick or FUSE client this test's server started) to end; if it
    does not, SIGKILL that pid."""
    with contextlib.suppress(pytest.fail.Exception):
        wait_for(lambda: not _alive(pid), timeout, f"process {pid} to end")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class GlusterServer:
    """glusterd in a namespace of its own; `volume()` makes a started one-brick volume."""

    def __init__(self, directory: Path) -> None:
        """Make the namespace and start glusterd."""
        self.directory = directory
        self.namespace = f"hvgl-{os.getpid()}"
        self.veth = f"hvgl{os.getpid() % 100000}"
        self.socket = directory / "glusterd.socket"
        self.glusterd: Daemon | None = None
        self._volumes = itertools.count(1)
        for name in ("lib", "run", "log"):
            (directory / name).mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", self.namespace)
        try:
            self._wire()
            self._start()
        except BaseException:
            self.stop()
            raise

    @contextlib.contextmanager
    def volume(self) -> Iterator[GlusterVolume]:
        """A new started one-brick volume; stopped (its brick by its pid) and deleted after."""
        made = GlusterVolume(self, f"hv{next(self._volumes)}")
        try:
            yield made
        finally:
            made.delete()

    def _wire(self) -> None:
        _ip(
            "link",
            "add",
            self.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.namespace,
        )
        _ip("addr", "add", f"{CLIENT}/30", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", self.namespace, "addr", "add", f"{SERVER}/30", "dev", "eth0")
        _ip("-n", self.namespace, "link", "set", "eth0", "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")

    def _start(self) -> None:
        d = self.directory
        volfile = d / "glusterd.vol"
        volfile.write_text(GLUSTERD_VOL.format(lib=d / "lib", socket=self.socket, address=SERVER))
        script = (
            f"mount --bind {d / 'run'} /run/gluster && "
            f"mount --bind {d / 'log'} /var/log/glusterfs && "
            f"exec glusterd -N -f {volfile}"
        )
        argv = ["ip", "netns", "exec", self.namespace]
        argv += ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        self.glusterd = Daemon(argv, d / "glusterd.out")  # ip, unshare and sh exec: one pid
        self.glusterd.wait_ready(lambda: self.cli_ok("volume", "list"), timeout=30)

    def _cli_argv(self, *args: str) -> list[str]:
        return [
            "gluster",
            "--mode=script",
            f"--glusterd-sock={self.socket}",
            f"--log-file={self.directory / 'cli.log'}",
            *args,
        ]

    def cli(self, *args: str) -> str:
        """Run the gluster CLI against this glusterd; its output (raises on failure)."""
        done = subprocess.run(
            self._cli_argv(*args), capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"gluster {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def cli_ok(self, *args: str) -> bool:
        if not self.socket.exists():
            return False
        done = subprocess.run(self._cli_argv(*args), capture_output=True, timeout=30, check=False)
        return done.returncode == 0

    def stop(self) -> None:
        """Stop glusterd by its pid and delete the namespace (volumes are gone already)."""
        if self.glusterd is not None:
            self.glusterd.stop(timeout=10)
        # The veth first: a deleted namespace is destroyed later, by the kernel's own
        # worker, and its veth (with the root end's address and route) with it.
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "delete", self.veth)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "delete", self.namespace)


class GlusterVolume:
    """One started one-brick volume of a `GlusterServer`."""

    def __init__(self, server: GlusterServer, name: str) -> None:
        """Create and start the volume; find its brick's pid."""
        self.server = server
        self.name = name
        self.brick = server.directory / "bricks" / name
        self.brick.mkdir(parents=True)
        self.brick_pid: int | None = None
        server.cli("volume", "create", name, f"{SERVER}:{self.brick}", "force")
        try:
            server.cli("volume", "start", name)
            self.brick_pid = wait_for(self._brick_pid, 30, f"volume {name}'s brick")
        except BaseException:
            self.delete()
            raise

    @property
    def spec(self) -> str:
        """The connection the Engine sends: `server:/volume`."""
        return f"{SERVER}:/{self.name}"

    def _brick_pid(self) -> int | None:
        status = self.server.cli("volume", "status", self.name, "--xml")
        root = ET.fromstring(status)  # noqa: S314 - the local CLI's own output
        pid = root.findtext("volStatus/volumes/volume/node/pid")
        online = root.findtext("volStatus/volumes/volume/node/status") == "1"
        return int(pid) if pid and online and int(pid) > 0 else None

    def delete(self) -> None:
        """Stop the volume (its brick, by its pid if it lingers) and delete it."""
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.server.cli("volume", "stop", self.name)
        if self.brick_pid is not None:
            _wait_gone(self.brick_pid)
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.server.cli("volume", "delete", self.name)


def client_pid(log_file: Path) -> int | None:
    """The FUSE client's pid, as it wrote it in its own log (None: not yet)."""
    try:
        found = _CLIENT_PID.findall(log_file.read_bytes())
    except FileNotFoundError:
        return None
    return int(found[-1]) if found else None


@contextlib.contextmanager
def fuse_client_reaped(log_file: Path, spec: str) -> Iterator[None]:
    """After the block, see the FUSE client the log names end (killed by its pid if not).

    The client ends by itself when its mount is unmounted; a test that failed before
    disconnecting leaves `spec` mounted: each such mount is unmounted lazily first.
    """
    try:
        yield
    finally:
        for record in mounts():
            if record.source == spec and record.fs_type == "fuse.glusterfs":
                subprocess.run(["umount", "-l", record.target], check=False, timeout=30)
        pid = client_pid(log_file)
        if pid is not None:
            _wait_gone(pid)


@pytest.fixture(scope="session")
def gluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlusterServer]:
    """glusterd, serving from a namespace of its own (one per test session)."""
    need_gluster()
    server = GlusterServer(tmp_path_factory.mktemp("gluster"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gluster(gluster_server: GlusterServer) -> Iterator[GlusterVolume]:
    """A started one-brick GlusterFS volume of this test's own."""
    with gluster_server.volume() as made:
        yield made


@contextlib.contextmanager
def sanlock_agent(directory: Path, sanlock_conf: str) -> Iterator[tuple[Agent, Sanlockd]]:
    """A `hostvisor serve` (its own process: libsanlock keeps the first daemon a process
    talks to) with a sanlock daemon of its own and `sanlock_conf` as its `[sanlock]`
    section; both stopped by their pids after the block."""
    need_sanlock()
    shim = build_shim(directory / "shim")
    (directory / "agent").mkdir()
    agent = Agent(directory / "agent")
    agent.config.write_text(agent.config.read_text() + f"[sanlock]\n{sanlock_conf}")
    sanlock = Sanlockd(directory / "sanlock", shim)
    try:
        agent.start_ready(env={"SANLOCK_RUN_DIR": str(sanlock.run_dir)}, timeout=120)
        yield agent, sanlock
    finally:
        agent.stop_all()
        sanlock.stop()
