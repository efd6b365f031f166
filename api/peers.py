"""How this agent reaches another host's agent: JSON-RPC over STOMP with its own identity.

A migration's source asks the destination agent to prepare (`VM.migrationCreate`)
and, if it fails, to clean up. VDSM does it with the host's certificate, as the
Engine's peer; so does this: when TLS is on, the connection presents the host's
key and certificate and checks the other agent against the same CA.

`peer_connector(config)` is handed to the tree (`TreeContext.peers`), so nothing
below the API layer imports the client.
"""

from __future__ import annotations

from typing import Any

from hostvisor.actors.vm.migrating import PeerConnect, PeerRefused
from hostvisor.api.client import CallTimeout, Client, ClientClosed, ServerError, connect
from hostvisor.api.tls import client_context
from hostvisor.supervision.config import Config

CONNECT_TIMEOUT = 30.0


class AgentPeer:
    """A `Peer`: one client connection to another agent (its caller's thread; blocks)."""

    def __init__(self, client: Client) -> None:
        """Wrap a connected client."""
        self._client = client

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """Call `method`; raise PeerRefused for an error answer, OSError for a lost link."""
        try:
            return self._client.call(method, params, timeout=timeout)
        except ServerError as error:
            raise PeerRefused(error.code, error.message) from None
        except (CallTimeout, ClientClosed) as error:
            raise OSError(str(error)) from None

    def close(self) -> None:
        """Close the connection."""
        self._client.close()


def peer_connector(config: Config) -> PeerConnect:
    """Return how this host connects to other agents, by its configuration (TLS or not)."""
    context = (
        client_context(ca=config.ca_file, cert=config.cert_file, key=config.key_file)
        if config.ssl
        else None
    )

    def open_peer(host: str, port: int) -> AgentPeer:
        return AgentPeer(connect(host, port, tls=context, timeout=CONNECT_TIMEOUT))

    return open_peer
