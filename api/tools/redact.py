"""Keeping secrets out of what operators collect: passwords, keys and tickets.

Two layers, both applied to every text file that goes into a log archive:
- patterns: a `password`/`passwd`/`ticket`/`secret`/`token` key, attribute or XML
  element with its value (JSON, Python reprs, INI lines, XML attributes such as a
  graphics device's `passwd='...'`, elements such as `<ovirt-vm:password>`), and
  whole PEM private-key blocks;
- literals: the secret values themselves, wherever they occur (a log line that
  echoed a VNC ticket in a form no pattern knows). They are learned from the
  structured sources as those are gathered (`Redactor.learn_*`) and from the key
  files the configuration names, and scrubbed from every file at the end.

Structured data (API answers, docker inspect, stored connections) is redacted
before it is serialized (`Redactor.structure`), so a secret never reaches disk
in the staging directory either.

All methods run on the caller's thread and never block on anything but reading
the files they are given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MASK = "********"
"""What a secret is replaced with."""

SECRET_WORDS = ("password", "passwd", "ticket", "secret", "token", "passphrase")
"""A key or attribute whose name contains one of these holds a secret."""
SECRET_NAMES = frozenset({"key", "privatekey", "private_key", "chap_password", "auth"})
"""Keys that hold a secret though they carry none of `SECRET_WORDS`."""
MIN_LITERAL = 6
"""Literals shorter than this are not scrubbed (they would hit innocent text)."""

_WORDS = "|".join(SECRET_WORDS)
_QUOTED = re.compile(
    rf"""(?P<head>["']?[\w.-]*(?:{_WORDS})[\w.-]*["']?\s*[:=]\s*)(?P<q>["'])(?P<value>.*?)(?P=q)""",
    re.IGNORECASE,
)
_BARE = re.compile(
    rf"""(?P<head>\b[\w.-]*(?:{_WORDS})[\w.-]*\s*[:=]\s*)(?P<value>[^\s"',;}}\])]+)""",
    re.IGNORECASE,
)
_ELEMENT = re.compile(
    rf"<(?P<tag>[\w:.-]*(?:{_WORDS})[\w.-]*)(?P<attrs>[^>]*)>(?P<value>[^<]*)</(?P=tag)>",
    re.IGNORECASE,
)
_PEM_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    re.DOTALL,
)
_PEM_BODY_LINE = re.compile(r"^[A-Za-z0-9+/=]{16,}$")


def secret_key(name: str) -> bool:
    """Whether a key or attribute called `name` holds a secret."""
    lowered = name.lower()
    return lowered in SECRET_NAMES or any(word in lowered for word in SECRET_WORDS)


class Redactor:
    """Learns secrets, then masks them in structures and text."""

    def __init__(self) -> None:
        """Start knowing no literal secret."""
        self._literals: set[str] = set()

    @property
    def literals(self) -> frozenset[str]:
        """The secret values learned so far."""
        return frozenset(self._literals)

    def learn(self, values: Iterable[str]) -> None:
        """Remember secret values to scrub from every text (short ones are ignored)."""
        for value in values:
            text = value.strip()
            if len(text) >= MIN_LITERAL and text != MASK:
                self._literals.add(text)

    def learn_key_file(self, path: Path) -> None:
        """Remember each base64 line of a PEM file (a private key's body). Never raises."""
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return
        self.learn(line.strip() for line in text.splitlines() if _PEM_BODY_LINE.match(line.strip()))

    def learn_text(self, text: str) -> None:
        """Remember the values of every secret-looking key or attribute in `text`."""
        self.learn(match.group("value") for match in _QUOTED.finditer(text))
        self.learn(match.group("value") for match in _ELEMENT.finditer(text))
        self.learn(match.group("value") for match in _BARE.finditer(text))

    def structure(self, data: Any) -> Any:
        """A copy of JSON-like `data` with every secret value masked (and learned).

        Dict keys that name a secret lose their value; strings of the form
        `NAME=value` (docker's Env) lose the value when NAME does; strings that
        look like XML or key-value text are masked as text.
        """
        if isinstance(data, dict):
            result: dict[Any, Any] = {}
            for key, value in data.items():
                if isinstance(key, str) and secret_key(key) and isinstance(value, str | int):
                    self.learn([str(value)])
                    result[key] = MASK
                else:
                    result[key] = self.structure(value)
            return result
        if isinstance(data, list | tuple):
            return [self.structure(item) for item in data]
        if isinstance(data, str):
            name, equals, value = data.partition("=")
            if equals and name.isidentifier() and secret_key(name):
                self.learn([value])
                return f"{name}={MASK}"
            self.learn_text(data)
            return self.text(data)
        return data

    def text(self, text: str) -> str:
        """`text` with private-key blocks, secret-looking values and learned literals masked."""
        text = _PEM_KEY.sub("[private key removed]", text)
        text = _ELEMENT.sub(
            lambda m: f"<{m.group('tag')}{m.group('attrs')}>{MASK}</{m.group('tag')}>", text
        )
        text = _QUOTED.sub(lambda m: f"{m.group('head')}{m.group('q')}{MASK}{m.group('q')}", text)
        text = _BARE.sub(lambda m: f"{m.group('head')}{MASK}", text)
        for literal in sorted(self._literals, key=len, reverse=True):
            if literal in text:
                text = text.replace(literal, MASK)
        return text
