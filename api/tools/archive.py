"""Where collected parts go: a staging directory, then one archive or a plain tree.

`Staging` holds what the parts gather (files under the part's name) in a temporary
directory. `finish` redacts every file with what the `Redactor` learned by then
(secrets found late, say a VNC ticket in the last VM's XML, are still scrubbed from
logs gathered first) and writes either a `tar.xz`/`tar.gz` archive or a directory
(`--directory`, for sos). Files are streamed line by line: a large log never sits in
memory whole.

`Progress` tells the operator how far it got: a bar on a terminal (rich, which
textual brings), one plain line per part otherwise (a pipe, sos, a test).

Everything here runs on the caller's thread and blocks on file I/O.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from hostvisor.api.tools.redact import Redactor


def gzipped(path: Path) -> bool:
    """Whether `path` names a gzip archive (.tar.gz, .tgz); anything else is written as xz."""
    return path.name.endswith((".tar.gz", ".tgz"))


class Staging:
    """A temporary directory the parts write into; removed by `close`."""

    def __init__(self, redactor: Redactor) -> None:
        """Make the directory (mode 0700: what it holds is not yet redacted)."""
        self.redactor = redactor
        self.root = Path(tempfile.mkdtemp(prefix="hostvisor-collect-"))

    def path(self, name: str) -> Path:
        """Where the file `name` (a relative path such as `vms/ID.xml`) is staged."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_text(self, name: str, text: str) -> str:
        """Stage `text` as `name`; return `name`."""
        self.path(name).write_text(text, encoding="utf-8")
        return name

    def files(self) -> list[str]:
        """Every staged file, as sorted relative paths."""
        return sorted(
            str(path.relative_to(self.root)) for path in self.root.rglob("*") if path.is_file()
        )

    def redact_all(self) -> None:
        """Rewrite every staged file with secrets masked (in place, line by line)."""
        for name in self.files():
            source = self.root / name
            redacted = source.with_name(source.name + ".redacted")
            with (
                source.open(encoding="utf-8", errors="replace") as reader,
                redacted.open("w", encoding="utf-8") as writer,
            ):
                _redact_stream(self.redactor, reader, writer)
            redacted.replace(source)

    def to_archive(self, output: Path, top: str) -> None:
        """Write the staged files as `output` (tar.xz or tar.gz, mode 0600), under `top`/."""
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        partial.touch(mode=0o600)
        partial.chmod(0o600)  # logs stay private even with their secrets masked
        if gzipped(output):
            with tarfile.open(partial, "w:gz") as tar:
                self._add(tar, top)
        else:
            with tarfile.open(partial, "w:xz") as tar:
                self._add(tar, top)
        partial.replace(output)

    def _add(self, tar: tarfile.TarFile, top: str) -> None:
        for name in self.files():
            tar.add(self.root / name, arcname=f"{top}/{name}", recursive=False)

    def to_directory(self, directory: Path) -> None:
        """Copy the staged files into `directory` (made if missing)."""
        for name in self.files():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / name, target)

    def close(self) -> None:
        """Remove the staging directory (idempotent)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        """Use the staging area in a `with` block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Remove the staging directory."""
        self.close()


def _redact_stream(redactor: Redactor, reader: IO[str], writer: IO[str]) -> None:
    """Copy reader to writer, masking secrets; a PEM block is masked as a whole."""
    block: list[str] = []
    for line in reader:
        if block or "-----BEGIN" in line:
            block.append(line)
            if "-----END" in line or len(block) > 200:  # noqa: PLR2004 - a key is < 60 lines
                writer.write(redactor.text("".join(block)))
                block = []
            continue
        writer.write(redactor.text(line))
    if block:
        writer.write(redactor.text("".join(block)))


class Progress:
    """Reports each part as it starts and ends: a bar on a terminal, lines otherwise."""

    def __init__(
        self, total: int, *, stream: IO[str] | None = None, bar: bool | None = None
    ) -> None:
        """Prepare for `total` parts; `bar` None: a bar when `stream` is a terminal."""
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        use_bar = self.stream.isatty() if bar is None else bar
        self._bar: Any = None
        self._task: Any = None
        if use_bar:
            from rich.console import Console  # noqa: PLC0415 - only on a terminal
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn  # noqa: PLC0415
            from rich.progress import Progress as Bar  # noqa: PLC0415

            self._bar = Bar(
                TextColumn("{task.description:<24}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("collecting", total=total)

    def start(self, name: str) -> None:
        """A part starts."""
        if self._bar is not None:
            self._bar.update(self._task, description=name)

    def end(self, name: str, status: str, seconds: float, detail: str = "") -> None:
        """A part ended with `status` (ok, failed, skipped)."""
        self.done += 1
        line = f"[{self.done}/{self.total}] {name}: {status} ({seconds:.1f} s)"
        if detail:
            line += f": {detail}"
        if self._bar is not None:
            self._bar.console.print(line)
            self._bar.update(self._task, advance=1)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the bar (no-op without one)."""
        if self._bar is not None:
            self._bar.stop()
