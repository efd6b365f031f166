"""Console tickets: VM.updateDevice for graphics, as VDSM sets them.

The Engine sets a console's one-time password with `VM.updateDevice`
(`SetVmTicketVDSCommand.setTicketUsingUpdateDevice`): `{deviceType: "graphics",
graphicsType: "vnc"|"spice", password, ttl, disconnectAction,
consoleDisconnectActionDelay, params: {userName, userId, fips, vncUsername}}`.
VDSM (`vm.py` `_updateGraphicsDevice` / `_setTicketForGraphicDev`) finds the
`<graphics>` of that type in the live XML (read with VIR_DOMAIN_XML_SECURE, so
the current password shows), sets `passwd`, and `passwdValidTo` to now + ttl (UTC,
`%Y-%m-%dT%H:%M:%S`) when ttl > 0 (else the old validity stays), `connected` to the
existingConnAction for SPICE, and hands the element to
`updateDeviceFlags(xml, 0)`: QEMU's `set_password` and `expire_password`. A VNC
client then authenticates with the password's first 8 characters (RFB VNC auth).
The Engine's own tickets have 8 characters (`Ticketing.generateOTP`); a longer VNC
password (a client's own) is cut to its first 8, which is all VNC authentication
uses, since libvirt (>= 8.1) refuses longer ones (VDSM's libvirt hook cuts them so
too, for migrations).

`ticket_element` and `check_request` are pure; `set_ticket` blocks on libvirt and
runs on a worker, never on an actor's thread.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libvirt

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm.device_errors import NotImplementedHere, TicketError
from hostvisor.actors.vm.errors import MissingParameter, UpdateDeviceFailed

GRAPHICS_TYPES = frozenset({"vnc", "spice"})
CONNECTED_ACTIONS = frozenset({"disconnect", "keep", "fail"})
DISCONNECT_ACTIONS = frozenset({"LOCK_SCREEN", "LOGOUT", "SHUTDOWN", "REBOOT", "NONE"})
"""The Engine's ConsoleDisconnectAction names."""
VALID_TO_FORMAT = "%Y-%m-%dT%H:%M:%S"
VNC_PASSWORD_CHARS = 8
"""What VNC authentication uses of a password; libvirt >= 8.1 refuses longer ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketRequest:
    """What `VM.updateDevice` with deviceType graphics asks for, checked."""

    graphics_type: str
    password: str
    ttl: int
    existing_conn_action: str | None = None
    disconnect_action: str = "LOCK_SCREEN"
    disconnect_delay: int = 0


def check_request(params: Mapping[str, Any]) -> TicketRequest:
    """Read and check a graphics update's params. Pure.

    Raises:
        NotImplementedHere: an `xml` form (VDSM answers 44 too).
        MissingParameter: graphicsType, password or ttl is absent.
        InvalidArgument: one of them has the wrong type or value.
    """
    if "xml" in params:
        raise NotImplementedHere(reason="graphics updates take params, not XML")
    for key in ("graphicsType", "password", "ttl"):
        if key not in params:
            raise MissingParameter(param=f"params.{key}")
    kind, password, ttl = params["graphicsType"], params["password"], params["ttl"]
    if kind not in GRAPHICS_TYPES:
        raise InvalidArgument(
            param="params.graphicsType", value=kind, expected=sorted(GRAPHICS_TYPES)
        )
    if not isinstance(password, str):
        raise InvalidArgument(param="params.password", reason="not a string")
    ttl = _whole(ttl, "params.ttl")
    conn = params.get("existingConnAction")
    if conn is not None and conn not in CONNECTED_ACTIONS:
        raise InvalidArgument(param="params.existingConnAction", value=conn)
    action = params.get("disconnectAction") or "LOCK_SCREEN"
    if action not in DISCONNECT_ACTIONS:
        raise InvalidArgument(param="params.disconnectAction", value=action)
    delay = params.get("consoleDisconnectActionDelay")
    extra = params.get("params", {})
    if not isinstance(extra, dict):
        raise InvalidArgument(param="params.params", reason="not an object")
    fips = extra.get("fips")
    if fips is not None and fips not in ("true", "false"):
        # VDSM's code for it (`_check_fips_params_valid`): MissingParameter.
        raise MissingParameter(param="params.params.fips", reason='"true", "false" or absent')
    return TicketRequest(
        graphics_type=kind,
        password=password,
        ttl=ttl,
        existing_conn_action=conn,
        disconnect_action=action,
        disconnect_delay=0 if delay is None else _whole(delay, "consoleDisconnectActionDelay"),
    )


def _whole(value: Any, name: str) -> int:
    """An int, or a string of one (the Engine sends some numbers as strings)."""
    if isinstance(value, bool):
        raise InvalidArgument(param=name, reason="not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise InvalidArgument(param=name, reason="not a whole number")


def ticket_element(secure_xml: str, request: TicketRequest, *, now: float) -> str:
    """The `<graphics>` element of `secure_xml` with the ticket set, as XML text. Pure.

    Raises:
        UpdateDeviceFailed: the domain has no graphics of the requested type.
    """
    try:
        root = ET.fromstring(secure_xml)  # noqa: S314 - libvirt's own XML
    except ET.ParseError as error:
        raise UpdateDeviceFailed(reason=f"unreadable domain XML: {error}") from None
    graphics = next(
        (g for g in root.iterfind("devices/graphics") if g.get("type") == request.graphics_type),
        None,
    )
    if graphics is None:
        raise UpdateDeviceFailed(reason=f"the VM has no {request.graphics_type} graphics")
    password = request.password
    if request.graphics_type == "vnc":
        password = password[:VNC_PASSWORD_CHARS]
    graphics.set("passwd", password)
    if request.ttl > 0:
        graphics.set(
            "passwdValidTo", time.strftime(VALID_TO_FORMAT, time.gmtime(now + request.ttl))
        )
    if request.existing_conn_action is not None and request.graphics_type == "spice":
        graphics.set("connected", request.existing_conn_action)
    graphics.tail = None
    return ET.tostring(graphics, encoding="unicode")


def set_ticket(domain: Any, request: TicketRequest) -> None:
    """Set the console ticket on the running domain (blocks on libvirt).

    Raises:
        UpdateDeviceFailed: no graphics of that type.
        TicketError: libvirt refused the ticket.
        libvirt.libvirtError: the domain is gone (VIR_ERR_NO_DOMAIN).
    """
    secure = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    element = ticket_element(secure, request, now=time.time())
    try:
        domain.updateDeviceFlags(element, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise
        raise TicketError(reason=str(error)) from None
