"""Verbs declared from their handler's signature, once, next to the handler.

    VmId = Annotated[str, Arg("the VM's UUID", wire="vmID")]

    class VmHandlers:
        @verb("VM", "pause", returns="{vmList: {}}", errors=(NoSuchVm,))
        async def pause(self, *, vm_id: VmId) -> dict[str, Any]:
            ...  # the first paragraph of its docstring is the verb's doc

    table = VerbTable.of(verbs_of(VmHandlers(api)))

Each param of the handler is a wire param: its JSON kind comes from its annotation
(`str`, `int`, `bool`, `float`, `str | int`, `Any`, `dict[str, T]`, `list[T]`,
`Literal[...]`, `T | None`), its default from its default (or `Arg(default=...)`
for a mutable one), its doc and wire name from an `Arg` in `Annotated` (or its doc
from the handler's `Args:` docstring section). A param annotated `Call` is not a
wire param: it receives the call (peer, local address, flow id). The result is the
same `Verb` and `Param` objects a hand declaration makes, so binding (with
`Kind.coerce`, plus the element kinds of arrays and objects), the dispatcher and
the schema treat both forms alike; the handler is called with the bound params
as keyword arguments. A signature that cannot be bound from JSON is refused with
`TypeError` when the table is built, not when a call comes.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from hostvisor.actors.errors import HostvisorError
from hostvisor.api.rpc.verbs import MISSING, Call, Handler, Kind, Param, Verb


@dataclass(frozen=True, slots=True)
class Arg:
    """What `Annotated` adds to a handler's param: `Annotated[str, Arg("doc", wire="vmID")]`.

    Args:
        doc: the param's description in the schema (else the docstring's `Args:` entry).
        wire: its name on the wire, when not the Python name (VDSM's are camelCase).
        default: its default when the Python one cannot say it: a mutable value, which
            a signature must not hold (each call gets a copy).
        kind: its kind when the annotation does not say it (such as `Kind.ANY`).
    """

    doc: str = ""
    wire: str | None = None
    default: Any = MISSING
    kind: Kind | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerbSpec:
    """What `@verb` records on a handler; `verbs_of` makes the `Verb`."""

    namespace: str
    name: str
    doc: str | None
    returns: str
    errors: tuple[type[HostvisorError], ...]
    timeout: float | Callable[[Any], float]
    """Seconds, or a function of the handlers' object returning them (a config value)."""
    gated: bool


_SPECS = "__hostvisor_verbs__"
HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def verb(  # noqa: PLR0913 - a verb's declaration, keywords with defaults
    namespace: str,
    name: str,
    *,
    doc: str | None = None,
    returns: str = "boolean",
    errors: tuple[type[HostvisorError], ...] = (),
    timeout: float | Callable[[Any], float] = 30.0,
    gated: bool = True,
) -> Callable[[HandlerT], HandlerT]:
    """Declare the method below as the handler of `namespace.name` (see `verbs_of`).

    Decorators stack: one handler may serve several verbs. `doc` defaults to the
    first paragraph of the handler's docstring. Runs at import; nothing is checked
    until `verbs_of` reads the signature.
    """
    spec = VerbSpec(
        namespace=namespace,
        name=name,
        doc=doc,
        returns=returns,
        errors=errors,
        timeout=timeout,
        gated=gated,
    )

    def mark(handler: HandlerT) -> HandlerT:
        specs: list[VerbSpec] = handler.__dict__.setdefault(_SPECS, [])
        specs.insert(0, spec)  # decorators apply bottom-up; keep them in reading order
        return handler

    return mark


def verbs_of(handlers: object) -> list[Verb]:
    """Return the verbs declared with `@verb` on the methods of `handlers`' class.

    Raises:
        TypeError: a handler's signature cannot be bound from JSON (a param with no
            annotation, no doc, `*args`, or a type with no JSON kind).
    """
    found: list[Verb] = []
    seen: set[str] = set()
    for klass in type(handlers).__mro__:
        for attr, member in vars(klass).items():
            if attr in seen:
                continue
            seen.add(attr)
            for spec in getattr(member, _SPECS, ()):
                timeout = spec.timeout
                if callable(timeout):
                    timeout = timeout(handlers)
                found.append(_declared(getattr(handlers, attr), spec, timeout))
    return found


def declare(  # noqa: PLR0913 - a verb's declaration, keywords with defaults
    handler: Callable[..., Any],
    namespace: str,
    name: str,
    *,
    doc: str | None = None,
    returns: str = "boolean",
    errors: tuple[type[HostvisorError], ...] = (),
    timeout: float = 30.0,
    gated: bool = True,
) -> Verb:
    """Return the verb served by `handler` (a function or bound method), as `@verb` would.

    Raises:
        TypeError: as `verbs_of`.
    """
    spec = VerbSpec(
        namespace=namespace,
        name=name,
        doc=doc,
        returns=returns,
        errors=errors,
        timeout=timeout,
        gated=gated,
    )
    return _declared(handler, spec, timeout)


def _declared(handler: Callable[..., Any], spec: VerbSpec, timeout: float) -> Verb:
    method = f"{spec.namespace}.{spec.name}"
    params, names, context = _signature(handler, method)
    doc = spec.doc if spec.doc is not None else _summary(handler)
    return Verb(
        namespace=spec.namespace,
        name=spec.name,
        doc=doc,
        handler=_binder(handler, names, context),
        params=params,
        returns=spec.returns,
        errors=spec.errors,
        timeout=timeout,
        gated=spec.gated,
    )


def _binder(
    handler: Callable[..., Any], names: tuple[tuple[str, str], ...], context: str | None
) -> Handler:
    """Return the `Call` handler that calls `handler` with the bound params by keyword."""

    def by_keyword(request: Call) -> Any:
        args = request.args
        kwargs = {python: args[wire] for python, wire in names}
        if context is not None:
            kwargs[context] = request
        return handler(**kwargs)

    def bare(_request: Call) -> Any:  # no params, no context: Host.ping's hot path
        return handler()

    bound: Handler = bare if not names and context is None else by_keyword
    if bound is bare:  # the dispatcher may call `handler` itself (`Dispatcher.plain`)
        bare.plain = handler  # type: ignore[attr-defined]

    bound.__name__ = getattr(handler, "__name__", "handler")
    bound.__doc__ = handler.__doc__
    return bound


def _signature(
    handler: Callable[..., Any], method: str
) -> tuple[tuple[Param, ...], tuple[tuple[str, str], ...], str | None]:
    """Return the params of `handler`, its (python, wire) names and its `Call` param."""
    function = inspect.unwrap(getattr(handler, "__func__", handler))
    hints = get_type_hints(function, include_extras=True)
    documented = _documented(function)
    params: list[Param] = []
    names: list[tuple[str, str]] = []
    context = None
    for name, parameter in inspect.signature(handler).parameters.items():
        where = f"{method}: param {name!r}"
        if parameter.kind in {parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD}:
            raise TypeError(f"{where}: *args and **kwargs cannot be bound from JSON")
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise TypeError(f"{where}: a positional-only param cannot be passed by name")
        hint = hints.get(name, parameter.empty)
        if hint is parameter.empty:
            raise TypeError(f"{where} has no annotation")
        if hint is Call:
            context = name
            continue
        param = _param(name, hint, parameter.default, documented.get(name, ""), where)
        if any(known.name == param.name for known in params):
            raise TypeError(f"{where}: wire name {param.name!r} is declared twice")
        params.append(param)
        names.append((name, param.name))
    return tuple(params), tuple(names), context


def _param(name: str, hint: Any, default: Any, documented: str, where: str) -> Param:
    arg = Arg()
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        arg = next((extra for extra in extras if isinstance(extra, Arg)), arg)
    doc = arg.doc or documented
    if not doc:
        raise TypeError(f"{where} has no doc (Arg(doc) or the docstring's Args:)")
    kind, items, choices, nullable = _kind_of(hint, where)
    if arg.default is not MISSING:
        default = arg.default
    elif default is inspect.Parameter.empty:
        default = MISSING
    return Param(
        name=arg.wire or name,
        kind=arg.kind or kind,
        doc=doc,
        default=default,
        items=items,
        choices=choices,
        nullable=nullable,
    )


_SCALARS: dict[Any, Kind] = {str: Kind.STR, int: Kind.INT, bool: Kind.BOOL, float: Kind.NUMBER}
_ARRAYS = (list, tuple, Sequence)
_OBJECTS = (dict, Mapping)


_Kinds = tuple[Kind, Kind | None, tuple[Any, ...], bool]
"""A param's kind, its elements' kind, its choices, and whether it is nullable."""


def _kind_of(hint: Any, where: str) -> _Kinds:
    """Return the kinds of `hint` (see `_Kinds`).

    Raises:
        TypeError: `hint` has no JSON kind.
    """
    origin = get_origin(hint)
    found: _Kinds | None = None
    if origin in {Union, types.UnionType}:
        found = _union_kind(get_args(hint), where)
    elif origin is Literal:
        choices = get_args(hint)
        kinds = {_kind_of(type(choice), where)[0] for choice in choices}
        if len(kinds) == 1:
            found = kinds.pop(), None, choices, False
    elif hint is Any:
        found = Kind.ANY, None, (), False
    elif hint in _SCALARS:
        found = _SCALARS[hint], None, (), False
    elif hint in _ARRAYS or origin in _ARRAYS:
        found = Kind.ARRAY, _element_kind(get_args(hint)[:1], where), (), False
    elif hint in _OBJECTS or origin in _OBJECTS:
        found = Kind.OBJECT, _element_kind(get_args(hint)[1:], where), (), False
    if found is None:
        raise TypeError(f"{where}: {hint!r} has no JSON kind")
    return found


def _union_kind(members: tuple[Any, ...], where: str) -> _Kinds | None:
    """`str | int` (VDSM's enum-or-number params), or `T | None`."""
    present = [member for member in members if member is not type(None)]
    nullable = len(present) < len(members)
    if set(present) == {str, int}:
        return Kind.STR_OR_INT, None, (), nullable
    if len(present) == 1:
        kind, items, choices, _ = _kind_of(present[0], where)
        return kind, items, choices, nullable
    return None


def _element_kind(args: tuple[Any, ...], where: str) -> Kind | None:
    """The kind each element must have; None for `Any` (or no element type)."""
    if not args or args[0] is Any:
        return None
    return _kind_of(args[0], where)[0]


def _summary(handler: Callable[..., Any]) -> str:
    """The first paragraph of `handler`'s docstring, on one line."""
    doc = inspect.getdoc(handler) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _documented(function: Callable[..., Any]) -> dict[str, str]:
    """The entries of a Google-style `Args:` section of `function`'s docstring."""
    lines = (inspect.getdoc(function) or "").splitlines()
    if "Args:" not in lines:
        return {}
    entries: dict[str, str] = {}
    name = None
    for line in lines[lines.index("Args:") + 1 :]:
        if not line.strip() or not line.startswith(" "):
            break
        head, colon, text = line.strip().partition(":")
        if (
            line.startswith("    ")
            and not line.startswith("     ")
            and colon
            and head.isidentifier()
        ):
            name = head
            entries[name] = text.strip()
        elif name is not None:
            entries[name] = f"{entries[name]} {line.strip()}"
    return entries
