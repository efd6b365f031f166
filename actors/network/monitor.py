"""LinkMonitor: the kernel's link events, turned into messages for the network actors.

A thread of its own enters the managed namespace, listens on a netlink socket
joined to the link group (RTMGRP_LINK), and for each new, changed or deleted link
builds one frozen `LinkChanged` and tells it to every network actor; each keeps
the ones about its own devices. The thread only reads and tells; the actor around
it owns the thread's life (it starts in `on_start`, ends in `on_stop`).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pykka
from pyroute2 import netns as pyroute2_netns

from hostvisor.actors.actor import Actor
from hostvisor.actors.network.kernel import IFF_RUNNING, IFF_UP

log = logging.getLogger(__name__)

_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK = 16, 17, 18
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFLA_IFNAME, _IFLA_MTU, _IFLA_OPERSTATE = 3, 4, 16
_OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")
_OPERSTATES_BY_CODE = dict(enumerate(_OPERSTATES))
_NLMSG_HEADER = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_RTMGRP_LINK = 0x1
_NETLINK_ROUTE = 0
_RECEIVE_BUFFER = 4 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkState:
    """What a network actor knows of one of its devices."""

    name: str
    exists: bool = True
    up: bool = False
    running: bool = False
    """Up with a carrier."""
    operstate: str = "unknown"
    mtu: int = 0

    @classmethod
    def of_bytes(cls, kind: int, flags: int, attrs: Mapping[int, bytes]) -> LinkState:
        """Build from a raw link message's type, flags and attributes (see `parse_links`)."""
        name = attrs.get(_IFLA_IFNAME, b"").split(b"\0", 1)[0].decode()
        mtu = attrs.get(_IFLA_MTU)
        operstate = attrs.get(_IFLA_OPERSTATE)
        return cls(
            name=name,
            exists=kind != _RTM_DELLINK,
            up=bool(flags & IFF_UP),
            running=bool(flags & IFF_UP) and bool(flags & IFF_RUNNING),
            operstate=_OPERSTATES_BY_CODE.get(operstate[0], "unknown") if operstate else "unknown",
            mtu=struct.unpack_from("=I", mtu)[0] if mtu else 0,
        )

    @classmethod
    def of_message(cls, message: Any) -> LinkState:
        """Build from a netlink link message (RTM_NEWLINK, RTM_DELLINK or a dump entry)."""
        flags = message["flags"]
        return cls(
            name=message.get("IFLA_IFNAME"),
            exists=message["header"]["type"] != _RTM_DELLINK,
            up=bool(flags & IFF_UP),
            running=bool(flags & IFF_UP) and bool(flags & IFF_RUNNING),
            operstate=(message.get("IFLA_OPERSTATE") or "unknown").lower(),
            mtu=message.get("IFLA_MTU") or 0,
        )


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """Tell (from the monitor): a device was made, changed or deleted."""

    link: LinkState


class LinkMonitor(Actor):
    """Owns the thread that listens to the namespace's link events.

    Args:
        netns: the managed namespace (None: the process's own).
        targets: returns the actors told every event (the network actors, at that time).
    """

    def __init__(
        self, *, netns: str | None, targets: Callable[[], list[pykka.ActorRef[Any]]]
    ) -> None:
        """Remember where to listen and whom to tell; start in `on_start`."""
        super().__init__()
        self._netns = netns or None
        self._targets = targets
        self._stop_read, self._stop_write = -1, -1
        self._thread: threading.Thread | None = None

    def on_start(self) -> None:
        """Start listening (returns once the socket is joined, so no event is missed)."""
        self._stop_read, self._stop_write = os.pipe()
        ready = threading.Event()
        errors: list[BaseException] = []
        # owns a thread: a blocking read of the kernel's netlink link events, stopped by a pipe
        self._thread = threading.Thread(
            target=self._listen, args=(ready, errors), name=f"linkmon:{self.path}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10.0):
            raise TimeoutError("the link monitor did not join the link group")
        if errors:
            raise errors[0]

    def on_stop(self) -> None:
        """Stop the listening thread."""
        self._end_thread()

    def on_failure(self, *_exc_info: object) -> None:
        """Stop the listening thread."""
        self._end_thread()

    def _end_thread(self) -> None:
        if self._stop_write >= 0:
            os.write(self._stop_write, b"x")
            if self._thread is not None:
                self._thread.join(timeout=5.0)
            os.close(self._stop_write)
            os.close(self._stop_read)
            self._stop_read = self._stop_write = -1

    def _listen(self, ready: threading.Event, errors: list[BaseException]) -> None:
        try:
            if self._netns is not None:
                pyroute2_netns.setns(self._netns, flags=0)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
            # A setupNetworks of many networks makes bursts of events: room for them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            sock.bind((0, _RTMGRP_LINK))
        except OSError as error:
            errors.append(error)
            ready.set()
            return
        ready.set()
        with sock:
            while True:
                watched: list[Any] = [sock, self._stop_read]
                readable, _, _ = select.select(watched, [], [])
                if self._stop_read in readable:
                    return
                try:
                    data = sock.recv(1 << 16)
                except OSError as error:  # ENOBUFS: events were lost; carry on
                    log.warning("link monitor: %s", error)
                    continue
                for link in parse_links(data):
                    self._tell(LinkChanged(link))

    def _tell(self, event: LinkChanged) -> None:
        for ref in self._targets():
            try:
                ref.tell(event)
            except pykka.ActorDeadError:
                continue


def parse_links(data: bytes) -> Iterator[LinkState]:
    """Yield the link messages in one netlink datagram (others are skipped).

    A small parser of its own: pyroute2's full decoder costs ~50x more per message,
    and the monitor sees every event of a setupNetworks of many networks while
    that call runs (the interpreter lock is shared).
    """
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            return
        if kind in (_RTM_NEWLINK, _RTM_DELLINK):
            body = offset + _NLMSG_HEADER.size
            _family, _type, _index, flags, _change = _IFINFO.unpack_from(data, body)
            attrs: dict[int, bytes] = {}
            cursor, end = body + _IFINFO.size, offset + length
            while cursor + _RTATTR.size <= end:
                size, attr = _RTATTR.unpack_from(data, cursor)
                if size < _RTATTR.size:
                    break
                if attr in (_IFLA_IFNAME, _IFLA_MTU, _IFLA_OPERSTATE):
                    attrs[attr] = data[cursor + _RTATTR.size : cursor + size]
                cursor += (size + 3) & ~3
            yield LinkState.of_bytes(kind, flags, attrs)
        offset += (length + 3) & ~3


def dump_links() -> dict[str, LinkState]:
    """The state of every link in the calling thread's namespace, by name.

    Blocking (one netlink dump, a few milliseconds). Parsed by `parse_links`, so
    that reading the devices of many networks costs little (see there).

    Raises:
        OSError: the kernel refused the dump.
    """
    links: dict[str, LinkState] = {}
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + _IFINFO.size, _RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.send(header + _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        done = False
        while not done:
            data = sock.recv(_RECEIVE_BUFFER)
            done = _dump_done(data)
            links.update((link.name, link) for link in parse_links(data))
    return links


def _dump_done(data: bytes) -> bool:
    """Whether a datagram of a dump holds its end; raise OSError if it holds an error."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG_HEADER.unpack_from(data, offset)
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
            if code:
                raise OSError(-code, os.strerror(-code))
            return True
        if length < _NLMSG_HEADER.size:
            return True
        offset += (length + 3) & ~3
    return False
