"""`hostvisor collect-logs`: everything support needs about this host, in one archive.

    hostvisor collect-logs [--config FILE] [--since 2h|"2026-12-07 01:00"] [-o FILE]
                           [--directory DIR] [--no-progress]

Gathers the parts listed in `hostvisor.api.tools.gather.PARTS` — the agent's logs,
its configuration, the supervision snapshot (admin socket), capabilities, stats,
every VM's live XML, docker inspect of container VMs, network state, storage
connections and domain metadata, libvirt's QEMU logs of those VMs — into a staging
directory, masks every secret it knows of (`hostvisor.api.tools.redact`), and writes
one `tar.xz` (or `tar.gz`, by the output's suffix) with `MANIFEST.json` at its top:
one entry per part with its status (`ok`, `failed`, `skipped`), the reason and the
files it wrote. A failed part never stops the others. `--directory` writes the same
tree into a directory instead (the sos plugin uses it).

Exit status: 0 when the archive was written (even with failed parts: the manifest
says which), 2 for bad options or configuration, 1 when nothing could be written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hostvisor.actors.errors import InvalidArgument
from hostvisor.api.tools import gather
from hostvisor.api.tools.archive import Progress, Staging
from hostvisor.api.tools.redact import Redactor
from hostvisor.supervision.config import Config, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
MANIFEST = "MANIFEST.json"
DEFAULT_CONFIG = Path("/etc/vdsm/vdsm.conf")
"""The agent's configuration on a host `vdsm-tool configure` set up."""
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`2h`, `30m`, `1d`, `90s` before now, or an ISO date/time; as local naive time.

    Raises:
        ValueError: neither form.
    """
    now = now or dt.datetime.now()  # noqa: DTZ005 - log lines carry local naive times
    match = _RELATIVE.match(text.strip())
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    when = dt.datetime.fromisoformat(text.strip())
    return when.astimezone().replace(tzinfo=None) if when.tzinfo else when


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `hostvisor collect-logs`."""
    parser.add_argument(
        "--config", type=Path, help=f"the agent's INI file (default: {DEFAULT_CONFIG} if present)"
    )
    parser.add_argument("--state-dir", type=Path, help="override the agent's state directory")
    parser.add_argument("--since", help="only log lines since: 2h, 30m, 1d, or an ISO time")
    parser.add_argument("-o", "--output", type=Path, help="the archive (.tar.xz or .tar.gz)")
    parser.add_argument("--directory", type=Path, help="write a directory tree, not an archive")
    parser.add_argument("--socket", type=Path, help="the admin socket (default: in the state dir)")
    parser.add_argument("--no-progress", action="store_true", help="plain lines, never a bar")


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What `collect` did: where it wrote, and each part's status."""

    written: Path
    parts: list[dict[str, Any]]

    def status(self, part: str) -> str:
        """One part's status."""
        return str(next(entry["status"] for entry in self.parts if entry["part"] == part))


def collect(  # noqa: PLR0913 - the command's options, keyword-only
    config: Config,
    *,
    config_path: Path | None = None,
    since: dt.datetime | None = None,
    output: Path | None = None,
    directory: Path | None = None,
    admin_socket: Path | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Gather every part and write the archive (or `directory`); return what it did.

    Blocks the caller's thread for as long as the parts take (each API call at most
    `gather.API_TIMEOUT`). Raises OSError only when the result cannot be written.
    """
    redactor = Redactor()
    for key in (config.key_file, config.key_file.with_name("cakey.pem")):
        redactor.learn_key_file(key)
    progress = progress or Progress(len(gather.PARTS), bar=False)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    top = f"hostvisor-logs-{socket.gethostname()}-{stamp}"
    with Staging(redactor) as staging:
        ctx = gather.Context(
            config=config,
            config_path=config_path,
            staging=staging,
            redactor=redactor,
            since=since,
            admin_socket=admin_socket,
        )
        entries = []
        try:
            for name, part in gather.PARTS:
                before = set(staging.files())
                progress.start(name)
                status, detail, seconds = gather.timed(part, ctx)
                progress.end(name, status, seconds, detail)
                entries.append(
                    {
                        "part": name,
                        "status": status,
                        "detail": detail,
                        "seconds": round(seconds, 3),
                        "files": sorted(set(staging.files()) - before),
                    }
                )
        finally:
            ctx.close()
            progress.close()
        manifest = {"host": socket.gethostname(), "created": stamp, "parts": entries}
        staging.write_text(MANIFEST, json.dumps(manifest, indent=2) + "\n")
        staging.redact_all()
        if directory is not None:
            staging.to_directory(directory)
            written = directory
        else:
            written = output or Path(f"{top}.tar.xz")
            staging.to_archive(written, top)
    return Outcome(written=written, parts=entries)


def main(args: argparse.Namespace, stdout: IO[str] | None = None) -> int:
    """Run `hostvisor collect-logs` with parsed `args`; return the exit status."""
    out = stdout or sys.stdout
    if args.config is None and DEFAULT_CONFIG.exists():
        args.config = DEFAULT_CONFIG
    try:
        config = load_config(args.config, state_dir=args.state_dir)
        since = parse_since(args.since) if args.since else None
    except (InvalidArgument, ValueError) as error:
        print(f"hostvisor collect-logs: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    progress = Progress(len(gather.PARTS), bar=False if args.no_progress else None)
    try:
        outcome = collect(
            config,
            config_path=args.config,
            since=since,
            output=args.output,
            directory=args.directory,
            admin_socket=args.socket,
            progress=progress,
        )
    except OSError as error:
        print(f"hostvisor collect-logs: cannot write: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILED
    failed = [entry["part"] for entry in outcome.parts if entry["status"] == "failed"]
    note = f" ({len(failed)} part(s) failed: {', '.join(failed)})" if failed else ""
    print(f"wrote {outcome.written}{note}", file=out)
    return EXIT_OK
