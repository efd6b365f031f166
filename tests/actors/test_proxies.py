"""Each typed proxy sends its actor's method by that method's name, with its params.

A proxy method is a one-line `call(self.ref, "name", ...)`: the only place the name
is a string. These tests hold every proxy against its actor class, so a proxy
method whose actor method was renamed or re-signed fails here, not on the wire.
"""

from __future__ import annotations

import inspect
from typing import Any, get_args

import pykka
import pytest
from pykka.messages import ProxyCall

from hostvisor.actors.container.actor import ContainerActor
from hostvisor.actors.container.proxy import ContainerProxy
from hostvisor.actors.events import Event, Publish
from hostvisor.actors.events_proxy import EventBusProxy
from hostvisor.actors.guest.board import VmBoard
from hostvisor.actors.host.actor import HostActor
from hostvisor.actors.host.proxy import HostProxy
from hostvisor.actors.hypervisor.actor import HypervisorActor
from hostvisor.actors.hypervisor.proxy import HypervisorProxy
from hostvisor.actors.network.actor import NetworkActor
from hostvisor.actors.network.configurator import ConfirmConnectivity, NetworkConfigurator
from hostvisor.actors.network.proxy import NetworkConfiguratorProxy, NetworkProxy
from hostvisor.actors.vm.actor import VmActor
from hostvisor.actors.vm.proxy import Rendering, UnsupportedVerb, VmBoardProxy, VmProxy
from hostvisor.api.front import FrontProxy, RpcFront


class Recorder:
    """Stands for an ActorRef: records what is sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def ask(self, message: Any, *, block: bool = True) -> pykka.Future[Any]:
        assert block is False  # a proxy never waits
        self.sent.append(message)
        return pykka.ThreadingFuture()

    def tell(self, message: Any) -> None:
        self.sent.append(message)


PAIRS = [
    (VmProxy, VmActor),
    (ContainerProxy, ContainerActor),
    (VmBoardProxy, VmBoard),
    (HostProxy, HostActor),
    (HypervisorProxy, HypervisorActor),
    (NetworkConfiguratorProxy, NetworkConfigurator),
    (NetworkProxy, NetworkActor),
    (FrontProxy, RpcFront),
]
NOT_BY_NAME = {"rendered", "unsupported", "confirm_connectivity"}
"""Proxy methods that send another method's name, or a message."""


def _methods(proxy: type) -> list[str]:
    return [
        name
        for name, member in inspect.getmembers(proxy, inspect.isfunction)
        if not name.startswith("_")
    ]


def _params(function: Any) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()][1:]


@pytest.mark.parametrize(("proxy", "actor"), PAIRS, ids=[p.__name__ for p, _ in PAIRS])
def test_every_proxy_method_calls_the_actor_method_of_its_name_with_its_params(proxy, actor):
    for name in _methods(proxy):
        if name in NOT_BY_NAME or name in getattr(actor, "UNSUPPORTED", ()):
            continue  # (a method the actor declares unsupported is answered 75 by its base)
        assert callable(getattr(actor, name, None)), f"{actor.__name__} has no {name}"
        assert _params(getattr(proxy, name)) == _params(getattr(actor, name)), name
        ref = Recorder()
        arguments = {p: object() for p, _kind, _default in _params(getattr(proxy, name))}
        getattr(proxy(ref), name)(**arguments)
        [sent] = ref.sent
        assert isinstance(sent, ProxyCall)
        assert sent.attr_path == (name,)
        assert {**dict(zip(arguments, sent.args, strict=False)), **sent.kwargs} == arguments


@pytest.mark.parametrize("actor", [VmActor, ContainerActor])
def test_every_rendering_is_a_method_of_each_vm_actor(actor):
    for kind in get_args(Rendering):
        ref = Recorder()
        VmProxy(ref).rendered(kind)
        assert ref.sent[0].attr_path == (kind,)
        assert callable(getattr(actor, kind))


def test_unsupported_verbs_are_sent_by_their_wire_name_and_only_a_libvirt_vm_has_them():
    for name in get_args(UnsupportedVerb):
        ref = Recorder()
        VmProxy(ref).unsupported(name)
        assert ref.sent[0].attr_path == (name,)
        assert callable(getattr(VmActor, name, None))
        assert not hasattr(ContainerActor, name)  # its actor answers 75 (GuestActor)


def test_tells_go_up_as_messages():
    ref = Recorder()
    NetworkConfiguratorProxy(ref).confirm_connectivity()
    event = Event(method="|net|host_conn|no_id", params={})
    EventBusProxy(ref).publish(event)
    assert ref.sent == [ConfirmConnectivity(), Publish(event)]
    assert callable(NetworkConfigurator.confirm_connectivity)
