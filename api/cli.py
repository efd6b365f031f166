"""The `hostvisor` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hostvisor.actors.errors import InvalidArgument
from hostvisor.api.embedded import offline_verb_table
from hostvisor.api.server import check_config, serve
from hostvisor.supervision.config import load_config

EXIT_USAGE = 2
LOG_FORMAT = "%(asctime)s %(levelname)s (%(threadName)s) [%(name)s] %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `hostvisor`."""
    parser = argparse.ArgumentParser(prog="hostvisor", description="Hostvisor host agent")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the agent in the foreground")
    run.add_argument("--config", type=Path, help="INI file in vdsm.conf style (default: none)")
    run.add_argument("--state-dir", type=Path, help="override the state directory")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    commands.add_parser("schema", help="print the API schema (every verb) as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `hostvisor`; return the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        schema = offline_verb_table().schema()
        print(json.dumps(schema, indent=4, sort_keys=True, default=str))  # noqa: T201
        return 0
    try:
        level = args.log_level.upper() if args.log_level else None
        config = load_config(args.config, state_dir=args.state_dir, log_level=level)
        check_config(config)  # before logging and the tree: a bad config exits 2 at once
    except InvalidArgument as error:
        print(f"hostvisor: bad configuration: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT, stream=sys.stderr)
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
