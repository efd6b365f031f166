"""`edge`: a STOMP server with the real dispatcher, alone on its loop, with the settings a
test picks.

The front (`harness.front`) takes its settings from the config file; the edge's
budgets (frame deadline, write backlog, batch concurrency) are server settings,
set here directly so a test can make them short or small.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hostvisor.actors.actor import Actor, call
from hostvisor.api.rpc.dispatch import Dispatcher
from hostvisor.api.rpc.host_verbs import HostApi, host_verbs
from hostvisor.api.rpc.verbs import Kind, Param, Verb, VerbTable
from hostvisor.api.stomp.server import ServerSettings, StompServer
from hostvisor.supervision.registry import Registry

WORK_TIMEOUT = 0.5
"""Test.work's timeout (seconds)."""


class Worker(Actor):
    """Counts the work it has done; each piece takes `seconds` of its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.done = 0

    def work(self, seconds: float) -> int:
        threading.Event().wait(seconds)  # stands for a busy actor, not for an event
        self.done += 1
        return self.done

    def count(self) -> int:
        return self.done


class EdgeServer:
    """A `StompServer` + `Dispatcher` on a loop thread of their own, on 127.0.0.1."""

    def __init__(self, settings: ServerSettings, **dispatcher: Any) -> None:
        self.worker = Worker.start()
        table = VerbTable.of(host_verbs(HostApi(Registry())), [self._work_verb()])
        self.dispatcher = Dispatcher(table, is_ready=lambda: True, **dispatcher)
        self.server = StompServer(self.dispatcher, settings=settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="edge-loop")
        self.thread.start()
        self.port = self.run(self.server.listen("127.0.0.1", 0))[1]

    def _work_verb(self) -> Verb:
        return Verb(
            namespace="Test",
            name="work",
            doc="",
            timeout=WORK_TIMEOUT,
            params=(Param(name="seconds", kind=Kind.NUMBER, doc=""),),
            handler=lambda c: call(self.worker, "work", c.args["seconds"]),
        )

    def run(self, coroutine: Any) -> Any:
        """Run `coroutine` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def connections(self) -> int:
        """How many connections the server holds (read on its loop)."""

        async def count() -> int:
            return len(self.server.connections)

        return int(self.run(count()))

    def done(self) -> int:
        """How much work the worker has done, once the work queued before is done."""
        return int(call(self.worker, "count").get(timeout=30))

    def stop(self) -> None:
        async def close() -> None:
            await self.server.close()
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        self.worker.stop(block=True, timeout=30)


@pytest.fixture
def edge() -> Iterator[Callable[..., EdgeServer]]:
    """Start edge servers: `edge(ServerSettings(...), batch_concurrency=...)`."""
    servers: list[EdgeServer] = []

    def start(settings: ServerSettings | None = None, **dispatcher: Any) -> EdgeServer:
        server = EdgeServer(settings or ServerSettings(), **dispatcher)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
