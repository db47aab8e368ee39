"""RFC 6455 framing and handshake (protocols/websocket.py): bytes in, events out, and only its own error."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broadcaster.protocols import websocket as ws

MASK = b"\x37\xfa\x21\x3d"


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return ws.encode_frame(opcode, payload, fin=fin, mask=MASK)


def test_accept_key_is_the_rfc_example() -> None:
    # RFC 6455 §1.3's worked example.
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_masked_text_frame_from_the_rfc() -> None:
    # RFC 6455 §5.7: a single-frame masked text message "Hello".
    events = ws.FrameReader().feed(bytes.fromhex("818537fa213d7f9f4d5158"))
    assert events == [ws.Message("text", b"Hello")]
    assert events[0].text == "Hello"  # type: ignore[union-attr]


def test_frames_split_anywhere_give_the_same_events() -> None:
    stream = (masked(ws.OP_BINARY, bytes(range(256)) * 300) + masked(ws.OP_PING, b"p")
              + masked(ws.OP_TEXT, "xin chào".encode()) + masked(ws.OP_CLOSE, (1000).to_bytes(2, "big") + b"bye"))
    for step in (1, 7, 1000, len(stream)):
        reader = ws.FrameReader()
        events: list[ws.Event] = []
        for i in range(0, len(stream), step):
            events += reader.feed(stream[i:i + step])
        assert events == [ws.Message("binary", bytes(range(256)) * 300), ws.Ping(b"p"),
                          ws.Message("text", "xin chào".encode()), ws.Close(1000, "bye")]
        assert reader.closed


def test_fragmented_message_with_a_ping_between_fragments() -> None:
    reader = ws.FrameReader()
    events = reader.feed(masked(ws.OP_BINARY, b"ab", fin=False) + masked(ws.OP_PING, b"")
                         + masked(ws.OP_CONTINUATION, b"cd", fin=False) + masked(ws.OP_CONTINUATION, b"ef"))
    assert events == [ws.Ping(b""), ws.Message("binary", b"abcdef")]


@pytest.mark.parametrize("data, code, label", [
    (ws.encode_frame(ws.OP_BINARY, b"x"), 1002, "unmasked"),
    (bytes([0x80 | 0x40 | ws.OP_BINARY, 0x80]) + MASK, 1002, "bad_frame"),  # RSV1 without an extension
    (bytes([0x83, 0x80]) + MASK, 1002, "bad_frame"),  # opcode 3 is reserved
    (masked(ws.OP_PING, b"x", fin=False), 1002, "bad_frame"),
    (masked(ws.OP_PING, b"x" * 126), 1002, "bad_frame"),
    (masked(ws.OP_CONTINUATION, b"x"), 1002, "bad_frame"),
    (masked(ws.OP_TEXT, b"a", fin=False) + masked(ws.OP_BINARY, b"b"), 1002, "bad_frame"),
    (masked(ws.OP_TEXT, b"\xff\xfe"), 1007, "bad_utf8"),
    (masked(ws.OP_CLOSE, b"\x03"), 1002, "bad_frame"),
    (masked(ws.OP_CLOSE, (1005).to_bytes(2, "big")), 1002, "bad_frame"),
    (masked(ws.OP_CLOSE, (1000).to_bytes(2, "big") + b"\xff"), 1007, "bad_utf8"),
    (bytes([0x82, 0xFF]) + (1 << 63).to_bytes(8, "big"), 1002, "bad_frame"),
])
def test_protocol_errors_carry_their_close_code(data: bytes, code: int, label: str) -> None:
    with pytest.raises(ws.WebSocketError) as error:
        ws.FrameReader().feed(data)
    assert (error.value.code, error.value.label) == (code, label)


def test_a_message_over_the_bound_is_refused_from_its_header() -> None:
    reader = ws.FrameReader(max_message=1000)
    with pytest.raises(ws.WebSocketError) as error:
        reader.feed(bytes([0x82, 0xFF]) + (1 << 40).to_bytes(8, "big"))  # announces a terabyte, sends none
    assert error.value.code == 1009
    reader = ws.FrameReader(max_message=1000)
    with pytest.raises(ws.WebSocketError):  # fragments count together
        reader.feed(masked(ws.OP_BINARY, b"x" * 600, fin=False) + masked(ws.OP_CONTINUATION, b"x" * 600))


def test_close_frames_and_reason_cut_at_a_character() -> None:
    frame = ws.close_frame(4401, "ê" * 100)
    assert len(frame) == 2 + 2 + 122  # 61 two-byte characters fit in 123 bytes
    reader = ws.FrameReader(require_mask=False)
    (event,) = reader.feed(frame)
    assert event == ws.Close(4401, "ê" * 61)
    assert ws.FrameReader().feed(masked(ws.OP_CLOSE, b"")) == [ws.Close(None, "")]


def test_nothing_is_read_after_a_close() -> None:
    reader = ws.FrameReader()
    assert reader.feed(masked(ws.OP_CLOSE, b"") + b"\x00garbage") == [ws.Close(None, "")]
    assert reader.feed(b"more garbage") == []


def upgrade_headers(**extra: str) -> dict[str, str]:
    headers = {"upgrade": "websocket", "connection": "keep-alive, Upgrade", "sec-websocket-version": "13",
               "sec-websocket-key": base64.b64encode(os.urandom(16)).decode()}
    headers.update(extra)
    return headers


def test_handshake_checks() -> None:
    headers = upgrade_headers()
    assert ws.check_upgrade("GET", "HTTP/1.1", headers) == headers["sec-websocket-key"]
    response = ws.accept_response(headers["sec-websocket-key"], "webcast").decode()
    assert response.startswith("HTTP/1.1 101 ") and "Sec-WebSocket-Protocol: webcast\r\n" in response
    assert f"Sec-WebSocket-Accept: {ws.accept_key(headers['sec-websocket-key'])}\r\n" in response
    cases = [("POST", "HTTP/1.1", upgrade_headers(), 405), ("GET", "HTTP/1.0", upgrade_headers(), 400),
             ("GET", "HTTP/1.1", upgrade_headers(upgrade="h2c"), 400),
             ("GET", "HTTP/1.1", upgrade_headers(connection="close"), 400),
             ("GET", "HTTP/1.1", upgrade_headers(**{"sec-websocket-version": "8"}), 426),
             ("GET", "HTTP/1.1", upgrade_headers(**{"sec-websocket-key": "c2hvcnQ="}), 400),
             ("GET", "HTTP/1.1", upgrade_headers(**{"sec-websocket-key": "not base64!"}), 400)]
    for method, version, bad, status in cases:
        with pytest.raises(ws.HandshakeError) as error:
            ws.check_upgrade(method, version, bad)
        assert error.value.status == status
        if status == 426:
            assert "Sec-WebSocket-Version: 13" in error.value.headers


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chunks=st.lists(st.binary(max_size=300), max_size=8), max_message=st.integers(0, 2000),
       require_mask=st.booleans())
def test_fuzz_reader_raises_only_its_own_error(chunks: list[bytes], max_message: int, require_mask: bool) -> None:
    reader = ws.FrameReader(max_message=max_message, require_mask=require_mask)
    try:
        for chunk in chunks:
            for event in reader.feed(chunk):
                if isinstance(event, ws.Message):
                    assert len(event.data) <= max_message
                    if event.kind == "text":
                        event.text  # noqa: B018 (decodes: checked as read)
                elif isinstance(event, ws.Ping | ws.Pong):
                    assert len(event.data) <= 125
    except ws.WebSocketError as exc:
        assert exc.code in (1002, 1007, 1009)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(frames=st.lists(st.tuples(st.sampled_from([ws.OP_TEXT, ws.OP_BINARY, ws.OP_PING]),
                                 st.binary(max_size=200)), max_size=6),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), max_size=4))
def test_fuzz_damaged_valid_streams(frames: list[tuple[int, bytes]], flips: list[tuple[int, int]]) -> None:
    data = bytearray(b"".join(masked(op, p if op != ws.OP_TEXT else p.hex().encode()) for op, p in frames))
    for where, bit in flips:
        if data:
            data[where % len(data)] ^= 1 << bit
    try:
        ws.FrameReader(max_message=1000).feed(bytes(data))
    except ws.WebSocketError:
        pass
