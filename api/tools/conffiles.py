"""Editing other programs' configuration files the way VDSM's configurators do.

`key = value` files (libvirtd.conf, qemu.conf, qemu-sanlock.conf, sanlock.conf): the
settings Hostvisor needs live in one marked section at the end of the file;
a line outside it that sets one of those keys is commented out (`#hostvisor# `),
so the file says one thing. Rendering is a pure function of the old text and the
settings (`render_section`), so a second run produces the same bytes and
`write_if_changed` leaves the file (and its mtime) alone.

INI files (vdsm.conf): `render_missing` adds the keys a section lacks and never
changes a value an operator set.

Everything runs on the caller's thread; only `write_if_changed` and `read` touch
the disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

BEGIN = "## beginning of configuration section by hostvisor"
END = "## end of configuration section by hostvisor"
COMMENTED = "#hostvisor# "
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*=\s*(.*?)\s*$")


def read(path: Path) -> str:
    """The file's text, or "" when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def write_if_changed(path: Path, text: str, *, force: bool = False, mode: int = 0o644) -> bool:
    """Write `text` atomically unless the file holds it already (or `force`); True if written."""
    if not force and path.exists() and read(path) == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
    partial.replace(path)
    return True


def render_section(text: str, settings: Mapping[str, str]) -> str:
    """`text` with our section holding `settings`, and conflicting lines commented out."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            inside = True
            continue
        if line.strip() == END:
            inside = False
            continue
        if inside:
            continue
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) in settings:
            line = COMMENTED + line  # noqa: PLW2901 - the line, commented out
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    section = [BEGIN, *(f"{key} = {value}" for key, value in settings.items()), END]
    return "\n".join([*kept, *([""] if kept else []), *section]) + "\n"


def section_values(text: str) -> dict[str, str]:
    """The settings inside our section of `text` (empty when there is none)."""
    values: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.strip() in (BEGIN, END):
            inside = line.strip() == BEGIN
            continue
        match = _ASSIGNMENT.match(line)
        if inside and match:
            values[match.group(1)] = match.group(2)
    return values


def effective(text: str) -> dict[str, str]:
    """Every key's value as the program reads it (uncommented lines; the last one wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def render_missing(text: str, wanted: Mapping[str, Mapping[str, str]]) -> str:
    """INI `text` with each `wanted[section][key]` added where the section lacks the key."""
    lines = text.splitlines()
    for section, settings in wanted.items():
        start, end = _section_span(lines, section)
        if start is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines.append(f"[{section}]")
            start = end = len(lines)
        present = {key.lower() for key in effective("\n".join(lines[start:end]))}
        added = [
            f"{key} = {value}" for key, value in settings.items() if key.lower() not in present
        ]
        while end > start and not lines[end - 1].strip():
            end -= 1  # before the blank lines that end the section
        lines[end:end] = added
    return "\n".join(lines) + "\n"


def _section_span(lines: list[str], section: str) -> tuple[int | None, int]:
    """(first line after the header, end) of `[section]`, or (None, 0) without one."""
    start = None
    for index, line in enumerate(lines):
        header = line.strip()
        if header.startswith("[") and header.endswith("]"):
            if start is not None:
                return start, index
            if header[1:-1].strip() == section:
                start = index + 1
    return (start, len(lines)) if start is not None else (None, 0)
