"""Network namespaces as test hosts: veth pairs stand in for NICs.

`TestNamespace` makes a namespace named uniquely for this process (pid and a
counter), with NICs `eth0`, `eth1`, ... each a veth whose peer (`peth0`, ...) is
up in the same namespace, so the NICs get a carrier when brought up. `reboot()`
deletes the namespace and makes it again with the same NICs: what a host boot does
to its network configuration (everything but the hardware is gone). `state()` is
the namespace's whole netlink state, normalised so two dumps compare equal when
nothing was configured differently (indexes and kernel-made link-local addresses
and routes are left out: a remade bridge has a new index and a new link-local).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetlinkError
from pyroute2 import netns as pyroute2_netns

from harness.components import need
from hostvisor.api.embedded import EmbeddedHost
from hostvisor.supervision.config import load_config

T = TypeVar("T")
_counter = itertools.count(1)
NO_CHECK = {"connectivityCheck": False}
"""setupNetworks options for tests that do not exercise the connectivity check."""
MANAGEMENT = {
    "nic": "eth0",
    "ipaddr": "192.0.2.10",
    "netmask": "255.255.255.0",
    "gateway": "192.0.2.1",
    "defaultRoute": True,
    "ipv6addr": "2001:db8::10/64",
    "ipv6gateway": "2001:db8::1",
    "bootproto": "none",
}
"""A management network as the Engine sends it: bridged on eth0, static IPv4 and IPv6."""


@contextlib.contextmanager
def network_host(state_dir: Path, netns: TestNamespace, **settings: Any) -> Iterator[EmbeddedHost]:
    """A whole host in-process managing `netns` (libvirt's test driver: no guests)."""
    config = load_config(
        state_dir=state_dir,
        libvirt_uri="test:///default",
        management_port=0,
        net_namespace=netns.name,
        host_sample_interval=60,
        **settings,
    )
    with EmbeddedHost(config) as running:
        yield running


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; return the finished process."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def kernel_refuses(kind: str) -> str | None:
    """Return the kernel's reason if it cannot make a `kind` link (bond, vlan), else None.

    Asked through netlink in a scratch namespace of its own, deleted afterwards.
    """
    scratch = TestNamespace(nics=("eth0",), prefix="hvprobe")

    def make() -> str | None:
        with IPRoute() as ipr:
            try:
                if kind == "vlan":
                    parent = ipr.link_lookup(ifname="eth0")[0]
                    ipr.link("add", ifname="eth0.5", kind="vlan", link=parent, vlan_id=5)
                else:
                    ipr.link("add", ifname="bond0", kind=kind)
            except NetlinkError as error:
                return os.strerror(error.code)
        return None

    try:
        return scratch.run_inside(make)
    finally:
        scratch.delete()


class TestNamespace:
    """A network namespace with veth NICs; delete it with `delete()`."""

    __test__ = False  # not a pytest class

    def __init__(self, nics: tuple[str, ...] = ("eth0", "eth1", "eth2"), prefix: str = "hvnet"):
        need(os.geteuid() == 0 and shutil.which("ip") is not None, "needs root and iproute2")
        self.name = f"{prefix}-{os.getpid()}-{next(_counter)}"
        self.nics = nics
        self._make()

    def _make(self) -> None:
        ip("netns", "add", self.name)
        self.ip("link", "set", "lo", "up")
        for nic in self.nics:
            self.ip("link", "add", nic, "type", "veth", "peer", "name", f"p{nic}")
            self.ip("link", "set", f"p{nic}", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ip -n <namespace> ARGS`."""
        return ip("-n", self.name, *args, check=check)

    def json(self, *args: str) -> Any:
        """Run `ip -j -n <namespace> ARGS` and decode its JSON."""
        return json.loads(self.ip("-j", *args).stdout or "[]")

    def reboot(self) -> None:
        """Make the namespace anew with the same NICs (a host boot, as the network sees it)."""
        ip("netns", "del", self.name)
        self._make()

    def delete(self) -> None:
        """Delete the namespace and everything in it."""
        ip("netns", "del", self.name, check=False)

    def run_inside(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that entered the namespace; sockets it makes live there."""
        result: list[T] = []
        errors: list[BaseException] = []

        def enter() -> None:
            try:
                pyroute2_netns.setns(self.name, flags=0)
                result.append(fn())
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller
                errors.append(error)

        thread = threading.Thread(target=enter, name=f"in:{self.name}")
        thread.start()
        thread.join(timeout=60)
        if errors:
            raise errors[0]
        return result[0]

    def links(self) -> dict[str, dict[str, Any]]:
        """Every device by name: kind, MTU, master, MAC, whether up."""
        found = {}
        for link in self.json("-d", "link", "show"):
            found[link["ifname"]] = {
                "kind": (link.get("linkinfo") or {}).get("info_kind"),
                "mtu": link["mtu"],
                "master": link.get("master"),
                "mac": link.get("address"),
                "up": "UP" in link["flags"],
            }
        return found

    def addresses(self) -> dict[str, list[str]]:
        """Every device's addresses (`address/prefix`), link-local ones left out."""
        found: dict[str, list[str]] = {}
        for link in self.json("addr", "show"):
            found[link["ifname"]] = sorted(
                f"{a['local']}/{a['prefixlen']}"
                for a in link.get("addr_info", [])
                if a.get("scope") != "link"
            )
        return found

    def routes(self) -> list[tuple[Any, ...]]:
        """Every route of every table but `local`, with IPv6 link-local routes left out."""
        found = []
        for family in ("-4", "-6"):
            for route in self.json(family, "route", "show", "table", "all"):
                if route.get("table") == "local" or route["dst"].startswith(("fe80:", "ff00:")):
                    continue
                found.append(
                    (
                        family,
                        route["dst"],
                        route.get("dev"),
                        route.get("gateway"),
                        route.get("table", "main"),
                        route.get("protocol"),
                    )
                )
        return sorted(found, key=str)

    def state(self) -> dict[str, Any]:
        """The whole configured state: links, addresses, routes."""
        return {"links": self.links(), "addresses": self.addresses(), "routes": self.routes()}
