"""Container recovery: every container labelled with a VM id becomes a ContainerActor again.

Docker is the source of truth: each container carries its VM id and domain XML in
labels (`hostvisor.actors.container.spec`). Containers that ended while the agent
was away are adopted too, and report Down with their exit status until VM.destroy
removes them. Nothing is started, stopped or changed in docker. The `containers`
branch's recoverer runs this whenever the branch starts, and the docker actor's
reconnection runs it again (a docker engine that was down at start is adopted from
once it answers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hostvisor.actors.container.engine import DockerEngine, Labelled
from hostvisor.actors.errors import AlreadyExists, HostvisorError

log = logging.getLogger(__name__)


def adopt_containers(
    *,
    engine: DockerEngine,
    has_actor: Callable[[str], bool],
    start: Callable[[Labelled], None],
) -> int:
    """Start a ContainerActor for each labelled container that has none; touch none.

    Blocks; returns how many were adopted. Raises DockerUnavailable when docker does
    not answer the listing; one container that cannot be adopted is logged and skipped.
    """
    adopted = 0
    for found in engine.labelled():
        if has_actor(found.vm_id):
            continue
        try:
            start(found)
        except AlreadyExists:
            continue
        except HostvisorError as error:
            log.error("container %s not adopted: %s", found.container_id, error)  # noqa: TRY400
            continue
        adopted += 1
    return adopted
