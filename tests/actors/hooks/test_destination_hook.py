"""before_vm_migrate_destination on a VM actor made to receive a guest (VM.migrationCreate).

The VM actor is started "incoming", as VM.migrationCreate starts it, on this process's
embedded libvirt; no guest ever arrives (none is sent). `incoming_ready()` is what
VM.migrationCreate awaits before answering the source: it settles once the hook ran,
and fails with code 78 when the hook failed (VDSM: "Destination hook failed").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.guests import domain_xml
from hostvisor.actors.actor import Link, call
from hostvisor.actors.hooks import HookFailed, Hooks
from hostvisor.actors.hypervisor.connection import embed_uri, open_connection
from hostvisor.actors.runtime import Runtime
from hostvisor.actors.vm import domxml
from hostvisor.actors.vm.actor import VmActor, VmServices

pytestmark = [pytest.mark.libvirt]

HOOK_ERROR, MIGRATION_FAILED = 78, 8


def script(hooks_dir: Path, point: str, name: str, body: str) -> None:
    directory = hooks_dir / point
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def incoming(embed_root: Path, tmp_path: Path) -> Iterator[Any]:
    """`incoming(hooks_dir)`: a VM actor awaiting a migrating guest; stopped afterwards."""
    conn = open_connection(embed_uri(embed_root))
    refs: list[pykka.ActorRef[Any]] = []

    def make(hooks_dir: Path) -> pykka.ActorRef[Any]:
        vm_id = str(uuid.uuid4())
        xml = domain_xml(
            name="arriving", uuid=vm_id, disk=tmp_path / "never.qcow2", domain_type="kvm",
            ovirt_metadata=True,
        )  # fmt: skip
        services = VmServices(
            connection=lambda: conn, publish=lambda _e: None, hooks=Hooks(directory=hooks_dir)
        )
        link = Link(path=f"vms/guests/{vm_id}", runtime=Runtime.make())
        ref = VmActor.spawn(link, spec=domxml.parse(xml), services=services, incoming=True)
        link.started.get(timeout=10)
        refs.append(ref)
        return ref

    yield make
    for ref in refs:
        ref.stop()
    conn.close()


def test_a_failing_destination_hook_refuses_the_guest(incoming: Any, tmp_path: Path):
    hooks_dir = tmp_path / "hooks"
    seen = tmp_path / "seen"
    script(hooks_dir, "before_vm_migrate_destination", "10_refuse",
           f'echo "$vmId" > {seen}; echo "not on this host" >&2; exit 1')  # fmt: skip
    vm = incoming(hooks_dir)

    ready = call(vm, "incoming_ready").get(timeout=10)
    with pytest.raises(HookFailed) as raised:
        ready.get(timeout=30)

    assert raised.value.code == HOOK_ERROR
    assert "not on this host" in str(raised.value)
    stats = call(vm, "stats").get(timeout=10)
    assert stats["status"] == "Down"
    assert stats["exitReason"] == MIGRATION_FAILED
    assert stats["exitMessage"].startswith("Destination hook failed: Hook error")
    assert seen.read_text().strip() == stats["vmId"]


def test_a_passing_destination_hook_keeps_it_waiting_for_the_guest(incoming: Any, tmp_path: Path):
    hooks_dir = tmp_path / "hooks"
    script(hooks_dir, "before_vm_migrate_destination", "10_ok", "exit 0")
    vm = incoming(hooks_dir)

    assert call(vm, "incoming_ready").get(timeout=10).get(timeout=30) is None
    assert call(vm, "stats").get(timeout=10)["status"] == "Migration Destination"
