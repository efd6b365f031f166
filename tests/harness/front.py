"""A front (the STOMP edge) started alone, with test verbs, for API tests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from hostvisor.actors.actor import Actor, Link, call
from hostvisor.api.front import RpcFront
from hostvisor.api.rpc.host_verbs import HostApi, host_verbs
from hostvisor.api.rpc.verbs import Kind, Param, Verb, VerbTable
from hostvisor.supervision.config import load_config
from hostvisor.supervision.registry import Registry


class Sleeper(Actor):
    def nap(self, seconds: float) -> str:
        threading.Event().wait(seconds)
        return "rested"


class Front:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.ready = threading.Event()
        self.ready.set()
        self.sleeper = Sleeper.start()
        table = VerbTable.of(host_verbs(HostApi(Registry())), self._test_verbs())
        config = load_config(state_dir=tmp_path, management_port=0, **settings)
        link = Link(path="api/front")
        self.ref = RpcFront.spawn(link, config=config, table=table, is_ready=self.ready.is_set)
        link.started.get(timeout=10)
        self.port = call(self.ref, "address").get(timeout=5)[1]

    def _test_verbs(self) -> list[Verb]:
        def crash(_call: Any) -> Any:
            raise RuntimeError("secret internal detail")

        return [
            Verb(
                namespace="Test",
                name="nap",
                doc="",
                timeout=0.3,
                params=(Param(name="seconds", kind=Kind.NUMBER, doc=""),),
                handler=lambda c: call(self.sleeper, "nap", c.args["seconds"]),
            ),
            Verb(namespace="Test", name="crash", doc="", handler=crash),
            Verb(
                namespace="Test",
                name="add",
                doc="",
                params=(
                    Param(name="a", kind=Kind.INT, doc=""),
                    Param(name="b", kind=Kind.INT, doc=""),
                ),
                handler=lambda c: c.args["a"] + c.args["b"],
            ),
        ]

    def stop(self) -> None:
        self.ref.stop(block=True, timeout=10)
        self.sleeper.stop(block=True, timeout=10)
