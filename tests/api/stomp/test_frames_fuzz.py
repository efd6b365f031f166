"""Property tests of the STOMP frame parser: hostile bytes, any cut, and the round trip."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostvisor.api.stomp.frames import Frame, FrameError, FrameParser, Limits, encode

pytestmark = pytest.mark.unit

LIMITS = Limits(max_body=64, max_headers=4, max_header_line=40, max_command=12)
"""Small limits, so that generated inputs reach every limit."""

# Pieces that make near-frames: the parser's branches need more than random bytes.
PIECES = st.sampled_from(
    [
        b"SEND",
        b"CONNECT",
        b"MESSAGE",
        b"send",
        b"\n",
        b"\r\n",
        b"\n\n",
        b":",
        b"content-length:",
        b"content-length:3",
        b"content-length:-1",
        "content-length:²".encode(),
        b"content-length:" + b"9" * 30,
        b"destination:/q",
        b"\x00",
        b"\\",
        b"\\c",
        b"\\n",
        b"\\x",
        b"\xff",
        b"\xed\xa0\x80",  # a surrogate, CESU-encoded: not UTF-8
        "é".encode(),
        b"x" * 50,
    ]
)
STREAMS = st.one_of(
    st.binary(max_size=400),
    st.lists(PIECES | st.binary(max_size=6), max_size=60).map(b"".join),
)


def parse(data: bytes, cuts: list[int]) -> tuple[list[Frame], bool]:
    """Feed `data` cut at `cuts`; return the frames and whether a FrameError ended it."""
    parser = FrameParser(LIMITS)
    frames: list[Frame] = []
    start = 0
    try:
        for end in [*sorted(cuts), len(data)]:
            parser.feed(data[start:end])
            start = max(start, end)
            frames.extend(parser.frames())
    except FrameError:
        return frames, True
    return frames, False


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(STREAMS, st.lists(st.integers(0, 400), max_size=8))
def test_any_bytes_cut_anywhere_raise_nothing_but_frame_error(data: bytes, cuts: list[int]):
    parse(data, cuts)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(STREAMS, st.lists(st.integers(0, 400), max_size=8))
def test_where_the_stream_is_cut_never_changes_what_it_parses_to(data: bytes, cuts: list[int]):
    whole, whole_failed = parse(data, [])
    pieces, pieces_failed = parse(data, [cut for cut in cuts if cut <= len(data)])
    assert pieces_failed == whole_failed
    assert pieces == whole


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=200))
def test_a_broken_frame_is_refused_whatever_follows(first: bytes, more: bytes):
    parser = FrameParser(LIMITS)
    parser.feed(b"SEND\ncontent-length:x\n\n\x00" + first)
    with pytest.raises(FrameError):
        list(parser.frames())


HEADER_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"]),  # frames carry UTF-8: no lone surrogates
    max_size=8,
)
COMMANDS = st.sampled_from(["SEND", "SUBSCRIBE", "MESSAGE", "ERROR", "RECEIPT", "ACK"])


@given(
    COMMANDS,
    st.dictionaries(HEADER_TEXT.filter(bool), HEADER_TEXT, max_size=4),
    st.binary(max_size=64),
    st.integers(1, 30),
)
def test_what_is_encoded_parses_back_the_same_in_any_chunks(
    command: str, headers: dict[str, str], body: bytes, step: int
):
    headers = {name: value for name, value in headers.items() if name != "content-length"}
    data = encode(command, headers, body) * 2
    parser = FrameParser(Limits(max_body=64, max_headers=5, max_header_line=200))
    frames: list[Frame] = []
    for start in range(0, len(data), step):
        parser.feed(data[start : start + step])
        frames.extend(parser.frames())
    expected = Frame(command, {**headers, "content-length": str(len(body))}, body)
    assert frames == [expected, expected]
    assert not parser.partial


@given(st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1))
def test_a_lone_surrogate_in_a_header_we_send_never_breaks_the_frame(text: str):
    data = encode("ERROR", {"message": text}, b"x")
    parser = FrameParser()
    parser.feed(data)
    [frame] = parser.frames()
    assert frame.body == b"x"
    assert frame.headers["message"] == "?" * len(text)


def test_a_dripped_frame_is_partial_until_its_nul():
    parser = FrameParser()
    data = encode("SEND", {"destination": "q"}, b"body")
    for index in range(len(data) - 1):
        parser.feed(data[index : index + 1])
        assert list(parser.frames()) == []
        assert parser.partial
    parser.feed(data[-1:])
    assert [frame.body for frame in parser.frames()] == [b"body"]
    assert not parser.partial
    parser.feed(b"\n\r\n")
    assert list(parser.frames()) == []
    assert not parser.partial  # heart-beats are not a frame


@pytest.mark.parametrize("length", ["²", "٣", "1" * 13, "+1", " 1"])
def test_content_length_takes_ascii_digits_only(length: str):
    parser = FrameParser()
    parser.feed(f"SEND\ncontent-length:{length}\n\n".encode() + b"x" * 5 + b"\x00")
    with pytest.raises(FrameError, match="bad content-length"):
        list(parser.frames())
