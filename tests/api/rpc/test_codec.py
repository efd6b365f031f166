"""The JSON-RPC codec, pure: what a body decodes to and what goes back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostvisor.api.rpc import codec

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def test_a_request_decodes_with_its_id_method_and_params():
    body = b'{"jsonrpc": "2.0", "id": "a1", "method": "Host.ping", "params": {"x": 1}}'
    [request], batch = codec.decode(body)
    assert not batch
    assert request == codec.Request("Host.ping", {"x": 1}, "a1")


def test_a_request_without_id_is_a_notification():
    [request], _ = codec.decode(b'{"jsonrpc": "2.0", "method": "Host.ping"}')
    assert isinstance(request, codec.Request)
    assert request.notification
    assert request.params == {}


@pytest.mark.parametrize(
    ("body", "code", "request_id"),
    [
        (b"{not json", codec.PARSE_ERROR, None),
        (b"[]", codec.INVALID_REQUEST, None),
        (b'{"jsonrpc": "1.0", "id": 7, "method": "m"}', codec.INVALID_REQUEST, 7),
        (b'{"jsonrpc": "2.0", "id": 7, "method": ""}', codec.INVALID_REQUEST, 7),
        (b'{"jsonrpc": "2.0", "id": 7, "method": "m", "params": 3}', codec.INVALID_PARAMS, 7),
        (b'{"jsonrpc": "2.0", "id": true, "method": 5}', codec.INVALID_REQUEST, None),
        (b"\xff\xfe", codec.PARSE_ERROR, None),
    ],
)
def test_bad_bodies_decode_to_errors_that_echo_the_id_they_can_read(
    body: bytes, code: int, request_id: object
):
    [invalid], _ = codec.decode(body)
    assert isinstance(invalid, codec.Invalid)
    assert (invalid.code, invalid.id) == (code, request_id)


def test_one_response_goes_back_as_an_object_many_as_an_array_none_as_nothing():
    one = codec.result(1, True)
    assert json.loads(codec.encode_responses([one]) or b"") == one
    assert json.loads(codec.encode_responses([one, one]) or b"") == [one, one]
    assert codec.encode_responses([]) is None


@given(json_values)
def test_decoding_never_raises_on_any_json_document(document: object):
    elements, batch = codec.decode(json.dumps(document).encode())
    assert batch == (isinstance(document, list) and bool(document)) or isinstance(document, list)
    assert all(isinstance(e, codec.Request | codec.Invalid) for e in elements)


@given(st.binary(max_size=200))
def test_decoding_never_raises_on_any_bytes(body: bytes):
    elements, _ = codec.decode(body)
    assert elements


@given(st.text(max_size=50), json_values)
def test_results_round_trip_through_the_encoder(request_id: str, value: object):
    encoded = codec.encode_responses([codec.result(request_id, value)])
    assert json.loads(encoded or b"") == {"jsonrpc": "2.0", "id": request_id, "result": value}


# -- lone surrogates, caps, what cannot be encoded ----------------------------------------

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
ANY_TEXT = st.text(st.characters() | SURROGATES, max_size=12)
"""Text with lone surrogates, which JSON can carry as escapes but UTF-8 cannot."""
json_with_surrogates = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)


@given(ANY_TEXT | st.integers(), ANY_TEXT, json_with_surrogates)
def test_any_text_in_id_method_or_params_decodes_and_its_answers_encode(
    request_id: object, method: str, value: object
):
    body = json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {"v": value}}
    ).encode()  # json escapes lone surrogates: the body is ASCII
    [element], _ = codec.decode(body)
    if isinstance(element, codec.Request):
        assert (element.id, element.method, element.params) == (request_id, method, {"v": value})
    responses = [
        codec.result(element.id, value),
        codec.error(element.id, codec.METHOD_NOT_FOUND, f"no method {method}"),
    ]
    encoded = codec.encode_responses(responses)
    assert json.loads(encoded or b"") == responses


def test_a_cesu_encoded_surrogate_in_the_body_is_read_and_answered():
    [request], _ = codec.decode(b'{"jsonrpc":"2.0","id":"\xed\xa0\x80","method":"Host.ping"}')
    assert isinstance(request, codec.Request)
    assert request.id == "\ud800"
    assert json.loads(codec.dumps(codec.result(request.id, True)))["id"] == "\ud800"


def test_the_fast_path_stays_utf8():
    assert codec.dumps({"m": "héllo/x"}) == '{"m":"héllo/x"}'.encode()


def test_a_batch_over_the_cap_is_one_error_naming_the_cap():
    ping = {"jsonrpc": "2.0", "id": 1, "method": "Host.ping"}
    [invalid], batch = codec.decode(json.dumps([ping] * (codec.MAX_BATCH + 1)).encode())
    assert batch
    assert isinstance(invalid, codec.Invalid)
    assert (invalid.id, invalid.code) == (None, codec.INVALID_REQUEST)
    assert f"at most {codec.MAX_BATCH} requests" in invalid.message
    elements, _ = codec.decode(json.dumps([ping] * codec.MAX_BATCH).encode())
    assert len(elements) == codec.MAX_BATCH
    assert all(isinstance(element, codec.Request) for element in elements)
    [small], _ = codec.decode(json.dumps([ping] * 3).encode(), max_batch=2)
    assert isinstance(small, codec.Invalid)
    assert "at most 2 requests" in small.message


def test_deep_json_is_a_parse_error():
    [invalid], _ = codec.decode(b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(invalid, codec.Invalid)
    assert invalid.code == codec.PARSE_ERROR


def test_a_response_that_cannot_be_encoded_becomes_an_internal_error_for_its_id():
    good = codec.result("a", 1)
    bad = codec.result("b", {1, 2})  # a handler's bug: a set is not JSON
    decoded = json.loads(codec.encode_responses([good, bad]) or b"")
    assert decoded == [good, codec.error("b", codec.INTERNAL_ERROR, "Internal JSON-RPC error")]
    assert json.loads(codec.encode_responses([bad]) or b"")["error"]["code"] == -32603
