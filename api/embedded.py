"""The embedded host: the same tree `hostvisor serve` runs, started in-process.

    with EmbeddedHost(load_config(state_dir=tmp, management_port=0)) as host:
        host.registry.lookup(HYPERVISOR)
        host.address            # where the API listens

Test harnesses of every later issue start hosts this way.
"""

from __future__ import annotations

import functools
import time
from types import TracebackType
from typing import Any, Self

import pykka

from hostvisor.actors.errors import StartFailed
from hostvisor.actors.runtime import Runtime
from hostvisor.api.admin import logs
from hostvisor.api.admin.children import operator_children
from hostvisor.api.client import Client, connect
from hostvisor.api.front import FRONT, FRONT_ID, FrontProxy, RpcFront
from hostvisor.api.http.images import ImageTransfers
from hostvisor.api.metrics.recorder import ApiRecorder
from hostvisor.api.peers import peer_connector
from hostvisor.api.rpc.admin_verbs import AdminApi, admin_verbs
from hostvisor.api.rpc.blockjob_verbs import blockjob_verbs
from hostvisor.api.rpc.copy_verbs import copy_verbs
from hostvisor.api.rpc.device_verbs import device_verbs
from hostvisor.api.rpc.domain_verbs import domain_verbs
from hostvisor.api.rpc.host_verbs import HostApi, host_verbs
from hostvisor.api.rpc.hotplug_verbs import hotplug_verbs
from hostvisor.api.rpc.lease_verbs import lease_verbs
from hostvisor.api.rpc.migration_verbs import migration_verbs
from hostvisor.api.rpc.network_verbs import NetworkApi, network_verbs
from hostvisor.api.rpc.pool_verbs import pool_verbs
from hostvisor.api.rpc.sdm_verbs import sdm_verbs
from hostvisor.api.rpc.snapshot_verbs import snapshot_verbs
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.task_verbs import TaskApi, task_verbs
from hostvisor.api.rpc.verbs import VerbTable
from hostvisor.api.rpc.vm_verbs import VmApi, vm_verbs
from hostvisor.api.rpc.volume_verbs import volume_verbs
from hostvisor.supervision.branches.context import TreeContext
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.config import Config
from hostvisor.supervision.gate import Gate
from hostvisor.supervision.registry import ROOT, ActorStatus, Registry
from hostvisor.supervision.runner import TreeRunner
from hostvisor.supervision.spec import ChildSpec
from hostvisor.supervision.tree import RESOURCE_BRANCHES, HostTree


def verb_table(tree: HostTree) -> VerbTable:
    """Return every verb the host serves."""
    storage = StorageApi(tree.registry)
    vms = VmApi(
        tree.registry,
        tree.vms.child,
        operation_timeout=tree.config.vm_operation_timeout,
        prepare_disk=storage.prepare_disk,
        lease_info=storage.lease_info,
        container_child=tree.containers.child,
    )
    networks = NetworkApi(tree.registry)
    return VerbTable.of(
        host_verbs(HostApi(tree.registry, confirm_connectivity=networks.confirm)),
        network_verbs(networks),
        vm_verbs(vms),
        migration_verbs(
            vms,
            incoming_child=functools.partial(tree.vms.child, incoming=True),
            slots=tree.vms.migration_slots,
        ),
        pool_verbs(storage),
        domain_verbs(storage),
        volume_verbs(storage),
        sdm_verbs(storage),
        task_verbs(TaskApi(tree.registry, vms=vms)),
        admin_verbs(AdminApi(tree.registry)),
        snapshot_verbs(vms, storage),
        blockjob_verbs(vms, storage),
        hotplug_verbs(vms, storage),
        device_verbs(vms, storage),
        lease_verbs(vms, storage),
        copy_verbs(vms, storage),
    )


def offline_verb_table() -> VerbTable:
    """Return the verb table for describing the API (schema, CLI help); serves nothing."""
    ctx = TreeContext(config=Config(), registry=Registry(), runtime=Runtime.default())
    return verb_table(HostTree(ctx))


class EmbeddedHost:
    """A running host tree for the length of a `with` block.

    Entering blocks until the tree is up (at most `config.start_timeout`) and the
    recovery gate is open; leaving stops it in reverse order within
    `config.stop_timeout`.
    """

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        """Prepare the tree for `config`; start it with `start()` or `with`."""
        self.config = config
        self.registry = Registry()
        self.gate = Gate(RESOURCE_BRANCHES)
        self.runtime = Runtime.make(clock)
        ctx = TreeContext(
            config=config,
            registry=self.registry,
            runtime=self.runtime,
            report_recovered=self.gate.report,
            subscribers=self._subscribers,
            peers=peer_connector(config),
        )
        self.tree = HostTree(ctx)
        table = verb_table(self.tree)
        # HTTP image upload and download on the API's port, as VDSM serves them.
        transfers = ImageTransfers(StorageApi(self.registry).client, is_ready=self.gate.is_open)
        self.api_metrics = ApiRecorder()
        """The API edge's counters, served by the metrics endpoint."""
        front = ChildSpec(
            id=FRONT_ID,
            start=lambda link: RpcFront.spawn(
                link,
                config=config,
                table=table,
                is_ready=self.gate.is_open,
                http=transfers,
                recorder=self.api_metrics,
            ),
        )
        operators = operator_children(config, self.registry, self.api_metrics)
        logs.install()
        self.runner = TreeRunner(
            self.tree.children(api_children=[front, *operators]),
            registry=self.registry,
            clock=clock,
            runtime=self.runtime,
        )

    def _subscribers(self) -> list[pykka.ActorRef[Any]]:
        """The actors that hear every event: the API's front, while it runs."""
        front = self.registry.get(FRONT)
        return [] if front is None else [front]

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the API listens on."""
        address: tuple[str, int] = FrontProxy(self.registry.lookup(FRONT)).address().get(timeout=5)
        return address

    def client(self, *, timeout: float = 30.0) -> Client:
        """Return a connected API client (plain STOMP; the embedded default)."""
        host, port = self.address
        return connect(host, port, timeout=timeout)

    def start(self) -> Self:
        """Start the tree and wait until every branch has recovered (blocking).

        The gate opens when each resource branch's recoverer has reported.

        Raises:
            StartFailed: the tree did not start, or a branch did not recover within
                `config.start_timeout` (the tree is stopped again).
        """
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        timeout = self.config.start_timeout
        started = time.monotonic()
        self.runner.start(timeout)
        left = max(timeout - (time.monotonic() - started), 0.0)
        if not self.gate.wait_open(left):
            waiting = ", ".join(sorted(self.gate.waiting()))
            self.runner.stop(self.config.stop_timeout)
            raise StartFailed(child=ROOT, reason=f"not recovered after {timeout} s: {waiting}")
        return self

    def stop(self) -> bool:
        """Stop the tree; False if it had to be abandoned. Idempotent."""
        return self.runner.stop(self.config.stop_timeout)

    def status(self) -> tuple[ActorStatus, ...]:
        """Return the status of every actor, depth first."""
        return self.runner.snapshot()

    def __enter__(self) -> Self:
        """Start the tree."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the tree."""
        self.stop()
