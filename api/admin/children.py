"""The operators' children of the api branch: the admin channel and the metrics endpoint."""

from __future__ import annotations

from hostvisor.api.admin.channel import ADMIN_ID, AdminChannel, socket_path
from hostvisor.api.metrics.endpoint import METRICS_ID, MetricsEndpoint
from hostvisor.api.metrics.recorder import ApiRecorder
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import Registry
from hostvisor.supervision.spec import ChildSpec


def operator_children(config: Config, registry: Registry, api: ApiRecorder) -> list[ChildSpec]:
    """The admin channel always; the metrics endpoint when `metrics_address` is set."""
    path = socket_path(config.state_dir)
    children = [
        ChildSpec(
            id=ADMIN_ID, start=lambda link: AdminChannel.spawn(link, registry=registry, path=path)
        )
    ]
    if config.metrics_address:
        address = config.metrics_address
        children.append(
            ChildSpec(
                id=METRICS_ID,
                start=lambda link: MetricsEndpoint.spawn(
                    link, registry=registry, address=address, api=api
                ),
            )
        )
    return children
