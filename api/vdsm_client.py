"""`vdsm-client`: VDSM's command line client, with its syntax and its output.

    vdsm-client [-a HOST] [-p PORT] [--insecure] [--timeout N] [--flow-id ID]
                [-f FILE|-] Namespace verb [name=value ...]

Values given as `name=value` are strings; typed or nested params come from a JSON
file (`-f`, or `-f -` for standard input). The result is printed as JSON with
indent 4 and sorted keys; an error goes to stderr as `vdsm-client: <error>` with
exit status 1. TLS is used when the VDSM PKI files exist (or always with
`--cafile` and friends); `--insecure` connects without TLS.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hostvisor.api.client import DEFAULT_PORT, CallTimeout, ServerError, connect
from hostvisor.api.embedded import offline_verb_table
from hostvisor.api.tls import client_context

PKI = Path("/etc/pki/vdsm")
DEFAULT_CA = PKI / "certs" / "cacert.pem"
EXIT_ERROR = 1


def build_parser(schema: dict[str, Any]) -> argparse.ArgumentParser:
    """Return the parser: one sub-command per namespace, one per verb inside it."""
    parser = argparse.ArgumentParser(prog="vdsm-client", description="Invoke a Hostvisor verb")
    parser.add_argument("-a", "--host", default="localhost", help="host address")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="API port")
    parser.add_argument("--insecure", action="store_true", help="connect without TLS")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    parser.add_argument("--flow-id", help="correlation id logged by the host")
    parser.add_argument("--cafile", type=Path, default=DEFAULT_CA)
    parser.add_argument("--certfile", type=Path, default=PKI / "certs" / "vdsmcert.pem")
    parser.add_argument("--keyfile", type=Path, default=PKI / "keys" / "vdsmkey.pem")
    parser.add_argument("-f", "--file", help="read the params as JSON from FILE, or - for stdin")
    namespaces = parser.add_subparsers(dest="namespace", metavar="Namespace", required=True)
    by_namespace: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for verb in schema.values():
        by_namespace.setdefault(verb["namespace"], []).append((verb["verb"], verb))
    for namespace, verbs in sorted(by_namespace.items()):
        space = namespaces.add_parser(namespace, help=f"{namespace} verbs")
        commands = space.add_subparsers(dest="verb", metavar="verb", required=True)
        for name, verb in sorted(verbs):
            command = commands.add_parser(
                name,
                help=verb["doc"],
                description=_describe(verb),
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            command.add_argument("params", nargs="*", metavar="name=value")
    return parser


def _describe(verb: dict[str, Any]) -> str:
    lines = [verb["doc"], "", "arguments:"]
    template: dict[str, Any] = {}
    for param in verb["params"]:
        optional = "" if param["required"] else f" (optional, default {param['default']!r})"
        lines.append(f"  {param['name']}: {param['type']}{optional} - {param['doc']}")
        template[param["name"]] = param["type"]
    if not verb["params"]:
        lines.append("  none")
    lines += ["", "JSON template for -f:", json.dumps(template, indent=4, sort_keys=True)]
    return "\n".join(lines)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("the params file must hold a JSON object")
        params.update(loaded)
    for item in args.params:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise ValueError(f"expected name=value, got {item!r}")
        params[name] = value
    return params


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """TLS with the PKI files; plain only with --insecure or when the default PKI is absent."""
    if args.insecure:
        return None
    if not args.cafile.exists():
        if args.cafile != DEFAULT_CA:
            raise ValueError(f"CA file {args.cafile} does not exist")
        return None
    return client_context(ca=args.cafile, cert=args.certfile, key=args.keyfile)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vdsm-client`; return the exit status."""
    schema = offline_verb_table().schema()
    args = build_parser(schema).parse_args(argv)
    try:
        params = _params(args)
        tls = _tls(args)
        with connect(args.host, args.port, tls=tls, timeout=args.timeout) as cli:
            result = cli.call(f"{args.namespace}.{args.verb}", params, flow_id=args.flow_id)
    except (ServerError, CallTimeout, OSError, ValueError) as error:
        where = f"{args.host}:{args.port}"
        message = f"{where}: {error}" if isinstance(error, OSError) else str(error)
        print(f"vdsm-client: {message}", file=sys.stderr)  # noqa: T201
        return EXIT_ERROR
    print(json.dumps(result, indent=4, sort_keys=True))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
