"""STOMP frames: the parser and encoder, on the byte level."""

from __future__ import annotations

import pytest

from hostvisor.api.stomp.frames import Frame, FrameError, FrameParser, Limits, encode

pytestmark = pytest.mark.unit


def parse(data: bytes, limits: Limits | None = None) -> list[Frame]:
    parser = FrameParser(limits)
    parser.feed(data)
    return list(parser.frames())


def test_a_frame_with_content_length_may_hold_nul_bytes():
    [frame] = parse(b"SEND\ndestination:q\ncontent-length:3\n\na\x00b\x00")
    assert frame == Frame("SEND", {"destination": "q", "content-length": "3"}, b"a\x00b")


def test_a_frame_without_content_length_ends_at_the_first_nul():
    frames = parse(b"SEND\ndestination:q\n\nhello\x00\n\nSUBSCRIBE\nid:1\ndestination:d\n\n\x00")
    assert [f.command for f in frames] == ["SEND", "SUBSCRIBE"]
    assert frames[0].body == b"hello"


def test_frames_split_anywhere_are_put_back_together():
    data = encode("SEND", {"destination": "jms.topic.vdsm_requests"}, b'{"x": 1}') * 3
    parser = FrameParser()
    frames = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        frames.extend(parser.frames())
    assert len(frames) == 3
    assert all(f.body == b'{"x": 1}' for f in frames)


def test_header_escapes_round_trip_and_the_first_repeat_wins():
    data = encode("MESSAGE", {"destination": "a:b\\c\nd"}, b"")
    [frame] = parse(data)
    assert frame.headers["destination"] == "a:b\\c\nd"
    [frame] = parse(b"SEND\nx:1\nx:2\n\n\x00")
    assert frame.headers["x"] == "1"


def test_connect_headers_are_not_unescaped_and_crlf_is_tolerated():
    [frame] = parse(b"CONNECT\r\naccept-version:1.2\r\nhost:a\\b\r\n\r\n\x00")
    assert frame.headers == {"accept-version": "1.2", "host": "a\\b"}


def test_heartbeat_eols_between_frames_are_counted_and_skipped():
    parser = FrameParser()
    parser.feed(b"\n\n\r\n" + encode("SEND", {}, b"x") + b"\n")
    assert [f.command for f in parser.frames()] == ["SEND"]
    assert parser.heartbeats == 4


def test_every_encoded_frame_has_content_length():
    assert b"content-length:0\n" in encode("RECEIPT", {"receipt-id": "1"})
    assert encode("MESSAGE", {"content-length": "99"}, b"abc").count(b"content-length") == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"SEND\ncontent-length:2\n\nabc\x00", "does not end with NUL"),
        (b"SEND\ncontent-length:x\n\n\x00", "bad content-length"),
        (b"SEND\nno colon here\n\n\x00", "malformed header"),
        (b"SEND\nkey:bad \\q escape\n\n\x00", "bad escape"),
        (b"se nd\n\n\x00", "not a STOMP command"),
        (b"SEND\ncontent-length:100\n\n", "exceeds the limit"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(data: bytes, reason: str):
    with pytest.raises(FrameError, match=reason):
        parse(data, Limits(max_body=10))


def test_limits_on_headers_and_bodies():
    many = b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(10)) + b"\n\x00"
    with pytest.raises(FrameError, match="too many headers"):
        parse(many, Limits(max_headers=5))
    with pytest.raises(FrameError, match="too long"):
        parse(b"SEND\nh:" + b"v" * 200 + b"\n\n\x00", Limits(max_header_line=100))
    with pytest.raises(FrameError, match="body exceeds"):
        parse(b"SEND\n\n" + b"x" * 50, Limits(max_body=10))
    with pytest.raises(FrameError, match="too large"):
        parse(b"SEND\n" + b"h:v\n" * 100, Limits(max_header_line=10, max_headers=5))
