"""NetworkConfigurator: owner of the host's network configuration and of setupNetworks.

One actor serialises every change to the host's networks (VDSM runs one network
verb at a time; a second one gets code 40). It owns the running configuration
(persisted, see `persistence`), the two workers that enter the managed namespace
(one writes, one reads, so a change in progress never delays a capabilities read),
and the life of the network actors: after each change that stays it starts, tells
or stops one `NetworkActor` per network, through the `networks/nets` supervisor (a
sideways ask to a supervisor that never asks back).

A setupNetworks call, as messages:

    setup_networks --(writer: apply.transact)--> Applied
        error: the caller's future fails (the kernel is as before)
        no connectivity check, or already confirmed: commit
        else wait: ConfirmConnectivity -> commit
                   ConnectivityTimeout -> (writer: apply.undo) -> RolledBack -> code 10

Before its first kernel step, a change is recorded as pending (`persistence`:
the running configuration it starts from and the image to restore); the record
goes once the change is committed or undone. So a change that waits for its
connectivity check when the configurator crashes, or the agent is killed, is
not left in the kernel behind a running configuration that says otherwise.

At start it compares the persisted boot identity with the current one: after a
(host or namespace) boot the kernel has none of the running configuration, so the
safe configuration is applied and becomes the running one. Otherwise a pending
change that was never committed is rolled back; else an agent restart changes
nothing in the kernel.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka
from pyroute2 import IPRoute

from hostvisor.actors.actor import Actor, CallbackFuture
from hostvisor.actors.errors import (
    ActorCrashed,
    AlreadyExists,
    HostvisorError,
    NotFound,
    Unavailable,
)
from hostvisor.actors.hooks import NO_HOOKS, Hooks
from hostvisor.actors.network import apply, nethooks, netinfo, rollback
from hostvisor.actors.network.actor import Reconfigured
from hostvisor.actors.network.errors import ConnectivityLost, NetworkBusy
from hostvisor.actors.network.model import NetConfig, NetworkAttrs, Request, parse_request
from hostvisor.actors.network.monitor import LinkState, dump_links
from hostvisor.actors.network.netinfo import NetworkView
from hostvisor.actors.network.netns import NamespaceWorker
from hostvisor.actors.network.persistence import NetStore, Pending, boot_identity
from hostvisor.actors.timers import Timer

log = logging.getLogger(__name__)

DONE = {"code": 0, "message": "Done"}
RESTORE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class NetworkChildren:
    """How the configurator reaches the network actors (all calls block briefly).

    Attributes:
        running: returns the names of the network actors that run now.
        start: starts the actor of a network, given its attributes and links.
        stop: stops and forgets the actor of a network.
        ref: returns the actor of a network, or None.
    """

    running: Callable[[], set[str]]
    start: Callable[[str, NetworkAttrs, Mapping[str, LinkState]], None]
    stop: Callable[[str], None]
    ref: Callable[[str], pykka.ActorRef[Any] | None]


@dataclass(frozen=True, slots=True)
class Applied:
    """Tell (from the writer): the transaction ended; `outcome` or `error`.

    `request`: what a before_network_setup hook made of the request, if it ran.
    """

    txid: int
    outcome: apply.Outcome | None
    links: Mapping[str, LinkState]
    error: BaseException | None
    request: Request | None = None


@dataclass(frozen=True, slots=True)
class ConnectivityTimeout:
    """Tell (from a timer): the Engine did not confirm in time."""

    txid: int


@dataclass(frozen=True, slots=True)
class RolledBack:
    """Tell (from the writer): the change of a failed connectivity check was undone."""

    txid: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class ConfirmConnectivity:
    """Tell (from the API): a client reached the host (Host.confirmConnectivity, Host.ping)."""


@dataclass(slots=True)
class _Transaction:
    txid: int
    request: Request
    future: CallbackFuture
    started: float
    outcome: apply.Outcome | None = None
    links: Mapping[str, LinkState] | None = None
    timer: Timer | None = None


class NetworkConfigurator(Actor):
    """Owns the network configuration; applies setupNetworks, all or nothing.

    Args:
        netns: the managed namespace (None: the process's own).
        store: the persisted configuration.
        children: how to start, tell and stop the network actors.
        hooks: the host's VDSM hooks (before/after_network_setup run on the writer).

    Connectivity checks run on the tree's timer service and clock (`self.runtime`).
    """

    def __init__(
        self,
        *,
        netns: str | None,
        store: NetStore,
        children: NetworkChildren,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        """Remember collaborators; read the configuration and the kernel in `on_start`."""
        super().__init__()
        self._hooks = hooks
        self._netns = netns or None
        self._store = store
        self._children = children
        self._running = NetConfig()
        self._busy: _Transaction | None = None
        self._txids = itertools.count(1)
        self._confirmed_at = float("-inf")
        self._writer: NamespaceWorker | None = None
        self._reader: NamespaceWorker | None = None

    # -- life ---------------------------------------------------------------------------

    def on_start(self) -> None:
        """Read the running config; after a boot restore the safe one; start the actors.

        Without a boot, a pending change that was never committed is rolled back.
        Blocks until a restore is done (at most RESTORE_TIMEOUT): the host's API
        stays gated meanwhile, as during any recovery.
        """
        self._writer = NamespaceWorker(self._netns, f"{self.path}:writer")
        self._reader = NamespaceWorker(self._netns, f"{self.path}:reader")
        self._running = self._store.running()
        identity = boot_identity(self._netns)
        if self._store.boot() != identity:
            self._store.clear_pending()  # the kernel lost it with everything else
            self._restore_safe()
            self._store.write_boot(identity)
        else:
            self._undo_pending()
        links = self._writer.run(_link_states, timeout=RESTORE_TIMEOUT)
        self._sync_children(set(self._running.networks), links)

    def on_stop(self) -> None:
        """Stop the namespace workers; a waiting caller learns the host is stopping.

        A change waiting for its connectivity check stays pending: the next start
        rolls it back (as after a kill).
        """
        reason = "stopping; an unconfirmed change is rolled back at the next start"
        self._end(Unavailable(actor=self.path, reason=reason))

    def on_failure(self, *_exc_info: object) -> None:
        """Fail a waiting caller; stop the workers and wait for the writer to end.

        Runs in the dying actor's thread, before its supervisor hears of the crash:
        so the next incarnation, which rolls back the pending change, never runs
        beside a writer still applying this one's (waits at most RESTORE_TIMEOUT).
        """
        reason = "the unconfirmed change is rolled back when the configurator restarts"
        self._end(ActorCrashed(path=self.path, reason=reason))
        if self._writer is not None and not self._writer.join(RESTORE_TIMEOUT):
            log.error("the network writer did not end in %.0f s", RESTORE_TIMEOUT)

    def _end(self, error: HostvisorError) -> None:
        for worker in (self._writer, self._reader):
            if worker is not None:
                worker.stop()
        transaction, self._busy = self._busy, None
        if transaction is not None:
            if transaction.timer is not None:
                transaction.timer.cancel()
            transaction.future.set_exception(exc_info=(type(error), error, None))

    def _undo_pending(self) -> None:
        """Roll back a change recorded as pending and never committed (see the docstring)."""
        pending = self._store.pending()
        if pending is None:
            return
        if pending.before.to_json() != self._running.to_json():
            log.info("the last network change was committed; its pending record is obsolete")
        else:
            log.warning("a network change was never confirmed (a crash or a kill): rolling back")
            assert self._writer is not None  # noqa: S101 - made just before
            try:
                self._writer.run(lambda ipr: apply.undo(ipr, pending.image), RESTORE_TIMEOUT)
            except HostvisorError as error:
                log.error("the unconfirmed network change was not rolled back: %s", error)  # noqa: TRY400
        self._store.clear_pending()

    def _restore_safe(self) -> None:
        safe = self._store.safe()
        log.info("boot detected: restoring the safe network configuration (%d networks)",
                 len(safe.networks))  # fmt: skip
        request = Request(
            networks=dict(safe.networks),
            bonds=dict(safe.bonds),
            connectivity_check=False,
        )
        assert self._writer is not None  # noqa: S101 - made just before
        try:
            outcome = self._writer.run(
                lambda ipr: apply.transact(ipr, NetConfig(), request), timeout=RESTORE_TIMEOUT
            )
        except HostvisorError as error:
            log.error("the safe network configuration could not be restored: %s", error)  # noqa: TRY400
            self._running = NetConfig()
        else:
            self._running = outcome.config
        self._store.write_running(self._running)

    # -- the API --------------------------------------------------------------------------

    def setup_networks(
        self, networks: Mapping[str, Any], bondings: Mapping[str, Any], options: Mapping[str, Any]
    ) -> CallbackFuture:
        """Start a setupNetworks; return a future of VDSM's status (`{code: 0, ...}`).

        Returns at once. The future settles once the change is in force (and, with a
        connectivity check, confirmed), or fails with the error after a rollback.

        The future fails with HookFailed (code 78) when a before_network_setup hook
        fails, before anything is touched.

        Raises:
            NetworkBusy: another change is running or waits for its confirmation.
            NetworkError: the request is malformed (nothing was touched).
        """
        if self._busy is not None:
            raise NetworkBusy(reason="another setupNetworks is in progress")
        request = parse_request(networks, bondings, options)
        hooks, data = self._hooks, nethooks.hook_data(networks, bondings, options)
        transaction = _Transaction(
            txid=next(self._txids),
            request=request,
            future=CallbackFuture(),
            started=self.clock.monotonic(),
        )
        self._busy = transaction
        running = self._running
        ref = self.actor_ref
        store = self._store

        def record(image: rollback.Image) -> None:
            store.write_pending(Pending(before=running, image=image))

        def run(ipr: IPRoute) -> tuple[apply.Outcome, Mapping[str, LinkState], Request | None]:
            hooked = nethooks.before(hooks, data)  # may change the request, or veto it
            applied, left = (request, data) if hooked is None else hooked
            try:
                outcome = apply.transact(ipr, running, applied, before_steps=record)
            except BaseException:
                nethooks.after(hooks, "after_network_setup_fail", left)
                raise
            nethooks.after(hooks, "after_network_setup", left)
            return outcome, _link_states(ipr), None if hooked is None else applied

        def done(future: CallbackFuture) -> None:
            try:
                outcome, links, hooked = future.get(timeout=0)
            except BaseException as error:  # noqa: BLE001 - handed to the actor's thread
                _tell(ref, Applied(transaction.txid, None, {}, error))
            else:
                _tell(ref, Applied(transaction.txid, outcome, links, None, hooked))

        assert self._writer is not None  # noqa: S101 - set in on_start
        self._writer.submit(run).add_done_callback(done)
        return transaction.future

    def confirm_connectivity(self) -> None:
        """Record that a client reached the host now (see `ConfirmConnectivity`)."""
        self._on_confirm()

    def set_safe_config(self) -> None:
        """Mark the running configuration safe (persisted; restored after a boot).

        Raises:
            NetworkBusy: a change is in progress; its outcome is not known yet.
        """
        if self._busy is not None:
            raise NetworkBusy(reason="a setupNetworks is in progress")
        self._store.mark_safe()

    def dirty(self) -> bool:
        """Whether the running configuration differs from the safe one (fast)."""
        return self._store.dirty()

    def running_config(self) -> NetConfig:
        """The configuration in force."""
        return self._running

    def capabilities(self) -> CallbackFuture:
        """Return a future of VDSM's network capabilities, read in the namespace."""
        views = _views(self._running)
        dirty = self._store.dirty()
        assert self._reader is not None  # noqa: S101 - set in on_start
        return self._reader.submit(lambda ipr: netinfo.network_caps(ipr, views, dirty=dirty))

    def statistics(self) -> CallbackFuture:
        """Return a future of the network part of Host.getStats, read in the namespace."""
        assert self._reader is not None  # noqa: S101 - set in on_start
        return self._reader.submit(netinfo.interface_stats)

    # -- messages -------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle the transaction's messages and connectivity confirmations."""
        match message:
            case Applied():
                self._on_applied(message)
            case ConnectivityTimeout(txid):
                self._on_timeout(txid)
            case RolledBack(txid, error):
                self._on_rolled_back(txid, error)
            case ConfirmConnectivity():
                self._on_confirm()
            case _:
                return super().on_receive(message)
        return None

    def _on_applied(self, applied: Applied) -> None:
        transaction = self._busy
        if transaction is None or transaction.txid != applied.txid:
            return
        if applied.error is not None or applied.outcome is None:
            self._busy = None
            self._store.clear_pending()  # undone by the transaction itself
            error = applied.error or RuntimeError("no outcome")
            transaction.future.set_exception(exc_info=(type(error), error, None))
            if not isinstance(error, HostvisorError):
                raise error  # a bug: crash; the restarted actor re-reads the kernel and files
            return
        transaction.outcome, transaction.links = applied.outcome, applied.links
        if applied.request is not None:  # what the before_network_setup hook left
            transaction.request = applied.request
        request = transaction.request
        if not request.connectivity_check or self._confirmed_at >= transaction.started:
            self._commit(transaction)
            return
        left = request.connectivity_timeout - (self.clock.monotonic() - transaction.started)
        log.info("setupNetworks applied; waiting %.1f s for connectivity", max(left, 0.0))
        transaction.timer = self.runtime.timers.tell_later(
            left, self.actor_ref, ConnectivityTimeout(transaction.txid)
        )

    def _on_confirm(self) -> None:
        self._confirmed_at = self.clock.monotonic()
        transaction = self._busy
        if transaction is not None and transaction.outcome is not None:
            if transaction.timer is not None:
                transaction.timer.cancel()
            self._commit(transaction)

    def _commit(self, transaction: _Transaction) -> None:
        assert transaction.outcome is not None  # noqa: S101 - only applied ones commit
        self._busy = None
        self._running = transaction.outcome.config
        self._store.write_running(self._running)
        self._store.clear_pending()  # after: in between, the record is seen as committed
        if transaction.request.commit:
            self._store.mark_safe()
        self._sync_children(set(transaction.request.networks), transaction.links or {})
        transaction.future.set(dict(DONE))

    def _on_timeout(self, txid: int) -> None:
        transaction = self._busy
        if transaction is None or transaction.txid != txid or transaction.outcome is None:
            return
        log.warning("no connectivity confirmed in %.1f s: rolling back",
                    transaction.request.connectivity_timeout)  # fmt: skip
        image = transaction.outcome.image
        transaction.outcome = None  # a late confirmation no longer commits
        ref = self.actor_ref

        def done(future: CallbackFuture) -> None:
            try:
                future.get(timeout=0)
            except BaseException as error:  # noqa: BLE001 - handed to the actor's thread
                _tell(ref, RolledBack(txid, error))
            else:
                _tell(ref, RolledBack(txid, None))

        assert self._writer is not None  # noqa: S101 - set in on_start
        self._writer.submit(lambda ipr: apply.undo(ipr, image)).add_done_callback(done)

    def _on_rolled_back(self, txid: int, error: BaseException | None) -> None:
        transaction = self._busy
        if transaction is None or transaction.txid != txid:
            return
        self._busy = None
        self._store.clear_pending()
        timeout = transaction.request.connectivity_timeout
        failure = ConnectivityLost(timeout=timeout, rolled_back=error is None)
        if error is not None:
            log.error("rollback after the connectivity check failed: %s", error)
        transaction.future.set_exception(exc_info=(ConnectivityLost, failure, None))

    # -- the network actors ---------------------------------------------------------------

    def _sync_children(self, names: set[str], links: Mapping[str, LinkState]) -> None:
        """Start, tell or stop the actors of `names` (and of any stale one) to match."""
        running = self._children.running()
        for name in sorted(names | (running - set(self._running.networks))):
            attrs = self._running.networks.get(name)
            try:
                if attrs is None:
                    self._children.stop(name)
                elif name in running:
                    ref = self._children.ref(name)
                    if ref is not None:
                        ref.tell(Reconfigured(attrs, links))
                else:
                    self._children.start(name, attrs, links)
            except (AlreadyExists, NotFound) as error:
                log.warning("network actor %s: %s", name, error)


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    """Tell the configurator an outcome; dropped if it crashed (its successor rolls back)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        log.info("network configurator gone; %s dropped", type(message).__name__)


def _views(config: NetConfig) -> dict[str, NetworkView]:
    return {
        name: NetworkView(
            name=name,
            bridged=attrs.bridged,
            iface=attrs.top(name),
            southbound=attrs.southbound or "",
            vlan=attrs.vlan,
        )
        for name, attrs in config.networks.items()
    }


def _link_states(_ipr: IPRoute) -> dict[str, LinkState]:
    return dump_links()  # in the worker's namespace, as `_ipr`
