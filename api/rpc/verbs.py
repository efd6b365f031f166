"""Verbs declared once, as typed tables: params, result, errors, timeout, handler.

The dispatcher binds and checks params from these declarations, and the schema
`hostvisor schema` prints is generated from the same objects, so the two cannot
disagree. Argument checking follows the Engine's needs: a param of the wrong JSON
type is refused with -32602 naming it, but an int where VDSM's schema has an enum
string is accepted where the verb says so (`Kind.STR_OR_INT`), and params a verb
does not declare are ignored (logged), as VDSM's non-strict mode does.

A verb is declared from its handler's signature (`hostvisor.api.rpc.declare`:
`@verb` and `verbs_of`), or by hand here, as `Verb(params=(Param(...), ...),
handler=...)` whose handler gets the `Call` and reads `call.args`. Both make the
same `Verb` and `Param` objects, bound and described the same way.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hostvisor.actors.errors import HostvisorError, InvalidArgument

log = logging.getLogger(__name__)


class Kind(enum.Enum):
    """The JSON type a param must have."""

    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    NUMBER = "number"
    OBJECT = "object"
    ARRAY = "array"
    STR_OR_INT = "string|integer"
    ANY = "any"

    def accepts(self, value: Any) -> bool:
        """Return whether `value`, decoded from JSON, has this kind."""
        return _ACCEPTS[self](value)

    def coerce(self, value: Any) -> Any:
        """Return `value` as this kind, accepting the strings `vdsm-client` sends.

        `vdsm-client Host getVMList onlyUUID=false` sends the string "false";
        VDSM lets it through unchecked (and treats it as true). Here a string that
        spells a value of the declared kind becomes that value; anything else of
        the wrong kind is refused.

        Raises:
            ValueError: `value` is not of this kind and does not spell one.
        """
        if self.accepts(value):
            return value
        if isinstance(value, str):
            text = value.strip()
            if self is Kind.BOOL and text.lower() in {"true", "false"}:
                return text.lower() == "true"
            if self is Kind.INT and text.lstrip("-").isdigit():
                return int(text)
            if self is Kind.NUMBER:
                with contextlib.suppress(ValueError):
                    return float(text)
        raise ValueError(f"expected {self.value}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_ACCEPTS: dict[Kind, Callable[[Any], bool]] = {
    Kind.STR: lambda v: isinstance(v, str),
    Kind.INT: _is_int,
    Kind.BOOL: lambda v: isinstance(v, bool),
    Kind.NUMBER: lambda v: _is_int(v) or isinstance(v, float),
    Kind.OBJECT: lambda v: isinstance(v, dict),
    Kind.ARRAY: lambda v: isinstance(v, list),
    Kind.STR_OR_INT: lambda v: isinstance(v, str) or _is_int(v),
    Kind.ANY: lambda _v: True,
}


MISSING: Any = object()
"""The default of a required param."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One declared param. Without a default, it is required."""

    name: str
    kind: Kind
    doc: str
    default: Any = MISSING
    items: Kind | None = None
    """The kind of each element of an array, or each value of an object; None: any."""
    choices: tuple[Any, ...] = ()
    """The only values allowed (a `Literal`); empty: any value of `kind`."""
    nullable: bool = False
    """Whether JSON null is accepted (an `Optional` param)."""

    @property
    def required(self) -> bool:
        """Whether a call must carry this param."""
        return self.default is MISSING

    def check(self, value: Any, method: str) -> Any:
        """Return `value` coerced to this param's kind (see `Kind.coerce`).

        Runs on the API loop; pure and fast.

        Raises:
            InvalidArgument: `value` is not of this param's kind, an element is not of
                its `items` kind, or it is not one of its `choices`.
        """
        if value is None and self.nullable:
            return None
        try:
            value = self.kind.coerce(value)
        except ValueError:
            raise InvalidArgument(
                method=method, param=self.name, expected=self.kind.value
            ) from None
        if self.items is not None:
            value = self._check_items(value, method)
        if self.choices and value not in self.choices:
            expected = f"one of {', '.join(map(str, self.choices))}"
            raise InvalidArgument(method=method, param=self.name, expected=expected)
        return value

    def _check_items(self, value: Any, method: str) -> Any:
        items = self.items
        assert items is not None  # noqa: S101 - checked by the caller
        try:
            if isinstance(value, list):
                return [items.coerce(element) for element in value]
            if isinstance(value, dict):
                return {key: items.coerce(element) for key, element in value.items()}
        except ValueError:
            expected = f"{self.kind.value} of {items.value}"
            raise InvalidArgument(method=method, param=self.name, expected=expected) from None
        return value

    def fresh_default(self) -> Any:
        """Return the default, copied when it is mutable (each call gets its own)."""
        default = self.default
        return copy.deepcopy(default) if isinstance(default, list | dict) else default


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """What a handler gets: bound arguments and where the call came from."""

    args: Mapping[str, Any]
    peer: str = ""
    """The client's address, `ip:port`."""
    local: str = ""
    """The address the call arrived on, `ip:port` (VDSM's lastClientIface comes from it)."""
    flow_id: str | None = None


Handler = Callable[[Call], Any]
"""Returns the result, a pykka future of it, or an awaitable of it. Must not block."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verb:
    """One API verb: `Namespace.name`, with everything the edge needs to serve it."""

    namespace: str
    name: str
    doc: str
    handler: Handler
    params: tuple[Param, ...] = ()
    returns: str = "boolean"
    errors: tuple[type[HostvisorError], ...] = ()
    timeout: float = 30.0
    gated: bool = True
    """Answer 99 while the host recovers (VDSM gates every verb)."""

    @property
    def method(self) -> str:
        """The JSON-RPC method name."""
        return f"{self.namespace}.{self.name}"

    def bind(self, params: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        """Return the call's arguments by name, checked against the declaration.

        Raises:
            InvalidArgument: a required param is missing, one has the wrong type,
                or there are more positional params than declared.
        """
        if isinstance(params, Mapping):
            named: Mapping[str, Any] = params
        else:
            if len(params) > len(self.params):
                raise InvalidArgument(method=self.method, reason="too many positional params")
            named = {p.name: value for p, value in zip(self.params, params, strict=False)}
        args: dict[str, Any] = {}
        for param in self.params:
            if param.name in named:
                args[param.name] = param.check(named[param.name], self.method)
            elif param.required:
                raise InvalidArgument(method=self.method, param=param.name, reason="missing")
            else:
                args[param.name] = param.fresh_default()
        extra = set(named) - {p.name for p in self.params}
        if extra:
            log.debug("%s: ignoring undeclared params %s", self.method, sorted(extra))
        return args


@dataclass(frozen=True, slots=True)
class VerbTable:
    """Every verb the host serves, by method name."""

    verbs: Mapping[str, Verb] = field(default_factory=dict)

    @classmethod
    def of(cls, *groups: Sequence[Verb]) -> VerbTable:
        """Build a table from groups of verbs; a method declared twice is a bug."""
        table: dict[str, Verb] = {}
        for group in groups:
            for verb in group:
                if verb.method in table:
                    raise ValueError(f"{verb.method} is declared twice")
                table[verb.method] = verb
        return cls(table)

    def get(self, method: str) -> Verb | None:
        """Return the verb for `method`, or None."""
        return self.verbs.get(method)

    def schema(self) -> dict[str, Any]:
        """Return a machine-readable description of every verb (for `hostvisor schema`)."""
        return {
            method: {
                "namespace": verb.namespace,
                "verb": verb.name,
                "doc": verb.doc,
                "params": [
                    {
                        "name": p.name,
                        "type": p.kind.value,
                        "required": p.required,
                        **({} if p.required else {"default": p.default}),
                        "doc": p.doc,
                    }
                    for p in verb.params
                ],
                "returns": verb.returns,
                "errors": [
                    {"code": e.code, "name": e.__name__}
                    for e in sorted(verb.errors, key=lambda e: (e.code, e.__name__))
                ],
                "timeout": verb.timeout,
            }
            for method, verb in sorted(self.verbs.items())
        }
