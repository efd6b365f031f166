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
