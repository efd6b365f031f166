"""Run `qemu-img` (Debian `qemu-utils`) and turn its failures into storage errors.

Each function blocks until qemu-img exits: call them from a worker thread. A failed
run raises `QemuImgError` carrying the command, the exit code and qemu-img's
stderr. `convert` reports progress and can be aborted: it stops the process it
started (by its own handle, never by name) and raises `TaskAborted`.
"""

from __future__ import annotations

import json
import re
import selectors
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from hostvisor.actors.storage.errors import StorageError, TaskAborted

QEMU_IMG = "qemu-img"

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_POLL_SECONDS = 0.1
_TERMINATE_GRACE_SECONDS = 5.0


class QemuImgError(StorageError):
    """qemu-img exited with an error; the context holds the command, code and stderr."""

    message = "qemu-img failed"


def create(
    path: Path | str,
    fmt: str,
    size: int,
    *,
    backing: str | None = None,
    backing_fmt: str | None = None,
    preallocation: str | None = None,
) -> None:
    """Create an image of `size` bytes (`qemu-img create`).

    `backing` is stored in the image as given: pass a name relative to the new
    image's directory so the chain survives another mount path. qcow2 images are
    made with compat 1.1.

    Raises:
        QemuImgError: qemu-img failed (the path exists as a directory, no space...).
    """
    options: list[str] = []
    if fmt == "qcow2":
        options.append("compat=1.1")
    if preallocation is not None:
        options.append(f"preallocation={preallocation}")
    command = [QEMU_IMG, "create", "-q", "-f", fmt]
    if options:
        command += ["-o", ",".join(options)]
    if backing is not None:
        command += ["-b", backing]
        if backing_fmt is not None:
            command += ["-F", backing_fmt]
    command += [str(path), str(size)]
    _run(command)


def info(path: Path | str, *, backing_chain: bool = False) -> dict[str, Any] | list[dict[str, Any]]:
    """qemu-img's JSON view of an image; a list, top first, with `backing_chain`.

    Runs with `-U` (no image lock), so it also works on an image a VM has open.

    Raises:
        QemuImgError: the file is missing or not an image qemu-img can open.
    """
    command = [QEMU_IMG, "info", "--output", "json", "-U"]
    if backing_chain:
        command.append("--backing-chain")
    command.append(str(path))
    output = _run(command)
    return cast("dict[str, Any] | list[dict[str, Any]]", json.loads(output))


def resize(path: Path | str, size: int, fmt: str) -> None:
    """Grow (or shrink, for raw) the image's virtual size to `size` bytes.

    Raises:
        QemuImgError: qemu-img refused (shrinking a qcow2, a missing file...).
    """
    _run([QEMU_IMG, "resize", "-q", "-f", fmt, str(path), str(size)])


def convert(  # noqa: PLR0913 - qemu-img's own parameters, all keyword-only
    src: Path | str,
    dst: Path | str,
    *,
    src_fmt: str,
    dst_fmt: str,
    preallocation: str | None = None,
    backing: str | None = None,
    backing_fmt: str | None = None,
    existing: bool = False,
    progress: Callable[[float], None] | None = None,
    abort: threading.Event | None = None,
) -> None:
    """Copy `src` into the image `dst` (`qemu-img convert -p`), reporting progress.

    `dst` is made anew (truncated if it exists: same inode, same mode) unless
    `existing`, which writes into the image already there (`-n`). With
    `backing` (a file name relative to `dst`'s directory) the target gets that
    backing file and only what `src`'s top layer holds is copied (`-B`): one
    layer of a chain whose parent was copied before it.

    `progress` is called on this thread with fractions from 0.0 to 1.0 as
    qemu-img prints them. When `abort` is set the qemu-img process is terminated
    (killed if it does not exit within a few seconds) and TaskAborted is raised;
    `dst` is left as qemu-img left it.

    Raises:
        QemuImgError: qemu-img failed.
        TaskAborted: `abort` was set before qemu-img finished.
    """
    command = [QEMU_IMG, "convert", "-p", "-f", src_fmt, "-O", dst_fmt]
    options = ["compat=1.1"] if dst_fmt == "qcow2" and not existing else []
    if preallocation is not None and not existing:
        options.append(f"preallocation={preallocation}")
    if options:
        command += ["-o", ",".join(options)]
    if existing:
        command.append("-n")
    if backing is not None:
        command += ["-B", backing]
        if backing_fmt is not None:
            command += ["-F", backing_fmt]
    command += [str(src), str(dst)]
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        stderr = _follow(process, progress, abort)
        code = process.wait()
        if abort is not None and abort.is_set() and code != 0:
            raise TaskAborted(command=" ".join(command))
    if code != 0:
        raise QemuImgError(command=" ".join(command), rc=code, stderr=stderr)
    if progress is not None:
        progress(1.0)


def measure(
    path: Path | str,
    *,
    fmt: str,
    out_fmt: str,
    backing: bool = True,
    base: tuple[str, str] | None = None,
) -> dict[str, int]:
    """`qemu-img measure`: {"required", "fully-allocated"} bytes to copy `path` as `out_fmt`.

    Runs with `--force-share`, so it also works on an image a VM has open. With
    `backing` False only this layer is measured; with `base` (the backing file's
    path and format) only this layer and that one (VDSM's sub-chain).

    Raises:
        QemuImgError: qemu-img failed (a missing file, a bad format...).
    """
    node: dict[str, Any] = {"driver": fmt, "file": {"driver": "file", "filename": str(path)}}
    if fmt == "qcow2" and not backing:
        node["backing"] = None
    elif fmt == "qcow2" and base is not None:
        base_node: dict[str, Any] = {
            "driver": base[1],
            "file": {"driver": "file", "filename": base[0]},
        }
        if base[1] == "qcow2":
            base_node["backing"] = None
        node["backing"] = base_node
    command = [QEMU_IMG, "measure", "--output", "json", "--force-share", "-O", out_fmt]
    command.append(f"json:{json.dumps(node)}")
    answer = json.loads(_run(command))
    return {key: int(answer[key]) for key in ("required", "fully-allocated")}


def amend(path: Path | str, *, compat: str) -> None:
    """Change a qcow2 image's compat level in place (`qemu-img amend`).

    Raises:
        QemuImgError: qemu-img refused (a downgrade the image's features forbid...).
    """
    _run([QEMU_IMG, "amend", "-f", "qcow2", "-o", f"compat={compat}", str(path)])


def _follow(
    process: subprocess.Popen[bytes],
    progress: Callable[[float], None] | None,
    abort: threading.Event | None,
) -> str:
    """Read qemu-img's progress (stdout) and errors (stderr) until both close."""
    assert process.stdout is not None  # noqa: S101 - Popen was given PIPE
    assert process.stderr is not None  # noqa: S101
    errors = bytearray()
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, "out")
        selector.register(process.stderr, selectors.EVENT_READ, "err")
        while selector.get_map():
            if abort is not None and abort.is_set():
                _stop(process)
                break
            for key, _ in selector.select(timeout=_POLL_SECONDS):
                chunk = key.fileobj.read1(65536)  # type: ignore[union-attr]
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.data == "err":
                    errors += chunk
                else:
                    pending = _report(pending + chunk, progress)
    return errors.decode("utf-8", errors="replace").strip()


def _report(buffer: bytes, progress: Callable[[float], None] | None) -> bytes:
    """Report every complete progress record in `buffer`; return the incomplete rest."""
    *records, rest = re.split(rb"[\r\n]", buffer)
    for record in records:
        match = _PROGRESS.search(record)
        if match and progress is not None:
            progress(min(float(match.group(1)) / 100.0, 1.0))
    return rest


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process this module started, then kill it if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=_TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run(command: Sequence[str]) -> str:
    """Run a short qemu-img command; return its stdout or raise QemuImgError."""
    result = subprocess.run(command, capture_output=True, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise QemuImgError(
            command=" ".join(command),
            rc=result.returncode,
            stderr=result.stderr.decode("utf-8", errors="replace").strip(),
        )
    return result.stdout.decode("utf-8")
