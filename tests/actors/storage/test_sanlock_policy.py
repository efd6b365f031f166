"""The host's sanlock policy: `[sanlock] required` and `[sanlock] io_timeout`.

Production hosts (a system libvirt) refuse to lock a shared domain without a sanlock
daemon; embedded test hosts keep the local lock. The I/O timeout is the host's when
set, else the domain's IOOPTIMEOUTSEC. No daemon runs here: a run directory where
nothing listens stands for a host whose sanlock service is down.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.storage import clusterlock
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import DomainClass, DomainType
from hostvisor.supervision.config import is_system_libvirt, load_config

pytestmark = pytest.mark.unit

HOST_ID_FAILURE = 661


@pytest.fixture
def no_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sanlock run directory where no daemon listens."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("SANLOCK_RUN_DIR", str(run))
    return run


@pytest.fixture
def policy() -> Iterator[None]:
    """Give the test the process's policy back as it found it."""
    before = clusterlock.policy()
    try:
        yield
    finally:
        clusterlock.configure(before)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vdsm.conf"
    path.write_text(text)
    return path


# -- the config keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "required"),
    [
        ("", False),  # the embedded default
        ("qemu:///embed?root=/var/lib/x", False),
        ("test:///default", False),
        ("test:///tmp/node.xml", False),
        ("qemu:///session", False),
        ("qemu:///system", True),
        ("qemu+tcp://198.51.100.11/system", True),
    ],
)
def test_auto_requires_sanlock_exactly_on_a_system_libvirt(uri: str, required: bool) -> None:
    assert is_system_libvirt(uri) is required
    config = load_config(libvirt_uri=uri)
    assert config.sanlock_required == "auto"
    assert config.requires_sanlock is required


@pytest.mark.parametrize(
    ("text", "required"),
    [("true", True), ("yes", True), ("1", True), ("false", False), ("off", False)],
)
def test_required_can_be_forced_either_way(tmp_path: Path, text: str, required: bool) -> None:
    path = write_config(tmp_path, f"[sanlock]\nrequired = {text}\n")
    for uri in ("qemu:///system", "test:///default"):
        assert load_config(path, libvirt_uri=uri).requires_sanlock is required


def test_io_timeout_is_vdsms_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[sanlock]\nio_timeout = 20\n")
    assert load_config(path).sanlock_io_timeout == 20
    assert load_config().sanlock_io_timeout is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("required", "maybe"), ("io_timeout", "0"), ("io_timeout", "-3"), ("io_timeout", "ten")],
)
def test_a_bad_value_names_the_key(tmp_path: Path, key: str, value: str) -> None:
    path = write_config(tmp_path, f"[sanlock]\n{key} = {value}\n")
    with pytest.raises(InvalidArgument) as raised:
        load_config(path)
    assert raised.value.context["section"] == "sanlock"
    assert raised.value.context["key"] == key


# -- required: refused without a daemon --------------------------------------------------------


def make(root: Path, domain_type: DomainType) -> FileDomain:
    root.mkdir(exist_ok=True)
    return FileDomain.create(
        root,
        str(uuid.uuid4()),
        name="d",
        domain_type=domain_type,
        domain_class=DomainClass.DATA,
        remote_path=str(root),
    )


@pytest.mark.parametrize("kind", ["NFS", "POSIXFS", "GLUSTERFS"])
def test_required_and_no_daemon_refuses_a_shared_domain_with_a_clear_error(
    no_daemon: Path, policy: None, kind: str
) -> None:
    clusterlock.configure(clusterlock.SanlockPolicy(required=True))
    with pytest.raises(clusterlock.SanlockRequired) as raised:
        clusterlock.uses_sanlock(kind, "sd-1")
    error = raised.value
    assert error.code == HOST_ID_FAILURE
    assert str(no_daemon / "sanlock.sock") in error.context["reason"]
    assert "[sanlock] required" in error.context["reason"]
    assert not clusterlock.uses_sanlock("LOCALFS")  # a local domain never needs sanlock


def test_required_refuses_to_create_a_shared_domain_and_leaves_nothing(
    tmp_path: Path, no_daemon: Path, policy: None
) -> None:
    clusterlock.configure(clusterlock.SanlockPolicy(required=True))
    root = tmp_path / "mnt"
    with pytest.raises(clusterlock.SanlockRequired):
        make(root, DomainType.POSIXFS)
    assert list(root.iterdir()) == []
    assert make(tmp_path / "local", DomainType.LOCALFS).lock_areas() is None


def test_a_shared_domain_made_without_sanlock_is_refused_once_it_is_required(
    tmp_path: Path, no_daemon: Path, policy: None
) -> None:
    domain = make(tmp_path / "mnt", DomainType.POSIXFS)  # not required: a local lock
    assert domain.lock_areas() is None
    clusterlock.configure(clusterlock.SanlockPolicy(required=True))
    with pytest.raises(clusterlock.SanlockRequired):
        domain.lock_areas()
    with pytest.raises(clusterlock.SanlockRequired) as raised:
        clusterlock.refuse_unformatted("POSIXFS", domain.sd_uuid)
    assert "never written" in raised.value.context["reason"]
    clusterlock.refuse_unformatted("LOCALFS", domain.sd_uuid)  # nothing to refuse


def test_not_required_keeps_the_local_lock(tmp_path: Path, no_daemon: Path, policy: None) -> None:
    clusterlock.configure(clusterlock.SanlockPolicy(required=False))
    assert not clusterlock.uses_sanlock("POSIXFS", "sd-2")
    assert make(tmp_path / "mnt", DomainType.POSIXFS).lock_areas() is None


# -- io_timeout ----------------------------------------------------------------------------


def test_the_hosts_io_timeout_is_sanlocks(policy: None) -> None:
    clusterlock.configure(clusterlock.SanlockPolicy(io_timeout=3))
    areas = clusterlock.Areas(sd_uuid="sd", md_dir=Path("/x"), alignment=1, block_size=512)
    assert areas.io_timeout == 3  # for writing the lockspace and for joining it


def test_unset_it_is_vdsms_default(policy: None) -> None:
    clusterlock.configure(clusterlock.SanlockPolicy())
    areas = clusterlock.Areas(sd_uuid="sd", md_dir=Path("/x"), alignment=1, block_size=512)
    assert areas.io_timeout == clusterlock.DEFAULT_IO_TIMEOUT == 10
