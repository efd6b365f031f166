"""The VM board keeps the last entry of a VM whose actor is down, until the VM is gone.

A VM's actor tells `Forget` when it stops or crashes, but its guest runs on: the entry
becomes an orphan, still rendered with its last status, until the VM's actor posts
again, `VM.destroy` drops it, or a recovery settles the board without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from hostvisor.actors.actor import call
from hostvisor.actors.guest.board import Drop, Forget, Post, PostMany, Settle, VmBoard
from hostvisor.actors.guest.entry import VmEntry
from hostvisor.actors.guest.status import VmStatus

pytestmark = pytest.mark.unit


@pytest.fixture
def board() -> Iterator[pykka.ActorRef[Any]]:
    ref = VmBoard.start()
    yield ref
    ref.stop()


def entry(vm_id: str, status: VmStatus = VmStatus.UP) -> VmEntry:
    return VmEntry(vm_id=vm_id, status=status, status_time=1, info={})


def listed(board: pykka.ActorRef[Any], *vm_ids: str) -> dict[str, str]:
    rendered = call(board, "render", "brief", list(vm_ids)).get(timeout=5)
    return {answer["vmId"]: answer["status"] for answer in rendered.answers}


def test_a_forgotten_entry_is_listed_with_its_last_status_until_dropped(
    board: pykka.ActorRef[Any],
):
    board.tell(Post(entry("a")))
    board.tell(Post(entry("b", VmStatus.PAUSED)))
    board.tell(Forget("b"))  # b's actor crashed; its guest runs on
    assert listed(board, "a") == {"a": "Up", "b": "Paused"}
    assert listed(board, "a", "b") == {"a": "Up", "b": "Paused"}
    assert call(board, "orphans").get(timeout=5) == frozenset({"b"})
    board.tell(Post(entry("b")))  # its restarted actor posts again
    assert call(board, "orphans").get(timeout=5) == frozenset()
    assert listed(board, "a", "b") == {"a": "Up", "b": "Up"}
    board.tell(Forget("b"))
    board.tell(Drop("b"))  # VM.destroy: gone for good
    assert listed(board, "a") == {"a": "Up"}
    assert call(board, "size").get(timeout=5) == 1


def test_a_recovery_supersedes_orphans_and_settles_the_rest(board: pykka.ActorRef[Any]):
    for vm_id in "abc":
        board.tell(Post(entry(vm_id)))
        board.tell(Forget(vm_id))  # the branch restarted: every actor stopped
    board.tell(PostMany((entry("a", VmStatus.PAUSED),)))  # adopted again, as it is now
    board.tell(Settle(frozenset({"a", "b"})))  # b is held (restarting); c is gone
    assert listed(board, "a") == {"a": "Paused", "b": "Up"}
    assert call(board, "orphans").get(timeout=5) == frozenset({"b"})
