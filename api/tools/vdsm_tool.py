"""`vdsm-tool`: VDSM's configuration verbs for a Hostvisor host.

    vdsm-tool [--prefix DIR] configure [--force] [--module NAME ...]
    vdsm-tool [--prefix DIR] is-configured [--module NAME ...]
    vdsm-tool [--prefix DIR] validate-config [--module NAME ...]

As VDSM's: without `--module` every module runs (`certificates`, `libvirt`,
`sanlock`, `hostvisor`; a module's requirements are added); `configure` touches only
the modules `is-configured` says are not configured, and refuses while one of their
services runs, unless `--force`, which reconfigures every module, rewrites its files
and restarts its running services after. `is-configured` and `validate-config`
answer by exit status: 0 yes, 1 no (naming the modules).

`--prefix` (Hostvisor's own option) configures the tree under DIR instead of the
machine's root, and writes paths under DIR into the files, so the configured tree
works where it is: tests and image builds use it; no service is restarted there.

Runs on the main thread; blocks on files and on shadow's and systemd's tools.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from hostvisor.api.tools.configurators import MODULES, Configurator, Context
from hostvisor.api.tools.system import Host

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `vdsm-tool`."""
    parser = argparse.ArgumentParser(prog="vdsm-tool", description="configure the host for VDSM")
    parser.add_argument(
        "--prefix", type=Path, metavar="DIR", help="configure the tree under DIR, not /"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text in (
        ("configure", "configure external services for vdsm"),
        ("is-configured", "determine if the modules are configured"),
        ("validate-config", "determine if the configuration is valid"),
    ):
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument(
            "--module",
            dest="modules",
            action="append",
            default=[],
            choices=list(MODULES),
            help="run on this module only (repeatable; default: all)",
        )
        if verb == "configure":
            sub.add_argument(
                "--force", action="store_true", help="reconfigure and restart running services"
            )
    return parser


def selected(names: Sequence[str], ctx: Context) -> list[Configurator]:
    """The modules named (all when none), with their requirements, in dependency order."""
    wanted = set(names or MODULES)
    queue = list(wanted)
    while queue:
        for required in MODULES[queue.pop()](ctx).requires:
            if required not in wanted:
                wanted.add(required)
                queue.append(required)
    return [factory(ctx) for name, factory in MODULES.items() if name in wanted]


def configure(modules: list[Configurator], *, force: bool, out: TextIO) -> int:
    """Configure `modules` (VDSM's flow); return the exit status."""
    out.write("\nChecking configuration status...\n\n")
    todo = [module for module in modules if force or module.issues()]
    for module in modules:
        if module not in todo:
            out.write(f"{module.name} is already configured for vdsm\n")
    running = [(m, s) for m in todo for s in m.services if m.ctx.host.services.running(s)]
    if running and not force:
        names = ", ".join(sorted({service for _, service in running}))
        out.write(
            f"\n\nCannot configure while service(s) {names} running.\n"
            " Stop the service manually or use the --force flag.\n"
        )
        return EXIT_NO
    out.write("\nRunning configure...\n")
    for module in todo:
        written = module.configure(force=force)
        out.writelines(f"  wrote {path}\n" for path in written)
        out.write(f"Reconfiguration of {module.name} is done.\n")
    if force:
        for module in todo:
            out.writelines(
                module.ctx.host.services.restart(service) + "\n" for service in module.services
            )
    out.write("\nDone configuring modules to VDSM.\n")
    return EXIT_OK


def is_configured(modules: list[Configurator], out: TextIO) -> int:
    """Exit 0 when every module is configured; else name the others and exit 1."""
    missing = []
    for module in modules:
        issues = module.issues()
        out.writelines(f"{module.name}: {issue}\n" for issue in issues)
        if issues:
            missing.append(module.name)
    if not missing:
        return EXIT_OK
    out.write(
        f"Modules {', '.join(missing)} are not configured\n"
        "\nOne of the modules is not configured to work with VDSM.\n"
        "To configure the module use the following:\n"
        "'vdsm-tool configure [--module module-name]'.\n"
    )
    return EXIT_NO


def validate_config(modules: list[Configurator], out: TextIO) -> int:
    """Exit 0 when every module's configuration is consistent; else name the others."""
    invalid = []
    for module in modules:
        problems = module.problems()
        out.writelines(f"{module.name}: {problem}\n" for problem in problems)
        if problems:
            invalid.append(module.name)
    if invalid:
        out.write(f"Modules {', '.join(invalid)} contains invalid configuration\n")
        return EXIT_NO
    out.write("Config is valid.\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run `vdsm-tool`; return the exit status."""
    stream = out or sys.stdout
    args = build_parser().parse_args(argv)
    if args.prefix is None and os.geteuid() != 0:
        print("vdsm-tool: must run as root", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    ctx = Context(Host.at(args.prefix))
    modules = selected(args.modules, ctx)
    try:
        if args.verb == "configure":
            return configure(modules, force=args.force, out=stream)
        if args.verb == "is-configured":
            return is_configured(modules, stream)
        return validate_config(modules, stream)
    except (OSError, ValueError, subprocess.CalledProcessError) as error:
        print(f"vdsm-tool: {error}", file=sys.stderr)  # noqa: T201
        return EXIT_NO


if __name__ == "__main__":
    sys.exit(main())
