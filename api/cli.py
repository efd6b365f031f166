"""The `hostvisor` command."""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import sys
from collections.abc import Sequence
from pathlib import Path

from hostvisor.actors.errors import InvalidArgument
from hostvisor.api import malloc
from hostvisor.api.admin import logs
from hostvisor.api.admin.logs import LOG_FORMAT as LOG_FORMAT  # noqa: PLC0414 - re-export
from hostvisor.api.embedded import offline_verb_table
from hostvisor.api.server import check_config, serve
from hostvisor.api.tools.collect import add_arguments as collect_arguments
from hostvisor.api.tools.collect import main as collect_main
from hostvisor.supervision.config import load_config

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `hostvisor`."""
    parser = argparse.ArgumentParser(prog="hostvisor", description="Hostvisor host agent")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the agent in the foreground")
    run.add_argument("--config", type=Path, help="INI file in vdsm.conf style (default: none)")
    run.add_argument("--state-dir", type=Path, help="override the state directory")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    commands.add_parser("schema", help="print the API schema (every verb) as JSON")
    console = commands.add_parser("console", help="the live actor console (admin socket)")
    console.add_argument("--config", type=Path, help="the agent's INI file (for its state dir)")
    console.add_argument("--state-dir", type=Path, help="the agent's state directory")
    console.add_argument("--socket", type=Path, help="the admin socket (default: in the state dir)")
    console.add_argument("--once", action="store_true", help="print one snapshot and exit")
    console.add_argument("--json", action="store_true", help="with --once: as JSON")
    console.add_argument("--interval", type=float, default=1.0, help="refresh period (s)")
    collect = commands.add_parser("collect-logs", help="write one archive of logs and state")
    collect_arguments(collect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `hostvisor`; return the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        schema = offline_verb_table().schema()
        print(json.dumps(schema, indent=4, sort_keys=True, default=str))  # noqa: T201
        return 0
    if args.command == "console":
        return console_main(args)
    if args.command == "collect-logs":
        return collect_main(args)
    try:
        level = args.log_level.upper() if args.log_level else None
        config = load_config(args.config, state_dir=args.state_dir, log_level=level)
        check_config(config)  # before logging and the tree: a bad config exits 2 at once
    except InvalidArgument as error:
        print(f"hostvisor: bad configuration: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    logs.install()
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT, stream=sys.stderr)
    if config.log_file is not None:
        log_to_file(config.log_file, config.log_level)
    malloc.tune()  # before the tree's threads: freed memory goes back to the kernel
    return serve(config)


def log_to_file(path: Path, level: str) -> None:
    """Also log to `path` (VDSM's vdsm.log), reopened when logrotate moves it (main thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(level)
    logging.getLogger().addHandler(handler)


def console_main(args: argparse.Namespace) -> int:
    """Run `hostvisor console`: the TUI, or with `--once` one snapshot on stdout."""
    from hostvisor.api.admin.channel import socket_path  # noqa: PLC0415 - only this command
    from hostvisor.api.admin.client import AdminClient, AdminError  # noqa: PLC0415

    path = args.socket
    if path is None:
        try:
            config = load_config(args.config, state_dir=args.state_dir)
        except InvalidArgument as error:
            print(f"hostvisor: bad configuration: {error}", file=sys.stderr)  # noqa: T201
            return EXIT_USAGE
        path = socket_path(config.state_dir)
    if args.once:
        try:
            with AdminClient(path) as client:
                snapshot = client.snapshot()
        except (OSError, AdminError) as error:
            print(f"hostvisor: no agent on {path}: {error}", file=sys.stderr)  # noqa: T201
            return 1
        if args.json:
            print(json.dumps(snapshot, indent=2))  # noqa: T201
        else:
            for actor in snapshot["actors"]:
                print(  # noqa: T201
                    f"{actor['path']:<60} {actor['state']:<9} mb={actor['mailbox_depth']:<5} "
                    f"handled={actor['messages_handled']:<8} restarts={actor['restarts']}"
                )
        return 0
    from hostvisor.api.console.app import Channel, Console  # noqa: PLC0415 - textual is heavy

    channel = Channel(path)
    try:
        Console(channel, interval=args.interval).run()
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
