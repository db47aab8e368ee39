"""RFC 6455 WebSocket framing and the server's opening handshake, without I/O.

The webcast ingest (protocols/webcast.py) feeds the bytes a client sent into
``FrameReader.feed`` and gets whole messages and control frames back; it
writes what ``encode_frame``/``close_frame`` return. Everything a client can
make this module hold is bounded before it is buffered: a frame's header
announces its length, and a message (all its fragments together) longer than
``max_message`` is refused from that header, so a lying length costs nothing.

Anything that breaks the RFC raises ``WebSocketError`` with the close code to
answer it with (1002 protocol error, 1007 text that is not UTF-8, 1009 too
big), and nothing else: tests/unit/test_websocket.py fuzzes that.

Twisted 26 has ``twisted.web.websocket``, but it is a twisted.web resource
on top of the wsproto package: the port's first request is routed by the
Sniffer (protocols/sniffer.py) before twisted.web sees it, and its bounds
(head, hello, frame sizes) are this module's, so a small parser fits better
than a second dependency.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Literal

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY))
CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))
MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON = 123  # a close frame's payload is 2 bytes of code and at most 123 of reason
# RFC 6455 §7.4: codes a peer may send in a close frame (1004-1006 and 1015 are never sent on the wire).
SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG = 1002, 1007, 1008, 1009


class WebSocketError(ValueError):
    """The peer broke RFC 6455 (or a bound): close the connection with ``code``."""

    def __init__(self, code: int, reason: str, label: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.label = code, reason, label  # label: for the metric


@dataclass(frozen=True)
class Message:
    """A whole data message (its fragments joined)."""

    kind: Literal["text", "binary"]
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")  # checked when the message was read


@dataclass(frozen=True)
class Ping:
    data: bytes


@dataclass(frozen=True)
class Pong:
    data: bytes


@dataclass(frozen=True)
class Close:
    code: int | None  # None: the peer sent no code (an empty close frame)
    reason: str


Event = Message | Ping | Pong | Close


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation (C speed, no per-byte Python loop)."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class FrameReader:
    """Bytes from a client in, events out. ``max_message`` bounds a data message (fragments
    together); it may be changed between feeds (the webcast hello has a smaller bound)."""

    def __init__(self, max_message: int = 1 << 20, require_mask: bool = True) -> None:
        self.max_message = max_message
        self.require_mask = require_mask
        self.closed = False  # a Close was read: nothing after it is parsed
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_kind: Literal["text", "binary"] | None = None
        self._fragment_bytes = 0

    def feed(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        self._buffer += data
        events: list[Event] = []
        while not self.closed:
            event = self._next()
            if event is None:
                break
            if event is not _PARTIAL:
                events.append(event)  # type: ignore[arg-type]
        return events

    def _next(self) -> Event | object | None:
        """One frame from the buffer: an event, _PARTIAL (a fragment kept), or None (need more bytes)."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin, opcode, masked, length = first & 0x80, first & 0x0F, second & 0x80, second & 0x7F
        if first & 0x70:
            raise WebSocketError(PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)", "bad_frame")
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            raise WebSocketError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}", "bad_frame")
        if self.require_mask and not masked:
            raise WebSocketError(PROTOCOL_ERROR, "client frames must be masked", "unmasked")
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = int.from_bytes(buf[2:10], "big"), 10
            if length >> 63:
                raise WebSocketError(PROTOCOL_ERROR, "payload length has its top bit set", "bad_frame")
        if opcode in CONTROL_OPCODES:
            if not fin:
                raise WebSocketError(PROTOCOL_ERROR, "a control frame must not be fragmented", "bad_frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise WebSocketError(PROTOCOL_ERROR, "a control frame's payload is at most 125 bytes", "bad_frame")
        else:
            self._check_data(opcode, length)
        if masked:
            if len(buf) < pos + 4:
                return None
            mask, pos = bytes(buf[pos:pos + 4]), pos + 4
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos:pos + length])
        del buf[:pos + length]
        if masked:
            payload = _unmask(payload, mask)
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_CLOSE:
            self.closed = True
            return parse_close(payload)
        return self._data(opcode, bool(fin), payload)

    def _check_data(self, opcode: int, length: int) -> None:
        if opcode == OP_CONTINUATION and self._fragment_kind is None:
            raise WebSocketError(PROTOCOL_ERROR, "a continuation frame with no message to continue", "bad_frame")
        if opcode != OP_CONTINUATION and self._fragment_kind is not None:
            raise WebSocketError(PROTOCOL_ERROR, "a new message inside a fragmented one", "bad_frame")
        if self._fragment_bytes + length > self.max_message:
            raise WebSocketError(TOO_BIG, f"a message is at most {self.max_message} bytes", "too_big")

    def _data(self, opcode: int, fin: bool, payload: bytes) -> Message | object:
        if opcode != OP_CONTINUATION:
            self._fragment_kind = "text" if opcode == OP_TEXT else "binary"
        self._fragments.append(payload)
        self._fragment_bytes += len(payload)
        if not fin:
            return _PARTIAL
        kind = self._fragment_kind
        assert kind is not None
        data = b"".join(self._fragments)
        self._fragments, self._fragment_kind, self._fragment_bytes = [], None, 0
        if kind == "text":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketError(INVALID_DATA, "a text message that is not UTF-8", "bad_utf8") from None
        return Message(kind, data)


_PARTIAL = object()


def parse_close(payload: bytes) -> Close:
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        raise WebSocketError(PROTOCOL_ERROR, "a close frame with a one-byte payload", "bad_frame")
    code = int.from_bytes(payload[:2], "big")
    if code not in SENDABLE_CODES and not 3000 <= code <= 4999:
        raise WebSocketError(PROTOCOL_ERROR, f"close code {code} may not be sent", "bad_frame")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(INVALID_DATA, "a close reason that is not UTF-8", "bad_utf8") from None
    return Close(code, reason)


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One frame; a server's are unmasked (``mask`` is for clients: tests)."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(bit | 127)
        head += n.to_bytes(8, "big")
    if mask is None:
        return bytes(head) + payload
    return bytes(head) + mask + _unmask(payload, mask)


def close_frame(code: int, reason: str = "", mask: bytes | None = None) -> bytes:
    """A close frame; the reason is cut to 123 bytes of UTF-8, at a character."""
    data = reason.encode("utf-8")
    if len(data) > MAX_CLOSE_REASON:
        data = data[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + data, mask=mask)


# --- the opening handshake (RFC 6455 §4.2) ----------------------------------------------------


class HandshakeError(ValueError):
    """Not a valid WebSocket upgrade: answer with an HTTP ``status`` (and its extra headers)."""

    def __init__(self, status: int, message: str, headers: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def tokens(value: str) -> list[str]:
    """A comma-separated header's tokens, lower-cased."""
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (§4.2.2 item 5.4)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def check_upgrade(method: str, version: str, headers: dict[str, str]) -> str:
    """The client's key, if this request is a valid upgrade (§4.2.1); ``headers`` have lower-case names."""
    if method != "GET":
        raise HandshakeError(405, "a WebSocket upgrade is a GET", "Allow: GET\r\n")
    if version != "HTTP/1.1":
        raise HandshakeError(400, "a WebSocket upgrade needs HTTP/1.1")
    if "websocket" not in tokens(headers.get("upgrade", "")):
        raise HandshakeError(400, "Upgrade: websocket is missing")
    if "upgrade" not in tokens(headers.get("connection", "")):
        raise HandshakeError(400, "Connection: Upgrade is missing")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(426, "only WebSocket version 13 (RFC 6455) is spoken here",
                             "Sec-WebSocket-Version: 13\r\n")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    return key


def accept_response(key: str, subprotocol: str | None) -> bytes:
    """The 101 that completes the handshake."""
    chosen = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (f"HTTP/1.1 101 Switching Protocols\r\nServer: broadcaster\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n{chosen}\r\n").encode("latin-1")
