"""Typed clients of the storage actors: the only place their method names are strings.

mopidy's CoreProxy shape, at `call()`'s speed: one thin wrapper per actor, one
method per actor method, same name and parameters, each returning a future
(`CallbackFuture`, so the API's loop can await it without blocking). An actor
method that answers later returns a future of its own; the proxy flattens it, so
every method here settles once, with the final answer.

`StorageClient` finds the actors by their addresses (actors/storage/addresses.py)
and adopts a domain found on a connected mount the first time it is named.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka

from hostvisor.actors.actor import CallbackFuture, call
from hostvisor.actors.errors import Timeout, Unavailable
from hostvisor.actors.storage import addresses
from hostvisor.actors.storage.model import check_uuid
from hostvisor.actors.storage.serial import failed

if TYPE_CHECKING:
    from pathlib import Path

    from hostvisor.actors.storage.connections import ServerConnection
    from hostvisor.actors.storage.domain_ops import DomainRead, DomainTask, DomainWrite
    from hostvisor.actors.storage.model import DomainStatus
    from hostvisor.actors.storage.pool_admin import Reconstruct
    from hostvisor.actors.storage.pool_model import ConnectPool, CreateDomain, CreatePool
    from hostvisor.actors.storage.tasks import Work

T = TypeVar("T")

Lookup = Callable[[str], "pykka.ActorRef[Any] | None"]
"""The registry's `get`: an actor by path, or None."""


def flat(future: pykka.Future[Any]) -> CallbackFuture:
    """One future settled with the answer, even when the answer is itself a future."""
    out = CallbackFuture()

    def inner(done: CallbackFuture) -> None:
        try:
            value = done.get(timeout=0)
        except BaseException:  # noqa: BLE001 - handed on
            out.set_exception(sys.exc_info())
        else:
            out.set(value)

    def outer(done: CallbackFuture) -> None:
        try:
            value = done.get(timeout=0)
        except BaseException:  # noqa: BLE001 - handed on
            out.set_exception(sys.exc_info())
            return
        if isinstance(value, CallbackFuture):
            value.add_done_callback(inner)
        else:
            out.set(value)

    cast("CallbackFuture", future).add_done_callback(outer)
    return out


def chain(future: CallbackFuture, then: Callable[[Any], CallbackFuture]) -> CallbackFuture:
    """A future of `then(value)`'s answer once `future` settles (errors pass through)."""
    out = CallbackFuture()

    def step(done: CallbackFuture) -> None:
        try:
            value = done.get(timeout=0)
            following = then(value)
        except BaseException:  # noqa: BLE001 - handed on
            out.set_exception(sys.exc_info())
            return
        following.add_done_callback(lambda last: _copy(last, out))

    future.add_done_callback(step)
    return out


def _copy(source: CallbackFuture, target: CallbackFuture) -> None:
    try:
        value = source.get(timeout=0)
    except BaseException:  # noqa: BLE001 - handed on
        target.set_exception(sys.exc_info())
    else:
        target.set(value)


def wait(future: pykka.Future[T], *, timeout: float, what: str) -> T:
    """Block a worker (never an actor's thread) until `future` settles, at most `timeout` s.

    Raises:
        Timeout: no answer in time.
        Unavailable: the actor died before answering.
    """
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise Timeout(actor=what, timeout=timeout) from None
    except pykka.ActorDeadError:
        raise Unavailable(actor=what, reason="actor is not running") from None


class _Proxy:
    __slots__ = ("ref",)

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        """Wrap the actor's ref."""
        self.ref = ref

    def _call(self, method: str, /, *args: Any, **kwargs: Any) -> CallbackFuture:
        try:
            return flat(call(self.ref, method, *args, **kwargs))
        except pykka.ActorDeadError:
            return failed(Unavailable(actor=type(self).__name__, reason="actor is not running"))


class DomainProxy(_Proxy):
    """The client of one `StorageDomainActor`."""

    __slots__ = ()

    def read(self, op: DomainRead[T]) -> CallbackFuture:
        """See `StorageDomainActor.read`."""
        return self._call("read", op)

    def write(self, op: DomainWrite[T]) -> CallbackFuture:
        """See `StorageDomainActor.write`."""
        return self._call("write", op)

    def run_task(self, op: DomainTask) -> CallbackFuture:
        """See `StorageDomainActor.run_task` (settles with the task id)."""
        return self._call("run_task", op)

    def repo_stats(self, *, member: bool = False) -> CallbackFuture:
        """See `StorageDomainActor.repo_stats`."""
        return self._call("repo_stats", member=member)


class TaskProxy(_Proxy):
    """The client of the `TaskManager`."""

    __slots__ = ()

    def submit(self, verb: str, work: Work, **kwargs: Any) -> CallbackFuture:
        """See `TaskManager.submit` (settles with the task id)."""
        return self._call("submit", verb, work, **kwargs)

    def open_task(self, verb: str, *, tag: str = "spm") -> CallbackFuture:
        """See `TaskManager.open_task` (settles with the task's `TaskContext`)."""
        return self._call("open_task", verb, tag=tag)

    def submit_job(self, job_id: str, work: Work, *, description: str = "") -> CallbackFuture:
        """See `TaskManager.submit_job`."""
        return self._call("submit_job", job_id, work, description=description)

    def status(self, task_id: str) -> CallbackFuture:
        """See `TaskManager.status`."""
        return self._call("status", task_id)

    def info(self, task_id: str) -> CallbackFuture:
        """See `TaskManager.info`."""
        return self._call("info", task_id)

    def clear(self, task_id: str) -> CallbackFuture:
        """See `TaskManager.clear`."""
        return self._call("clear", task_id)

    def stop_task(self, task_id: str) -> CallbackFuture:
        """See `TaskManager.stop_task`."""
        return self._call("stop_task", task_id)

    def revert(self, task_id: str) -> CallbackFuture:
        """See `TaskManager.revert`."""
        return self._call("revert", task_id)

    def use_store(self, directory: Path | None) -> CallbackFuture:
        """See `TaskManager.use_store` (settles with how many tasks were loaded)."""
        return self._call("use_store", directory)

    def all_statuses(self, tag: str | None = None) -> CallbackFuture:
        """See `TaskManager.all_statuses`."""
        return self._call("all_statuses", tag)

    def all_info(self, tag: str | None = None) -> CallbackFuture:
        """See `TaskManager.all_info`."""
        return self._call("all_info", tag)

    def all_details(self) -> CallbackFuture:
        """See `TaskManager.all_details`."""
        return self._call("all_details")

    def jobs(self, job_type: str | None = None, job_ids: Iterable[str] = ()) -> CallbackFuture:
        """See `TaskManager.jobs`."""
        return self._call("jobs", job_type, list(job_ids))


class ConnectionsProxy(_Proxy):
    """The client of the `ConnectionsActor`."""

    __slots__ = ()

    def connect(self, conns: Sequence[ServerConnection]) -> CallbackFuture:
        """See `ConnectionsActor.connect` (settles with [{id, status}])."""
        return self._call("connect", tuple(conns))

    def disconnect(self, conns: Sequence[ServerConnection]) -> CallbackFuture:
        """See `ConnectionsActor.disconnect` (settles with [{id, status}])."""
        return self._call("disconnect", tuple(conns))

    def connections(self) -> CallbackFuture:
        """See `ConnectionsActor.connections`."""
        return self._call("connections")

    def reconnect(self) -> CallbackFuture:
        """See `ConnectionsActor.reconnect`."""
        return self._call("reconnect")

    def adopt(self, sd_uuid: str) -> CallbackFuture:
        """See `ConnectionsActor.adopt`."""
        return self._call("adopt", sd_uuid)

    def forget(self, sd_uuid: str) -> CallbackFuture:
        """See `ConnectionsActor.forget`."""
        return self._call("forget", sd_uuid)

    def adopt_all(self) -> CallbackFuture:
        """See `ConnectionsActor.adopt_all` (settles with how many domains have actors)."""
        return self._call("adopt_all")

    def create_domain(self, request: CreateDomain) -> CallbackFuture:
        """See `ConnectionsActor.create_domain`."""
        return self._call("create_domain", request)

    def scan(self) -> CallbackFuture:
        """See `ConnectionsActor.scan` (settles with [(sdUUID, poolUUID, metadata)])."""
        return self._call("scan")


class PoolProxy(_Proxy):
    """The client of the `StoragePoolActor`."""

    __slots__ = ()

    def connected(self) -> CallbackFuture:
        """See `StoragePoolActor.connected` (a PoolRecord or None)."""
        return self._call("connected")

    def create(self, request: CreatePool) -> CallbackFuture:
        """See `StoragePoolActor.create`."""
        return self._call("create", request)

    def connect(self, request: ConnectPool) -> CallbackFuture:
        """See `StoragePoolActor.connect`."""
        return self._call("connect", request)

    def disconnect(self, sp_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.disconnect`."""
        return self._call("disconnect", sp_uuid)

    def info(self, sp_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.info`."""
        return self._call("info", sp_uuid)

    def spm_start(self, sp_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.spm_start` (settles with the task id)."""
        return self._call("spm_start", sp_uuid)

    def became_spm(self, lock_fd: int) -> CallbackFuture:
        """See `StoragePoolActor.became_spm`."""
        return self._call("became_spm", lock_fd)

    def spm_stop(self, sp_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.spm_stop`."""
        return self._call("spm_stop", sp_uuid)

    def spm_status(self, sp_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.spm_status`."""
        return self._call("spm_status", sp_uuid)

    def attach(self, sp_uuid: str, sd_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.attach`."""
        return self._call("attach", sp_uuid, sd_uuid)

    def set_status(self, sp_uuid: str, sd_uuid: str, status: DomainStatus) -> CallbackFuture:
        """See `StoragePoolActor.set_status`."""
        return self._call("set_status", sp_uuid, sd_uuid, status)

    def detach(self, sp_uuid: str, sd_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.detach`."""
        return self._call("detach", sp_uuid, sd_uuid)

    def destroy(self, sp_uuid: str) -> CallbackFuture:
        """See `StoragePoolActor.destroy`."""
        return self._call("destroy", sp_uuid)

    def reconstruct_master(self, request: Reconstruct) -> CallbackFuture:
        """See `StoragePoolActor.reconstruct_master`."""
        return self._call("reconstruct_master", request)

    def switch_master(self, sp_uuid: str, old: str, new: str, version: int) -> CallbackFuture:
        """See `StoragePoolActor.switch_master` (settles with the task id)."""
        return self._call("switch_master", sp_uuid, old, new, version)

    def master_switched(self, sp_uuid: str, new: str, version: int) -> CallbackFuture:
        """See `StoragePoolActor.master_switched`."""
        return self._call("master_switched", sp_uuid, new, version)

    def upgrade(self, sp_uuid: str, target: int) -> CallbackFuture:
        """See `StoragePoolActor.upgrade` (settles with "started")."""
        return self._call("upgrade", sp_uuid, target)

    def vms_info(self, sp_uuid: str, sd_uuid: str, vm_ids: Sequence[str]) -> CallbackFuture:
        """See `StoragePoolActor.vms_info`."""
        return self._call("vms_info", sp_uuid, sd_uuid, tuple(vm_ids))

    def update_vms(
        self, sp_uuid: str, sd_uuid: str, vms: Sequence[tuple[str, str]]
    ) -> CallbackFuture:
        """See `StoragePoolActor.update_vms`."""
        return self._call("update_vms", sp_uuid, sd_uuid, tuple(vms))

    def remove_vm(self, sp_uuid: str, sd_uuid: str, vm: str) -> CallbackFuture:
        """See `StoragePoolActor.remove_vm`."""
        return self._call("remove_vm", sp_uuid, sd_uuid, vm)

    def member_read(
        self, sp_uuid: str, sd_uuid: str, op: DomainRead[T], *, spm: bool = False
    ) -> CallbackFuture:
        """See `StoragePoolActor.member_read`."""
        return self._call("member_read", sp_uuid, sd_uuid, op, spm=spm)

    def member_write(self, sp_uuid: str, sd_uuid: str, op: DomainWrite[T]) -> CallbackFuture:
        """See `StoragePoolActor.member_write` (SPM only)."""
        return self._call("member_write", sp_uuid, sd_uuid, op)

    def member_task(self, sp_uuid: str, sd_uuid: str, op: DomainTask) -> CallbackFuture:
        """See `StoragePoolActor.member_task` (SPM only; settles with the task id)."""
        return self._call("member_task", sp_uuid, sd_uuid, op)


@dataclass(frozen=True, slots=True)
class StorageClient:
    """Finds the storage actors by address; what api/ and the pool use to reach them.

    Every method returns at once (a registry read and a tell); none blocks.
    """

    lookup: Lookup
    listing: Callable[[str], Sequence[str]] | None = None
    """The registry's children of a supervisor path (for listings), if given."""

    def running_domains(self) -> list[str]:
        """The ids of the domains that have an actor (a registry read)."""
        if self.listing is None:
            return []
        return [path.rsplit("/", 1)[-1] for path in self.listing(addresses.STORAGE_DOMAINS)]

    def _ref(self, path: str) -> pykka.ActorRef[Any]:
        ref = self.lookup(path)
        if ref is None:
            raise Unavailable(actor=path, reason="not running")
        return ref

    def connections(self) -> ConnectionsProxy:
        """The connections actor. Raises Unavailable."""
        return ConnectionsProxy(self._ref(addresses.CONNECTIONS))

    def pool(self) -> PoolProxy:
        """The pool actor. Raises Unavailable."""
        return PoolProxy(self._ref(addresses.POOL))

    def tasks(self) -> TaskProxy:
        """The task manager. Raises Unavailable."""
        return TaskProxy(self._ref(addresses.TASKS))

    def running_domain(self, sd_uuid: str) -> DomainProxy | None:
        """The domain's actor if it runs."""
        ref = self.lookup(addresses.domain_path(sd_uuid))
        return None if ref is None else DomainProxy(ref)

    def domain(self, sd_uuid: str) -> CallbackFuture:
        """A future of the domain's `DomainProxy`, adopting a domain found on a mount.

        Fails with InvalidArgument (not a UUID), StorageDomainDoesNotExist (no
        connected mount holds it) or Unavailable.
        """
        try:
            check_uuid(sd_uuid, "storagedomainID")
            running = self.running_domain(sd_uuid)
            if running is not None:
                done = CallbackFuture()
                done.set(running)
                return done
            adopted = self.connections().adopt(sd_uuid)
        except Exception:  # noqa: BLE001 - answered as the future's error
            return _raised()
        return chain(adopted, lambda _: self._adopted(sd_uuid))

    def _adopted(self, sd_uuid: str) -> CallbackFuture:
        done = CallbackFuture()
        done.set(DomainProxy(self._ref(addresses.domain_path(sd_uuid))))
        return done

    def read(self, sd_uuid: str, op: DomainRead[T]) -> CallbackFuture:
        """Run `op` as a read of the domain (adopting it if needed)."""
        return chain(self.domain(sd_uuid), lambda domain: domain.read(op))

    def write(self, sd_uuid: str, op: DomainWrite[T]) -> CallbackFuture:
        """Run `op` as a write of the domain, in order (adopting it if needed)."""
        return chain(self.domain(sd_uuid), lambda domain: domain.write(op))

    def run_task(self, sd_uuid: str, op: DomainTask) -> CallbackFuture:
        """Start `op` as a task of the domain; the future settles with the task id."""
        return chain(self.domain(sd_uuid), lambda domain: domain.run_task(op))


def _raised() -> CallbackFuture:
    future = CallbackFuture()
    future.set_exception(sys.exc_info())
    return future
