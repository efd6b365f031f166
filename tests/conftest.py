"""Fixtures shared by every test: no actor outlives its test, and CI never skips."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from harness.components import need
from hostvisor.actors.actor import link_of
from hostvisor.actors.runtime import Runtime


@pytest.fixture(autouse=True)
def _stop_actors_left_behind() -> Iterator[None]:
    """Stop every pykka actor a test started and left running.

    Actors of wider-scoped fixtures (a module's host) were alive before the test
    and are left alone.
    """
    alive = pykka.ActorRegistry.get_all()
    before = {ref.actor_urn for ref in alive}
    # A wider fixture's tree keeps starting actors (restarts, new domains, new VMs):
    # those belong to its tree, whose runtime was there before the test.
    trees = {id(runtime) for ref in alive if (runtime := _tree_runtime(ref)) is not None}
    yield
    for ref in reversed(pykka.ActorRegistry.get_all()):
        if ref.actor_urn in before:
            continue
        runtime = _tree_runtime(ref)
        if runtime is not None and id(runtime) in trees:
            continue
        ref.stop(block=False)


def _tree_runtime(ref: pykka.ActorRef[Any]) -> object | None:
    """The runtime of the tree `ref` belongs to; None for the process default's actors."""
    link = link_of(ref)
    runtime = None if link is None else link.runtime
    return None if runtime is None or runtime is Runtime.default() else runtime


@pytest.fixture(autouse=True)
def _debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hostvisor")


# -- libvirt ------------------------------------------------------------------------------

log = logging.getLogger("hostvisor.tests")


def _libvirt() -> object:
    try:
        import libvirt  # noqa: PLC0415 - optional at collection time outside CI
    except ImportError as error:
        need(False, f"libvirt-python is not importable: {error}")
    return libvirt


@pytest.fixture(scope="session")
def accelerator() -> object:
    """KVM when /dev/kvm opens, TCG otherwise; the test log says which ran."""
    from hostvisor.actors.hypervisor.connection import detect_accelerator  # noqa: PLC0415

    chosen = detect_accelerator()
    log.warning(
        "guests run with %s", "KVM" if chosen.value == "kvm" else "TCG (no usable /dev/kvm)"
    )
    return chosen


@pytest.fixture(scope="session")
def embed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded-QEMU root of this test process.

    libvirt binds its embedded QEMU driver to the first root a process opens and
    refuses any other root until the process exits (checked with libvirt 9.0), so
    every in-process test that uses `qemu:///embed` shares this root. Reopening
    the same root after closing it works.
    """
    _libvirt()
    from hostvisor.actors.hypervisor.connection import prepare_embed_root  # noqa: PLC0415

    need(Path("/usr/bin/qemu-system-x86_64").exists(), "qemu-system-x86 is not installed")
    root = short_directory(tmp_path_factory, "embed")
    prepare_embed_root(root)
    return root


def short_directory(factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh directory with a short path, removed at the end of the session.

    QEMU's monitor sockets live under the embed root and a UNIX socket path has at
    most 107 bytes; pytest's own temporary paths grow past that.
    """
    path = Path(tempfile.mkdtemp(prefix=f"hv-{name}-", dir="/tmp"))
    _short_dirs.append(path)
    factory.getbasetemp()  # keep pytest's own temp handling initialised
    return path


_short_dirs: list[Path] = []


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh directory with a short path (see `short_directory`), removed afterwards."""
    path = short_directory(tmp_path_factory, "t")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pytest_sessionfinish() -> None:
    """Remove the short directories of the session."""
    for path in _short_dirs:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def qemu_embed(embed_root: Path, accelerator: object) -> Iterator[object]:
    """An open `qemu:///embed` connection on this process's embed root.

    Every domain still defined when the test ends is destroyed and undefined.
    """
    from hostvisor.actors.hypervisor.connection import embed_uri, open_connection  # noqa: PLC0415

    conn = open_connection(embed_uri(embed_root))
    try:
        yield conn
    finally:
        for domain in conn.listAllDomains():
            persistent = domain.isPersistent()  # a transient domain vanishes on destroy
            if domain.isActive():
                domain.destroy()
            if persistent:
                domain.undefine()
        conn.close()


@pytest.fixture
def libvirt_test() -> Iterator[object]:
    """A connection to libvirt's in-memory test driver (`test:///default`); not a hypervisor."""
    _libvirt()
    from hostvisor.actors.hypervisor.connection import open_connection  # noqa: PLC0415

    conn = open_connection("test:///default")
    try:
        yield conn
    finally:
        conn.close()
