"""hooking: helpers for hook scripts, as VDSM's `vdsm.hook.hooking` offers them.

Imported by hook scripts as `import hooking` (the runner puts this directory on their
PYTHONPATH), by whatever Python runs the script: standard library only.

A VM hook finds the domain (or device) XML in the file `$_hook_domxml` and may
rewrite it; a JSON hook (the network setup, the stats) finds its document in
`$_hook_json`. Exit status 0: success; 1: failure, the next scripts still run;
2: failure, the next scripts do not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn
from xml.dom import minidom

DOMXML = "_hook_domxml"
"""The environment variable naming the XML file (VDSM's name, lower case)."""
JSON_FILE = "_hook_json"
"""The environment variable naming the JSON file."""

__all__ = [
    "execCmd",
    "exec_cmd",
    "exit_hook",
    "log",
    "read_domxml",
    "read_json",
    "tobool",
    "write_domxml",
    "write_json",
]


def read_domxml() -> minidom.Document:
    """The XML the hook was given, parsed (a minidom document, as VDSM's)."""
    data = Path(os.environ[DOMXML]).read_bytes()
    return minidom.parseString(data)  # noqa: S318 - the agent's own file, as VDSM's hooking


def write_domxml(domxml: minidom.Document) -> None:
    """Replace the XML the operation goes on with."""
    Path(os.environ[DOMXML]).write_bytes(domxml.toxml(encoding="utf-8"))


def read_json() -> Any:
    """The JSON document the hook was given."""
    return json.loads(Path(os.environ[JSON_FILE]).read_text(encoding="utf-8"))


def write_json(data: Any) -> None:
    """Replace the JSON document the operation goes on with."""
    Path(os.environ[JSON_FILE]).write_text(json.dumps(data), encoding="utf-8")


def log(message: str) -> None:
    """Write `message` to stderr (the agent logs a hook's stderr)."""
    sys.stderr.write(message + "\n")


def exit_hook(message: str, return_code: int = 2) -> NoReturn:
    """Exit with `message` on stderr; 2 by default: failed, skip the next scripts."""
    sys.stderr.write(message + "\n")
    sys.exit(return_code)


def tobool(value: Any) -> bool:
    """A custom property's value as a boolean (VDSM's `conv.tobool`: "true", "1"...)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def exec_cmd(command: list[str], data: bytes | None = None) -> tuple[int, list[bytes], list[bytes]]:
    """Run `command` (no shell); return its exit status and its stdout and stderr lines."""
    done = subprocess.run(command, input=data, capture_output=True, check=False)
    return done.returncode, done.stdout.splitlines(), done.stderr.splitlines()


execCmd = exec_cmd  # noqa: N816 - VDSM's name, which hook scripts call
