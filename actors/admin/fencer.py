"""FenceActor: runs fence agents for Host.fenceNode, one process per call.

An agent can take minutes (a power cycle through a slow BMC), so each call runs
on the work facility and is answered later; several fence calls run side by
side and the actor answers meanwhile. It holds nothing across calls. The
password never reaches a log or an argv (`hostvisor.actors.admin.fence`).
"""

from __future__ import annotations

from pathlib import Path

from hostvisor.actors.actor import Actor
from hostvisor.actors.admin import fence
from hostvisor.actors.admin.devices import settle
from hostvisor.actors.future import Later


class FenceActor(Actor):
    """Answers Host.fenceNode. Methods never block.

    Args:
        agent_dir: where the fence agents are installed.
        timeout: seconds an agent may run before it is killed.
        lease_live: tells whether the fenced host holds a live storage lease.
    """

    def __init__(
        self,
        *,
        agent_dir: Path = fence.AGENT_DIR,
        timeout: float = fence.AGENT_TIMEOUT,
        lease_live: fence.LeaseProbe | None = None,
    ) -> None:
        """Keep the settings."""
        super().__init__()
        self._agent_dir = agent_dir
        self._timeout = timeout
        self._lease_live = lease_live

    def fence(self, request: fence.FenceRequest) -> Later:
        """Run the agent for `request`; answered with a `FenceResult` from a worker.

        Raises (through the answer):
            UnsupportedFenceAgent: the agent is not installed.
            FenceFailed: the agent failed or could not tell the power state.
        """
        reply = Later()
        agent_dir, timeout = self._agent_dir, self._timeout
        probe = self._lease_live

        def run() -> fence.FenceResult:
            if probe is None:
                return fence.run_agent(request, agent_dir=agent_dir, timeout=timeout)
            return fence.run_agent(request, agent_dir=agent_dir, timeout=timeout, lease_live=probe)

        self.run_off(run, lambda outcome: settle(reply, outcome), name="fence")
        return reply
