"""Property tests of param binding, over every verb the host declares.

The verbs come from the same table `hostvisor serve` serves (`offline_verb_table`),
so a verb added later is covered without touching this file. Whatever JSON a client
sends as params, binding returns arguments of the declared kinds or refuses with
`InvalidArgument` naming the param: it never raises anything else, and never lets a
wrong kind (or a wrong element kind) through to a handler.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.hostile import hostile_xml
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import domxml
from hostvisor.api.embedded import offline_verb_table
from hostvisor.api.rpc.verbs import Kind, Param, Verb

pytestmark = pytest.mark.unit

VERBS = sorted(offline_verb_table().verbs.values(), key=lambda verb: verb.method)
PARAMS = [(verb, param) for verb in VERBS for param in verb.params]
BUDGET = settings(max_examples=400, derandomize=True, database=None, deadline=None)
"""A fixed, derandomized budget: the same examples on every run, bounded CI time."""

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(st.characters() | SURROGATES, max_size=12)
NUMERIC_TEXT = st.from_regex(r"\A\s*-?[0-9]{1,30}(\.[0-9]*)?\s*\Z") | st.sampled_from(
    ["nan", "inf", "-Infinity", "1e999", "true", "FALSE", " 7 ", "-0", "0x10", "١٢"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | NUMERIC_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)
"""Any value a JSON body can decode to (ujson gives ints, floats, text, lists, dicts)."""


def of_kind(kind: Kind) -> st.SearchStrategy[Any]:
    """Values binding must accept as they are."""
    return {
        Kind.STR: TEXT,
        Kind.INT: st.integers(-(2**64), 2**64),
        Kind.BOOL: st.booleans(),
        Kind.NUMBER: st.integers() | st.floats(allow_nan=False, allow_infinity=False),
        Kind.OBJECT: st.dictionaries(TEXT, JSON, max_size=4),
        Kind.ARRAY: st.lists(JSON, max_size=4),
        Kind.STR_OR_INT: TEXT | st.integers(),
        Kind.ANY: JSON,
    }[kind]


def valid_value(param: Param) -> st.SearchStrategy[Any]:
    """A value of `param`'s kind, elements of its item kind, one of its choices."""
    if param.choices:
        return st.sampled_from(param.choices)
    if param.items is None:
        return of_kind(param.kind)
    element = of_kind(param.items)
    if param.kind is Kind.ARRAY:
        return st.lists(element, max_size=4)
    return st.dictionaries(TEXT, element, max_size=4)


def bound_ok(param: Param, value: Any) -> bool:
    """Whether a bound value has the param's declared kind (elements included)."""
    if value is None and param.nullable:
        return True
    if not param.kind.accepts(value):
        return False
    if param.items is not None:
        elements = value if isinstance(value, list) else list(value.values())
        if not all(param.items.accepts(element) for element in elements):
            return False
    return not param.choices or value in param.choices


@BUDGET
@given(st.sampled_from(VERBS), st.data())
def test_any_params_bind_to_the_declared_kinds_or_are_refused(verb: Verb, data: st.DataObject):
    names = st.sampled_from([p.name for p in verb.params] or ["x"]) | TEXT
    params = data.draw(st.dictionaries(names, JSON, max_size=len(verb.params) + 2))
    try:
        args = verb.bind(params)
    except InvalidArgument as error:
        refused = error
    else:
        refused = None
    if refused is not None:
        assert refused.render()  # a clean, renderable refusal
        return
    assert set(args) == {p.name for p in verb.params}
    for param in verb.params:
        if param.name in params:
            assert bound_ok(param, args[param.name]), (param, params[param.name])


@BUDGET
@given(st.sampled_from(VERBS), st.lists(JSON, max_size=6))
def test_positional_params_bind_or_are_refused(verb: Verb, params: list[Any]):
    try:
        args = verb.bind(params)
    except InvalidArgument:
        return
    for param, value in zip(verb.params, params, strict=False):
        assert bound_ok(param, args[param.name]), (param, value)


@BUDGET
@given(st.sampled_from(VERBS), st.data())
def test_valid_params_bind_unchanged(verb: Verb, data: st.DataObject):
    params = {p.name: data.draw(valid_value(p), label=p.name) for p in verb.params}
    assert verb.bind(params) == params


@BUDGET
@given(st.sampled_from(PARAMS or [None]), JSON)
def test_a_value_of_the_wrong_kind_is_refused_naming_the_param(
    verb_param: tuple[Verb, Param], value: Any
):
    verb, param = verb_param
    try:
        param.kind.coerce(value)
        coercible = True
    except ValueError:
        coercible = value is None and param.nullable
    if coercible and param.items is not None and isinstance(value, list | dict):
        elements = value if isinstance(value, list) else list(value.values())
        try:
            [param.items.coerce(element) for element in elements]
        except ValueError:
            coercible = False
    if coercible and param.choices:
        return
    params = {p.name: data_for(p) for p in verb.params if p.required}
    params[param.name] = value
    if coercible:
        assert bound_ok(param, verb.bind(params)[param.name])
        return
    with pytest.raises(InvalidArgument) as refused:
        verb.bind(params)
    assert param.name in refused.value.render()


def data_for(param: Param) -> Any:
    """A fixed valid value of `param` (for the params a case does not vary)."""
    if param.choices:
        return param.choices[0]
    return {
        Kind.STR: "x",
        Kind.INT: 1,
        Kind.BOOL: True,
        Kind.NUMBER: 1.5,
        Kind.OBJECT: {},
        Kind.ARRAY: [],
        Kind.STR_OR_INT: 1,
        Kind.ANY: None,
    }[param.kind]


def test_every_declared_verb_is_covered():
    assert len(VERBS) >= 70
    assert {verb.namespace for verb in VERBS} >= {"Host", "VM", "StoragePool", "Volume"}


# -- VM.create's domain XML: any text is read or refused cleanly --------------------------

XML_PIECES = st.sampled_from(
    [
        "<domain>",
        "</domain>",
        "<uuid>",
        "</uuid>",
        "<vcpu>",
        "</vcpu>",
        "<memory unit='",
        "'>",
        "</memory>",
        "<!DOCTYPE d [",
        "<!ENTITY e 'x'>",
        "]>",
        "&e;",
        "<![CDATA[",
        "]]>",
        "6d1f7a8e-1b3c-4d5e-8f90-123456789abc",
        "\ud800",
        "\x00",
        "9" * 30,
        "-1",
        "<a>" * 70,
    ]
)


@BUDGET
@given(st.lists(XML_PIECES | TEXT, max_size=20).map("".join))
def test_any_domain_xml_text_is_read_or_refused_cleanly(xml: str):
    try:
        spec = domxml.parse_untrusted(xml)
    except InvalidArgument:
        return  # refused cleanly
    assert spec.vcpus >= 0
    assert spec.memory_kib >= 0


ACCEPTED_BY_DOMXML = {"start-time-nan", "start-time-inf"}
"""Hostile XML the parser reads (libvirt refuses its domain type 'hostile' later)."""


@pytest.mark.parametrize(("label", "xml"), hostile_xml(str(uuid.uuid4())))
def test_hostile_domain_xml_is_refused_cleanly(label: str, xml: str):
    if label not in ACCEPTED_BY_DOMXML:
        with pytest.raises(InvalidArgument):
            domxml.parse_untrusted(xml)
        return
    spec = domxml.parse_untrusted(xml)
    assert spec.start_time is None  # "nan" and "-inf" are no start time
