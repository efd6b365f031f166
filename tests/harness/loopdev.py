"""A file-backed loop device with an ext4 file system, for mount tests.

    with loop_device(tmp_path / "disk.img") as device:   # "/dev/loopN"
        ...mount it, write, unmount...

The device is attached with `losetup --find --show` and detached at the end by the
name losetup gave, never by scanning for loop devices: other tests and other
engineers' loop devices are left alone.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness.components import need

DEFAULT_SIZE = 32 * 1024 * 1024


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def need_loop_devices() -> None:
    """Skip (fail under CI=true) unless losetup, mkfs.ext4 and /dev/loop-control exist."""
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        need(shutil.which(tool) is not None, f"{tool} is not installed")
    need(Path("/dev/loop-control").exists(), "no /dev/loop-control: loop devices unavailable")


@contextlib.contextmanager
def loop_device(image: Path, size: int = DEFAULT_SIZE) -> Iterator[str]:
    """Attach a fresh ext4 image of `size` bytes at `image`; yield its device path.

    Detaches that device at the end; if the test left it mounted, unmounts it first.
    """
    need_loop_devices()
    with image.open("wb") as file:
        file.truncate(size)
    _run("mkfs.ext4", "-q", "-F", str(image))
    try:
        device = _run("losetup", "--find", "--show", str(image))
    except RuntimeError as error:
        need(False, f"cannot attach a loop device here: {error}")
        raise
    try:
        yield device
    finally:
        for target in _mount_points(device):
            subprocess.run(["umount", "-l", target], check=False, timeout=60)
        _run("losetup", "--detach", device)


def _mount_points(device: str) -> list[str]:
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        if fields[dash + 2] == device:
            targets.append(fields[4].replace("\\040", " "))
    return targets
