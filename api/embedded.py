"""The embedded host: the same tree `hostvisor serve` runs, started in-process.

    with EmbeddedHost(load_config(state_dir=tmp)) as host:
        host.registry.lookup("infra/hypervisor")

Test harnesses of every later issue start hosts this way.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from hostvisor.supervision.clock import Clock
from hostvisor.supervision.config import Config
from hostvisor.supervision.registry import ActorStatus, Registry
from hostvisor.supervision.runner import TreeRunner
from hostvisor.supervision.tree import host_tree


class EmbeddedHost:
    """A running host tree for the length of a `with` block.

    Entering blocks until the tree is up (at most `config.start_timeout`); leaving
    stops it in reverse order within `config.stop_timeout`.
    """

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        """Prepare the tree for `config`; start it with `start()` or `with`."""
        self.config = config
        self.registry = Registry()
        self.runner = TreeRunner(
            host_tree(config, registry=self.registry, clock=clock),
            registry=self.registry,
            clock=clock,
        )

    def start(self) -> EmbeddedHost:
        """Start the tree (blocking). Raises StartFailed."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.runner.start(self.config.start_timeout)
        return self

    def stop(self) -> bool:
        """Stop the tree; False if it had to be abandoned. Idempotent."""
        return self.runner.stop(self.config.stop_timeout)

    def status(self) -> tuple[ActorStatus, ...]:
        """Return the status of every actor, depth first."""
        return self.runner.snapshot()

    def __enter__(self) -> Self:
        """Start the tree."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the tree."""
        self.stop()
