"""How the STOMP edge tells an HTTP request from a STOMP frame, and whom it hands it to.

VDSM's protocol detector (lib/vdsm/protocoldetector.py, rpc/http.py `HttpDetector`)
looks at the first bytes of every connection on port 54321, after TLS: "PUT /" and
"GET /" go to its HTTP image server, STOMP commands to the broker. A STOMP command
line is a bare word ending the line, an HTTP request line a method then a space, so
this takes any method (an unsupported one is answered 405 rather than dropped).

Nothing here imports the storage side: api/stomp imports this module.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final, Protocol

_REQUEST_LINE: Final = re.compile(rb"[A-Z]{3,10} [^\s]")
"""A method token (upper case, as every HTTP method in use) then a space and a target."""


def looks_like_http(prefix: bytes) -> bool:
    """Whether the first bytes of a connection start an HTTP request line.

    Call it once 12 bytes or a whole first line have arrived (the STOMP detector's
    wait covers it: the longest method, a space and one more byte is 12 bytes).
    """
    return _REQUEST_LINE.match(prefix) is not None


class HttpHandler(Protocol):
    """Serves one connection whose first bytes were an HTTP request (the API loop)."""

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, peer: str
    ) -> None:
        """Serve requests until the peer closes or one ends the connection.

        `head` holds the bytes the detector already read; `peer` names the client
        for logs. Never raises for anything the peer sends; the caller closes
        `writer` afterwards.
        """
