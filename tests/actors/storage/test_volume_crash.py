"""A volume creation killed with SIGKILL never leaves a LEGAL volume with partial data.

The creation runs in a child process that stops inside its own progress callback,
at a chosen point of the data writing, and tells the test where it is; the test
then kills it with SIGKILL by its pid. No sleeps: the test waits on the child's
report, which comes after the `.meta` exists.
"""

import os
import signal
import subprocess
import sys
import uuid

import pytest

from hostvisor.actors.storage.filedomain import FileDomain

MiB = 1024 * 1024
SIZE = 1024 * MiB  # preallocated in 64 MiB steps: 16 progress reports

_CREATOR = """
import sys
from pathlib import Path
from hostvisor.actors.storage.filedomain import FileDomain
from hostvisor.actors.storage.model import Preallocation, VolumeFormat

path, img, vol, stop_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

def progress(fraction):
    if fraction >= stop_at:
        print(fraction, flush=True)
        sys.stdin.read()  # wait here until killed

FileDomain(Path(path)).create_volume(
    img, vol, size=int(sys.argv[5]), fmt=VolumeFormat.RAW,
    prealloc=Preallocation.PREALLOCATED, progress=progress,
)
print("done", flush=True)
"""


def _kill_creation_at(domain: FileDomain, stop_at: float) -> tuple[str, str, float]:
    img, vol = str(uuid.uuid4()), str(uuid.uuid4())
    with subprocess.Popen(
        [sys.executable, "-c", _CREATOR, str(domain.path), img, vol, str(stop_at), str(SIZE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        report = child.stdout.readline().strip()
        assert report != "done", "the creation finished before the kill point"
        meta = domain.volume_path(img, vol).with_name(f"{vol}.meta")
        assert "LEGALITY=ILLEGAL" in meta.read_text()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return img, vol, float(report)


@pytest.mark.parametrize("stop_at", [0.0, 0.3, 0.7, 1.0])
def test_killed_creation_leaves_an_illegal_volume(domain, stop_at):
    img, vol, reached = _kill_creation_at(domain, stop_at)
    assert reached >= stop_at

    reopened = FileDomain.find([domain.path.parent], domain.sd_uuid)
    info = reopened.volume_info(img, vol)
    assert info["legality"] == "ILLEGAL"
    assert info["status"] == "ILLEGAL"
    assert reopened.illegal_volumes() == [(img, vol)]
    allocated = int(info["truesize"])
    if stop_at < 1.0:
        assert allocated < SIZE, "the kill really came before the data was complete"
    # The torn volume can be deleted and created again under the same ids.
    reopened.delete_volume(img, vol)
    assert reopened.illegal_volumes() == []


def test_without_a_kill_the_same_creation_is_legal(domain):
    img, vol = str(uuid.uuid4()), str(uuid.uuid4())
    result = subprocess.run(
        [sys.executable, "-c", _CREATOR, str(domain.path), img, vol, "2.0", str(SIZE)],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.stdout.strip() == "done"
    info = domain.volume_info(img, vol)
    assert info["legality"] == "LEGAL"
    assert int(info["truesize"]) >= SIZE
    assert domain.illegal_volumes() == []
