import threading

import pytest

from hostvisor.actors.storage import qemuimg
from hostvisor.actors.storage.errors import StorageError, TaskAborted

MiB = 1024 * 1024


def test_create_and_info(tmp_path, qemu_img):
    path = tmp_path / "disk.qcow2"
    qemuimg.create(path, "qcow2", 64 * MiB)
    info = qemuimg.info(path)
    assert isinstance(info, dict)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 * MiB
    assert info["format-specific"]["data"]["compat"] == "1.1"


def test_backing_chain_uses_the_relative_name(tmp_path, qemu_img):
    qemuimg.create(tmp_path / "base", "raw", 8 * MiB)
    qemuimg.create(tmp_path / "top", "qcow2", 8 * MiB, backing="base", backing_fmt="raw")
    chain = qemuimg.info(tmp_path / "top", backing_chain=True)
    assert isinstance(chain, list)
    assert [c["format"] for c in chain] == ["qcow2", "raw"]
    assert chain[0]["backing-filename"] == "base"


def test_preallocation_allocates(tmp_path, qemu_img):
    path = tmp_path / "disk"
    qemuimg.create(path, "raw", 16 * MiB, preallocation="falloc")
    assert path.stat().st_blocks * 512 >= 16 * MiB


def test_resize(tmp_path, qemu_img):
    path = tmp_path / "disk"
    qemuimg.create(path, "qcow2", 8 * MiB)
    qemuimg.resize(path, 32 * MiB, "qcow2")
    info = qemuimg.info(path)
    assert isinstance(info, dict)
    assert info["virtual-size"] == 32 * MiB


def test_failure_carries_command_code_and_stderr(tmp_path, qemu_img):
    with pytest.raises(qemuimg.QemuImgError) as caught:
        qemuimg.info(tmp_path / "missing")
    error = caught.value
    assert isinstance(error, StorageError)
    assert error.code == 200
    assert error.context["rc"] == 1
    assert "missing" in error.context["command"]
    assert "No such file" in error.context["stderr"]


def test_convert_reports_progress_up_to_one(tmp_path, qemu_img):
    src = tmp_path / "src"
    src.write_bytes(b"\x5a" * (32 * MiB))
    seen: list[float] = []
    qemuimg.convert(src, tmp_path / "dst", src_fmt="raw", dst_fmt="qcow2", progress=seen.append)
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert len(seen) > 2
    assert all(0.0 <= f <= 1.0 for f in seen)
    info = qemuimg.info(tmp_path / "dst")
    assert isinstance(info, dict)
    assert info["virtual-size"] == 32 * MiB


def test_convert_aborts_by_terminating_its_process(tmp_path, qemu_img):
    src = tmp_path / "src"
    src.write_bytes(b"\x5a" * (256 * MiB))
    abort = threading.Event()

    def on_progress(fraction: float) -> None:
        if fraction > 0.0:
            abort.set()  # abort as soon as copying is under way

    with pytest.raises(TaskAborted) as caught:
        qemuimg.convert(
            src, tmp_path / "dst", src_fmt="raw", dst_fmt="raw", progress=on_progress, abort=abort
        )
    assert caught.value.code == 411
