"""Console tickets set by VM.updateDevice, as the Engine sets them (issue 15, Deliver 4).

The Engine's `SetVmTicketVDSCommand` sends `VM.updateDevice` with deviceType
"graphics"; a VNC client (an RFB 3.8 handshake with VNC authentication, written
here: DES of the server's challenge keyed by the password) then gets in with that
password, and not with another one, nor once the ticket has expired. The guest is
the Engine's domain XML over a halting disk; its VNC console listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest

from harness.guests import qemu_pid
from harness.waiting import wait_for
from hostvisor.api.client import Client, ServerError
from hostvisor.api.embedded import EmbeddedHost

pytestmark = [pytest.mark.kvm, pytest.mark.libvirt]

NO_VM, VM_DOWN, MISSING, NOT_IMPLEMENTED, UPDATE_FAILED, INVALID = 1, 6, 11, 44, 56, 91
WIRE = -32602  # a missing param or a wrong JSON type: as every verb
PASSWORD = "Xk3mP9qLw2Zr"  # noqa: S105 - a test ticket; longer than the 8 VNC uses


def ticket(password: str = PASSWORD, ttl: int = 120, kind: str = "vnc") -> dict[str, Any]:
    """The params `SetVmTicketVDSCommand.setTicketUsingUpdateDevice` sends."""
    return {
        "deviceType": "graphics",
        "graphicsType": kind,
        "password": password,
        "ttl": ttl,
        "disconnectAction": "LOCK_SCREEN",
        "consoleDisconnectActionDelay": 0,
        "params": {
            "userName": "admin@internal",
            "userId": "fdfc627c-d875-11e0-90f0-83df133b58cc",
            "fips": "false",
            "vncUsername": "vnc-00000000",
        },
    }


# -- an RFB 3.8 client with VNC authentication -----------------------------------------------

_PC1 = (57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11)
_PC1 += (3, 60, 52, 44, 36, 63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61)
_PC1 += (53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4)
_PC2 = (14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2)
_PC2 += (41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48, 44, 49, 39, 56, 34, 53, 46, 42, 50, 36)
_PC2 += (29, 32)
_SHIFTS = (1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1)
_IP = (58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, 62, 54, 46, 38, 30, 22, 14)
_IP += (6, 64, 56, 48, 40, 32, 24, 16, 8, 57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19)
_IP += (11, 3, 61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7)
_FP = tuple(_IP.index(position) + 1 for position in range(1, 65))
_E = (32, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11, 12, 13, 12, 13, 14, 15, 16, 17, 16, 17)
_E += (18, 19, 20, 21, 20, 21, 22, 23, 24, 25, 24, 25, 26, 27, 28, 29, 28, 29, 30, 31, 32, 1)
_P = (16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, 2, 8, 24, 14, 32, 27, 3, 9)
_P += (19, 13, 30, 6, 22, 11, 4, 25)
_S = tuple(
    tuple(int(nibble, 16) for nibble in box)
    for box in (
        "e4d12fb83a6c59070f74e2d1a6cb953841e8d62bfc973a50fc8249175b3ea06d",
        "f18e6b34972dc05a3d47f28ec01a69b50e7ba4d158c6932fd8a13f42b67c05e9",
        "a09e63f51dc7b428d709346a285ecbf1d6498f30b12c5ae71ad069874fe3b52c",
        "7de3069a1285bc4fd8b56f03472c1ae9a690cb7df13e52843f06a1d8945bc72e",
        "2c417ab6853fd0e9eb2c47d150fa3986421bad78f9c5630eb8c71e2d6f09a453",
        "c1af92680d34e75baf427c9561de0b389ef528c3704a1db6432c95fabe17608d",
        "4b2ef08d3c975a61d0b7491ae35c2f8614bdc37eaf6805926bd814a7950fe23c",
        "d2846fb1a93e50c71fd8a374c56b0e927b419ce206adf35821e74a8dfc90356b",
    )
)
"""The eight S-boxes, row by row, one hex digit per entry."""


def _permute(value: int, table: tuple[int, ...], width: int) -> int:
    out = 0
    for position in table:
        out = (out << 1) | ((value >> (width - position)) & 1)
    return out


def des_encrypt(key: bytes, block: bytes) -> bytes:
    """DES (FIPS 46-3) of one 8-byte block: what VNC authentication needs, no more."""
    cd = _permute(int.from_bytes(key, "big"), _PC1, 64)
    c, d = cd >> 28, cd & 0xFFFFFFF
    data = _permute(int.from_bytes(block, "big"), _IP, 64)
    left, right = data >> 32, data & 0xFFFFFFFF
    for shift in _SHIFTS:
        c = ((c << shift) | (c >> (28 - shift))) & 0xFFFFFFF
        d = ((d << shift) | (d >> (28 - shift))) & 0xFFFFFFF
        mixed = _permute(right, _E, 32) ^ _permute((c << 28) | d, _PC2, 56)
        boxed = 0
        for box in range(8):
            six = (mixed >> (42 - 6 * box)) & 0x3F
            row = ((six & 0x20) >> 4) | (six & 1)
            boxed = (boxed << 4) | _S[box][row * 16 + ((six >> 1) & 15)]
        left, right = right, left ^ _permute(boxed, _P, 32)
    return _permute((right << 32) | left, _FP, 64).to_bytes(8, "big")


def vnc_response(password: str, challenge: bytes) -> bytes:
    """RFB's VNC authentication: DES of the challenge, keyed by the password's 8 bytes.

    The key is the password's first 8 bytes padded with NULs, each byte's bits
    reversed (how VNC has always used DES).
    """
    key = bytes(int(f"{byte:08b}"[::-1], 2) for byte in password.encode()[:8].ljust(8, b"\0"))
    return des_encrypt(key, challenge[:8]) + des_encrypt(key, challenge[8:])


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"the server closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def vnc_login(address: str, port: int, password: str) -> tuple[bool, str]:
    """Open an RFB 3.8 session with VNC authentication.

    Returns:
        (True, the desktop's name) once the server has sent its ServerInit, or
        (False, the server's reason) when it refused the password.
    """
    with socket.create_connection((address, port), timeout=10) as sock:
        version = _read(sock, 12)
        assert version.startswith(b"RFB 003."), version
        sock.sendall(b"RFB 003.008\n")
        count = _read(sock, 1)[0]
        if count == 0:
            (length,) = struct.unpack(">I", _read(sock, 4))
            return False, _read(sock, length).decode()
        types = _read(sock, count)
        assert 2 in types, f"no VNC authentication offered: {list(types)}"
        sock.sendall(b"\x02")
        challenge = _read(sock, 16)
        sock.sendall(vnc_response(password, challenge))
        (result,) = struct.unpack(">I", _read(sock, 4))
        if result != 0:
            (length,) = struct.unpack(">I", _read(sock, 4))
            return False, _read(sock, length).decode()
        sock.sendall(b"\x01")  # ClientInit: share the desktop
        _width, _height = struct.unpack(">HH", _read(sock, 4))
        _read(sock, 16)  # the pixel format
        (length,) = struct.unpack(">I", _read(sock, 4))
        return True, _read(sock, length).decode()


@pytest.mark.unit
def test_the_tiny_des_is_des():
    # FIPS 46 / the classic worked example (J. Orlin Grabbe), and VNC's bit order.
    key, plain = bytes.fromhex("133457799BBCDFF1"), bytes.fromhex("0123456789ABCDEF")
    assert des_encrypt(key, plain).hex() == "85e813540f0ab405"
    assert vnc_response("", bytes(16)) == bytes.fromhex("8ca64de9c1b123a78ca64de9c1b123a7")


# -- the verbs ------------------------------------------------------------------------------


def vnc_of(cli: Client, vm_id: str) -> tuple[str, int]:
    """Where the VM's VNC console listens, from VM.getStats' displayInfo."""
    stats = cli.VM.getStats(vmID=vm_id)[0]
    [vnc] = [info for info in stats["displayInfo"] if info["type"] == "vnc"]
    address = "127.0.0.1" if vnc["ipAddress"] in ("0", "0.0.0.0") else vnc["ipAddress"]  # noqa: S104
    return address, int(vnc["port"])


def domain(host: EmbeddedHost, vm_id: str) -> Any:
    """libvirt's own handle on the VM (to check what the verbs did)."""
    return host.tree.connection().lookupByUUIDString(vm_id)


def graphics_of(host: EmbeddedHost, vm_id: str, kind: str) -> ET.Element:
    secure = domain(host, vm_id).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    root = ET.fromstring(secure)  # noqa: S314 - libvirt's own XML
    [graphics] = [g for g in root.iterfind("devices/graphics") if g.get("type") == kind]
    return graphics


def test_a_ticket_set_by_update_device_lets_a_vnc_client_in(
    host: EmbeddedHost, cli: Client, halting_vm: Any
):
    vm_id, _disk = halting_vm()
    address, port = vnc_of(cli, vm_id)
    refused, reason = vnc_login(address, port, "*****")  # the Engine's XML: expired in 1970
    assert not refused, reason

    before = time.time()
    answer = cli.VM.updateDevice(vmID=vm_id, params=ticket())

    assert answer == {}
    ok, name = vnc_login(address, port, PASSWORD)
    assert ok, name
    wrong, reason = vnc_login(address, port, "Wr0ngPassword")
    assert not wrong
    assert reason  # QEMU says why ("Authentication failed")
    valid_to = graphics_of(host, vm_id, "vnc").get("passwdValidTo", "")
    deadline = time.mktime(time.strptime(valid_to, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before + 120 - 2 <= deadline <= time.time() + 120 + 2  # UTC, now + ttl
    assert cli.VM.getStats(vmID=vm_id)[0]["status"] == "Up"


def test_an_expired_ticket_lets_nobody_in(cli: Client, halting_vm: Any):
    vm_id, _disk = halting_vm()
    address, port = vnc_of(cli, vm_id)

    cli.VM.updateDevice(vmID=vm_id, params=ticket(ttl=2))

    wait_for(lambda: not vnc_login(address, port, PASSWORD)[0], 30, "the ticket to expire")


def test_a_spice_ticket_is_set_on_the_spice_console(
    host: EmbeddedHost, cli: Client, halting_vm: Any
):
    vm_id, _disk = halting_vm()
    params = {**ticket("SpiceTicket1", kind="spice"), "existingConnAction": "disconnect"}

    assert cli.VM.updateDevice(vmID=vm_id, params=params) == {}

    assert graphics_of(host, vm_id, "spice").get("passwd") == "SpiceTicket1"
    assert graphics_of(host, vm_id, "vnc").get("passwd") != "SpiceTicket1"


def _code(call: Any) -> int:
    with pytest.raises(ServerError) as caught:
        call()
    return caught.value.code


def test_bad_ticket_requests_answer_vdsms_codes_and_change_nothing(
    host: EmbeddedHost, cli: Client, halting_vm: Any
):
    vm_id, _disk = halting_vm(spice=False)
    address, port = vnc_of(cli, vm_id)
    update = cli.VM.updateDevice
    cases = {
        "unknown VM": (
            NO_VM,
            lambda: update(vmID="7f0e0000-0000-4000-8000-000000000001", params=ticket()),
        ),
        "params not an object": (WIRE, lambda: update(vmID=vm_id, params="graphics")),
        "no params": (WIRE, lambda: update(vmID=vm_id)),
        "no deviceType": (MISSING, lambda: update(vmID=vm_id, params={"password": PASSWORD})),
        "no password": (
            MISSING,
            lambda: update(
                vmID=vm_id, params={k: v for k, v in ticket().items() if k != "password"}
            ),
        ),
        "no ttl": (
            MISSING,
            lambda: update(vmID=vm_id, params={k: v for k, v in ticket().items() if k != "ttl"}),
        ),
        "ttl not a number": (
            INVALID,
            lambda: update(vmID=vm_id, params={**ticket(), "ttl": "soon"}),
        ),
        "password not a string": (
            INVALID,
            lambda: update(vmID=vm_id, params={**ticket(), "password": 12345678}),
        ),
        "unknown graphics": (
            INVALID,
            lambda: update(vmID=vm_id, params={**ticket(), "graphicsType": "rdp"}),
        ),
        "bad fips": (
            MISSING,
            lambda: update(vmID=vm_id, params={**ticket(), "params": {"fips": "maybe"}}),
        ),
        "no spice here": (UPDATE_FAILED, lambda: update(vmID=vm_id, params=ticket(kind="spice"))),
        "another device type": (
            NOT_IMPLEMENTED,
            lambda: update(vmID=vm_id, params={"deviceType": "disk"}),
        ),
    }
    codes = {name: _code(call) for name, (_expected, call) in cases.items()}

    assert codes == {name: expected for name, (expected, _call) in cases.items()}
    assert not vnc_login(address, port, PASSWORD)[0]  # no ticket was set by any of them

    domain(host, vm_id).destroy()  # the guest dies behind the agent's back: Down
    wait_for(lambda: cli.VM.getStats(vmID=vm_id)[0]["status"] == "Down", 30, "Down")
    assert _code(lambda: update(vmID=vm_id, params=ticket())) == VM_DOWN


def test_the_vm_answers_stats_while_its_ticket_is_being_set(
    host: EmbeddedHost, cli: Client, halting_vm: Any, embed_root: Any
):
    vm_id, _disk = halting_vm(spice=False)
    name = ET.fromstring(cli.Host.dumpxmls(vmList=[vm_id])[vm_id]).findtext("name")  # noqa: S314
    pid = qemu_pid(embed_root, str(name), vm_id)
    outcome: list[Any] = []
    os.kill(pid, signal.SIGSTOP)  # QEMU's monitor stops answering: the update hangs in libvirt
    try:
        with host.client(timeout=60) as other:
            setter = threading.Thread(
                target=lambda: outcome.append(other.VM.updateDevice(vmID=vm_id, params=ticket()))
            )
            setter.start()
            # While it hangs, the VM's actor answers: its stats, as fast as ever.
            for _ in range(5):
                started = time.monotonic()
                assert cli.VM.getStats(vmID=vm_id)[0]["vmId"] == vm_id
                assert time.monotonic() - started < 1.0
            assert setter.is_alive()  # still waiting on QEMU
            os.kill(pid, signal.SIGCONT)
            setter.join(timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert outcome == [{}]
    address, port = vnc_of(cli, vm_id)
    assert vnc_login(address, port, PASSWORD)[0]


def test_a_client_leaving_the_console_shuts_the_vm_down_when_its_ticket_says_so(
    cli: Client, agent_vm: Any
):
    vm_id = agent_vm()
    address, port = vnc_of(cli, vm_id)
    cli.VM.updateDevice(
        vmID=vm_id,
        params={**ticket(), "disconnectAction": "SHUTDOWN", "consoleDisconnectActionDelay": 0},
    )

    assert vnc_login(address, port, PASSWORD)[0]  # in, then gone

    down = wait_for(
        lambda: (s := cli.VM.getStats(vmID=vm_id)[0])["status"] == "Down" and s, 60, "Down"
    )
    assert down["exitCode"] == 0, down
