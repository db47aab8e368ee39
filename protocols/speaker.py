"""The loudspeaker subscription protocol (wire format; see docs/protocol.md).

Every datagram, in both directions, is::

    offset  size  field
    0       4     magic b"BCS1"
    4       1     type (SUBSCRIBE=1, ACK=2, REFUSE=3, UNSUBSCRIBE=4)
    5       1     L = length of the device id (1..64)
    6       2     N = length of the body (0..1024), big-endian
    8       L     device id, ASCII
    8+L     N     body: a UTF-8 JSON object
    8+L+N   32    HMAC-SHA256 over bytes [0, 8+L+N) keyed with the device key

The device id travels in clear so the server can find the key and check the
MAC before it parses any JSON: nothing an unauthenticated sender writes is
interpreted beyond this fixed header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

MAGIC = b"BCS1"
MAC_BYTES = 32
MAX_BODY = 1024
MAX_DEVICE_ID = 64
HEADER = struct.Struct("!4sBBH")
DEVICE_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.-]*")


class MessageType(IntEnum):
    SUBSCRIBE = 1
    ACK = 2
    REFUSE = 3
    UNSUBSCRIBE = 4
    COMMAND = 5       # server -> device: amplifier and volume (alerts)
    COMMAND_ACK = 6   # device -> server: the command was applied


class ProtocolError(ValueError):
    """A datagram that is not a well-formed message; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """A parsed but not yet authenticated datagram."""

    type: MessageType
    device_id: str
    body: bytes
    signed: bytes
    mac: bytes

    def verify(self, key: bytes) -> bool:
        expected = hmac.new(key, self.signed, hashlib.sha256).digest()
        return hmac.compare_digest(expected, self.mac)

    def json(self) -> dict[str, Any]:
        """Decode the body; only call this after ``verify`` succeeded."""
        try:
            value = json.loads(self.body.decode("utf-8")) if self.body else {}
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProtocolError("malformed", f"body is not UTF-8 JSON: {type(exc).__name__}") from None
        if not isinstance(value, dict):
            raise ProtocolError("malformed", "body is not a JSON object")
        return value


def parse_envelope(data: bytes) -> Envelope:
    if len(data) < HEADER.size + 1 + MAC_BYTES:
        raise ProtocolError("malformed", f"datagram of {len(data)} bytes is too short")
    magic, kind, id_len, body_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("malformed", "bad magic")
    if not 1 <= id_len <= MAX_DEVICE_ID or body_len > MAX_BODY:
        raise ProtocolError("malformed", "device id or body length out of range")
    end = HEADER.size + id_len + body_len
    if len(data) != end + MAC_BYTES:
        raise ProtocolError("malformed", f"length {len(data)} does not match header ({end + MAC_BYTES})")
    try:
        message_type = MessageType(kind)
    except ValueError:
        raise ProtocolError("malformed", f"unknown message type {kind}") from None
    raw_id = data[HEADER.size:HEADER.size + id_len]
    if not DEVICE_ID.fullmatch(raw_id):
        raise ProtocolError("malformed", "device id has characters outside [A-Za-z0-9_.-]")
    return Envelope(type=message_type, device_id=raw_id.decode("ascii"),
                    body=data[HEADER.size + id_len:end], signed=data[:end], mac=data[end:])


def encode_message(message_type: MessageType, device_id: str, body: dict[str, Any], key: bytes) -> bytes:
    raw_id = device_id.encode("ascii")
    raw_body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if not 1 <= len(raw_id) <= MAX_DEVICE_ID or not DEVICE_ID.fullmatch(raw_id):
        raise ValueError(f"invalid device id {device_id!r}")
    if len(raw_body) > MAX_BODY:
        raise ValueError(f"body of {len(raw_body)} bytes exceeds {MAX_BODY}")
    signed = HEADER.pack(MAGIC, int(message_type), len(raw_id), len(raw_body)) + raw_id + raw_body
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


@dataclass(frozen=True)
class SpeakerStatus:
    """What a loudspeaker reports with each keepalive (all optional)."""

    volume: int | None = None
    signal_dbm: int | None = None
    uptime_s: int | None = None
    amplifier_on: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("volume", self.volume), ("signal_dbm", self.signal_dbm),
                                  ("uptime_s", self.uptime_s), ("amp", self.amplifier_on))
                if v is not None}


@dataclass(frozen=True)
class Request:
    """An authenticated SUBSCRIBE or UNSUBSCRIBE."""

    type: MessageType
    device_id: str
    channel: str
    ts_ms: int
    seq: int
    status: SpeakerStatus = field(default_factory=SpeakerStatus)
    cookie: str | None = None
    command: int | None = None  # COMMAND_ACK: the seq of the command applied


def _int(body: dict[str, Any], name: str, lo: int, hi: int, required: bool = True) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError("malformed", f"field {name!r} must be an integer in [{lo}, {hi}]")
    return value


def parse_request(envelope: Envelope) -> Request:
    """The fields of an authenticated request, validated."""
    if envelope.type not in (MessageType.SUBSCRIBE, MessageType.UNSUBSCRIBE, MessageType.COMMAND_ACK):
        raise ProtocolError("unexpected_type", f"a server does not accept {envelope.type.name}")
    body = envelope.json()
    channel = body.get("channel", "")
    if envelope.type is MessageType.SUBSCRIBE and (not isinstance(channel, str) or not 1 <= len(channel) <= 64):
        raise ProtocolError("malformed", "field 'channel' must be a string of 1 to 64 characters")
    raw_status = body.get("status") or {}
    if not isinstance(raw_status, dict):
        raise ProtocolError("malformed", "field 'status' must be an object")
    amp = raw_status.get("amp")
    cookie = body.get("cookie")
    if cookie is not None and (not isinstance(cookie, str) or len(cookie) > 64):
        raise ProtocolError("malformed", "field 'cookie' must be a string of at most 64 characters")
    status = SpeakerStatus(
        volume=_int(raw_status, "volume", 0, 100, required=False),
        signal_dbm=_int(raw_status, "signal_dbm", -200, 50, required=False),
        uptime_s=_int(raw_status, "uptime_s", 0, 2**40, required=False),
        amplifier_on=amp if isinstance(amp, bool) else None,
    )
    return Request(type=envelope.type, device_id=envelope.device_id, channel=str(channel),
                   ts_ms=int(_int(body, "ts", 0, 2**53) or 0), seq=int(_int(body, "seq", 0, 2**63) or 0),
                   status=status, cookie=cookie,
                   command=_int(body, "command", 0, 2**63) if envelope.type is MessageType.COMMAND_ACK else None)
