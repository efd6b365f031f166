"""The embedded host: the same tree `hostvisor serve` runs, started in-process.

    with EmbeddedHost(load_config(state_dir=tmp, management_port=0)) as host:
        host.registry.lookup("infra/hypervisor")
        host.address            # where the API listens

Test harnesses of every later issue start hosts this way.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from hostvisor.actors.actor import call
from hostvisor.api.client import Client, connect
from hostvisor.api.front import RpcFront
from hostvisor.api.rpc.domain_verbs import domain_verbs
from hostvisor.api.rpc.host_verbs import HostApi, host_verbs
from hostvisor.api.rpc.network_verbs import NetworkApi, network_verbs
from hostvisor.api.rpc.pool_verbs import pool_verbs
from hostvisor.api.rpc.sdm_verbs import sdm_verbs
from hostvisor.api.rpc.storage_api import StorageApi
from hostvisor.api.rpc.task_verbs import TaskApi, task_verbs
from hostvisor.api.rpc.verbs import VerbTable
from hostvisor.api.rpc.vm_verbs import VmApi, vm_verbs
from hostvisor.api.rpc.volume_verbs import volume_verbs
from hostvisor.supervision.clock import Clock
from hostvisor.supervision.config import Config
from hostvisor.supervision.gate import Gate
from hostvisor.supervision.recovery import recover_containers, recover_vms
from hostvisor.supervision.registry import ActorStatus, Registry
from hostvisor.supervision.runner import TreeRunner
from hostvisor.supervision.spec import ChildSpec
from hostvisor.supervision.storage_recovery import recover_storage
from hostvisor.supervision.tree import HostTree

FRONT = "api/front"


def verb_table(tree: HostTree) -> VerbTable:
    """Return every verb the host serves."""
    storage = StorageApi(tree.registry, tree.config, tree.domain_child, tree.pool_child)
    vms = VmApi(
        tree.registry,
        tree.vm_child,
        operation_timeout=tree.config.vm_operation_timeout,
        prepare_disk=storage.prepare_disk,
        container_child=tree.container_child,
    )
    networks = NetworkApi(tree.registry)
    return VerbTable.of(
        host_verbs(HostApi(tree.registry, confirm_connectivity=networks.confirm)),
        network_verbs(networks),
        vm_verbs(vms),
        pool_verbs(storage),
        domain_verbs(storage),
        volume_verbs(storage),
        sdm_verbs(storage),
        task_verbs(TaskApi(tree.registry)),
    )


def offline_verb_table() -> VerbTable:
    """Return the verb table for describing the API (schema, CLI help); serves nothing."""
    return verb_table(HostTree(Config(), registry=Registry()))


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
        self.gate = Gate()
        self.tree = HostTree(config, registry=self.registry, clock=clock)
        table = verb_table(self.tree)
        front = ChildSpec(
            id="front",
            start=lambda link: RpcFront.spawn(
                link, config=config, table=table, is_ready=self.gate.is_open
            ),
        )
        self.runner = TreeRunner(
            self.tree.children(api_children=[front]),
            registry=self.registry,
            clock=clock,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the API listens on."""
        address: tuple[str, int] = call(self.registry.lookup(FRONT), "address").get(timeout=5)
        return address

    def client(self, *, timeout: float = 30.0) -> Client:
        """Return a connected API client (plain STOMP; the embedded default)."""
        host, port = self.address
        return connect(host, port, timeout=timeout)

    def start(self) -> Self:
        """Start the tree and open the gate (blocking). Raises StartFailed."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.runner.start(self.config.start_timeout)
        recover_storage(self.tree)
        recover_vms(self.tree)
        recover_containers(self.tree)
        self.gate.open()
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
