"""Verbs declared from their handler's signature: what each annotation binds, pure and fast.

No actor, no socket: a declaration is read into `Verb`/`Param` objects, bound as the
dispatcher binds a request, and served by the dispatcher on a bare event loop.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

import pytest

from hostvisor.actors.errors import InvalidArgument
from hostvisor.api.rpc import codec
from hostvisor.api.rpc.declare import Arg, declare, verb, verbs_of
from hostvisor.api.rpc.dispatch import Dispatcher, Origin
from hostvisor.api.rpc.verbs import Call, Kind, Param, Verb, VerbTable

pytestmark = pytest.mark.unit

VmId = Annotated[str, Arg("the VM's UUID", wire="vmID")]


class Handlers:
    """Handlers of every shape the binding supports."""

    def __init__(self, timeout: float = 7.0) -> None:
        self.timeout = timeout

    @verb("T", "scalars", returns="object")
    def scalars(
        self,
        *,
        text: Annotated[str, Arg("a string")],
        count: Annotated[int, Arg("an int")],
        flag: Annotated[bool, Arg("a bool")],
        ratio: Annotated[float, Arg("a number")],
        level: Annotated[str | int, Arg("enum or int")],
        anything: Annotated[Any, Arg("any JSON")],
    ) -> dict[str, Any]:
        """Echo every scalar kind."""
        return {
            "text": text,
            "count": count,
            "flag": flag,
            "ratio": ratio,
            "level": level,
            "anything": anything,
        }

    @verb("T", "containers", returns="object")
    def containers(
        self,
        *,
        names: Annotated[list[str], Arg("names")],
        sizes: Annotated[dict[str, int], Arg("sizes by name", default={})],
        raw: Annotated[dict[str, Any], Arg("anything by name", default={})],
        items: Annotated[list[Any], Arg("anything", default=[])],
    ) -> dict[str, Any]:
        """Echo arrays and objects."""
        return {"names": names, "sizes": sizes, "raw": raw, "items": items}

    @verb("T", "choose")
    def choose(
        self,
        *,
        color: Annotated[Literal["red", "green"], Arg("a color")] = "red",
        note: Annotated[str | None, Arg("optional")] = None,
    ) -> list[Any]:
        """Pick a color.

        More text that is not the verb's doc.
        """
        return [color, note]

    @verb("T", "renamed", timeout=lambda handlers: handlers.timeout)
    def renamed(
        self, request: Call, *, vm_id: VmId, _ignored: Annotated[int, Arg("ignored", wire="x")] = 1
    ) -> Any:
        """Use a wire name and see the call."""
        return {"vm_id": vm_id, "peer": request.peer}

    @verb("T", "one", doc="The first name.")
    @verb("T", "two", doc="The second name.")
    def twice(self) -> bool:
        """Serve two verbs."""
        return True

    @verb("T", "documented")
    def documented(self, *, size: int, name: str = "x") -> list[Any]:
        """Docs from the docstring.

        Args:
            size: how big, in
                bytes.
            name: what to call it.
        """
        return [size, name]

    def plain(self) -> None:
        """Not a verb."""


def _verbs() -> dict[str, Verb]:
    return {v.method: v for v in verbs_of(Handlers())}


def _call(method: str, params: dict[str, Any] | list[Any]) -> Any:
    found = _verbs()[method]
    return found.handler(Call(args=found.bind(params), peer="1.2.3.4:5"))


def _refused(method: str, params: dict[str, Any] | list[Any]) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as refused:
        _verbs()[method].bind(params)
    return refused.value


def test_every_decorated_method_is_a_verb_and_stacked_decorators_make_several():
    assert sorted(_verbs()) == [
        "T.choose", "T.containers", "T.documented", "T.one", "T.renamed", "T.scalars", "T.two",
    ]  # fmt: skip
    assert _verbs()["T.one"].doc == "The first name."
    assert _verbs()["T.two"].doc == "The second name."
    assert _call("T.two", {}) is True


def test_annotations_become_kinds():
    params = {p.name: p for p in _verbs()["T.scalars"].params}
    assert {name: p.kind for name, p in params.items()} == {
        "text": Kind.STR,
        "count": Kind.INT,
        "flag": Kind.BOOL,
        "ratio": Kind.NUMBER,
        "level": Kind.STR_OR_INT,
        "anything": Kind.ANY,
    }
    assert all(p.required for p in params.values())
    kinds = {p.name: (p.kind, p.items) for p in _verbs()["T.containers"].params}
    assert kinds == {
        "names": (Kind.ARRAY, Kind.STR),
        "sizes": (Kind.OBJECT, Kind.INT),
        "raw": (Kind.OBJECT, None),
        "items": (Kind.ARRAY, None),
    }


def test_values_of_the_declared_kind_are_passed_as_they_are():
    args = {"text": "t", "count": 3, "flag": True, "ratio": 2, "level": 10, "anything": [{}]}
    assert _call("T.scalars", args) == args


def test_the_strings_vdsm_client_sends_are_coerced():
    result = _call(
        "T.scalars",
        {"text": "t", "count": "-3", "flag": "False", "ratio": "1.5", "level": "INFO",
         "anything": "x"},
    )  # fmt: skip
    assert result == {
        "text": "t", "count": -3, "flag": False, "ratio": 1.5, "level": "INFO", "anything": "x",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("text", 1, "string"),
        ("count", "three", "integer"),
        ("count", True, "integer"),
        ("flag", "yes", "boolean"),
        ("ratio", "fast", "number"),
        ("level", 1.5, "string|integer"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_naming_the_param(param, value, expected):
    args = {"text": "t", "count": 1, "flag": True, "ratio": 1, "level": 1, "anything": None}
    refused = _refused("T.scalars", {**args, param: value})
    assert refused.context == {"method": "T.scalars", "param": param, "expected": expected}


def test_elements_of_an_array_or_object_are_checked_and_coerced():
    assert _call("T.containers", {"names": ["a"], "sizes": {"a": "2"}}) == {
        "names": ["a"], "sizes": {"a": 2}, "raw": {}, "items": [],
    }  # fmt: skip
    refused = _refused("T.containers", {"names": [{}]})
    assert refused.context == {
        "method": "T.containers", "param": "names", "expected": "array of string",
    }  # fmt: skip
    refused = _refused("T.containers", {"names": [], "sizes": {"a": "big"}})
    assert refused.context["param"] == "sizes"
    assert refused.context["expected"] == "object of integer"
    assert _call("T.containers", {"names": [], "items": [{}, 1]})["items"] == [{}, 1]


def test_a_missing_required_param_is_refused_and_an_extra_one_is_ignored():
    refused = _refused("T.containers", {"sizes": {}})
    assert refused.context == {"method": "T.containers", "param": "names", "reason": "missing"}
    assert _call("T.containers", {"names": ["a"], "surplus": 1})["names"] == ["a"]


def test_defaults_fill_absent_params_and_mutable_ones_are_fresh_each_call():
    first = _call("T.containers", {"names": []})
    first["raw"]["dirty"] = True
    first["items"].append(1)
    assert _call("T.containers", {"names": []}) == {
        "names": [], "sizes": {}, "raw": {}, "items": [],
    }  # fmt: skip
    assert _call("T.choose", {}) == ["red", None]


def test_a_literal_allows_only_its_values_and_an_optional_allows_null():
    assert _call("T.choose", {"color": "green", "note": None}) == ["green", None]
    assert _call("T.choose", {"note": "n"}) == ["red", "n"]
    refused = _refused("T.choose", {"color": "blue"})
    assert refused.context == {
        "method": "T.choose",
        "param": "color",
        "expected": "one of red, green",
    }
    assert _refused("T.choose", {"note": 3}).context["expected"] == "string"
    assert [p.choices for p in _verbs()["T.choose"].params] == [("red", "green"), ()]


def test_wire_names_are_bound_to_python_names_and_a_call_param_gets_the_call():
    assert [p.name for p in _verbs()["T.renamed"].params] == ["vmID", "x"]
    assert _call("T.renamed", {"vmID": "v"}) == {"vm_id": "v", "peer": "1.2.3.4:5"}
    assert _refused("T.renamed", {"vm_id": "v"}).context["param"] == "vmID"


def test_positional_params_bind_in_signature_order():
    assert _call("T.documented", [3, "n"]) == [3, "n"]
    assert _call("T.documented", [3]) == [3, "x"]
    assert _refused("T.documented", [1, "n", "extra"]).context["reason"] == (
        "too many positional params"
    )


def test_docs_come_from_arg_or_the_docstring_and_the_verb_doc_from_its_summary():
    assert _verbs()["T.choose"].doc == "Pick a color."
    assert [(p.name, p.doc) for p in _verbs()["T.documented"].params] == [
        ("size", "how big, in bytes."),
        ("name", "what to call it."),
    ]
    assert _verbs()["T.renamed"].params[0].doc == "the VM's UUID"


def test_a_timeout_may_come_from_the_handlers_object():
    assert {v.method: v.timeout for v in verbs_of(Handlers(timeout=3.0))}["T.renamed"] == 3.0
    assert _verbs()["T.one"].timeout == 30.0


def test_the_schema_of_a_declared_verb_equals_the_hand_written_one():
    def handler(*, vm_id: VmId, graceful: Annotated[int, Arg("ignored", wire="g")] = 1) -> bool:
        """Kill the VM."""
        return bool(vm_id and graceful)

    declared = declare(handler, "VM", "destroy", errors=(InvalidArgument,), timeout=60.0)
    by_hand = Verb(
        namespace="VM",
        name="destroy",
        doc="Kill the VM.",
        params=(
            Param(name="vmID", kind=Kind.STR, doc="the VM's UUID"),
            Param(name="g", kind=Kind.INT, doc="ignored", default=1),
        ),
        handler=lambda _call: True,
        errors=(InvalidArgument,),
        timeout=60.0,
    )
    assert VerbTable.of([declared]).schema() == VerbTable.of([by_hand]).schema()


def _bad(annotation: Any) -> Any:
    def handler(*, value: annotation) -> None:  # type: ignore[valid-type]
        """A handler whose param cannot be bound."""

    handler.__annotations__["value"] = annotation
    return handler


def _twice(*, vm_id: VmId, other: VmId) -> None:
    """Two params with one wire name."""


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [
        (_bad(Annotated[set[str], Arg("a set")]), "has no JSON kind"),
        (_bad(Annotated[str | bytes, Arg("two types")]), "has no JSON kind"),
        (_bad(str), "has no doc"),
        (lambda value: value, "has no annotation"),
        (lambda *values: values, "*args and **kwargs"),
        (_twice, "wire name 'vmID' is declared twice"),
    ],
    ids=["set", "union", "undocumented", "unannotated", "varargs", "twice"],
)
def test_a_signature_that_cannot_be_bound_is_refused_when_declared(handler, fragment):
    with pytest.raises(TypeError, match=re.escape(fragment)):
        declare(handler, "T", "bad")


def test_the_dispatcher_answers_a_bad_element_with_invalid_params_naming_it():
    dispatcher = Dispatcher(VerbTable.of(verbs_of(Handlers())), is_ready=lambda: True)

    async def ask(params: dict[str, Any]) -> dict[str, Any]:
        return await dispatcher.call(codec.Request("T.containers", params, 1), Origin())

    refused = asyncio.run(ask({"names": [{}]}))
    assert refused["error"]["code"] == codec.INVALID_PARAMS
    assert "'param': 'names'" in refused["error"]["message"]
    assert asyncio.run(ask({"names": ["a"]}))["result"]["names"] == ["a"]
