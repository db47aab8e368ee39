"""The subscription protocol and its controller: only proven devices get audio."""

import json
import random

import pytest

from broadcaster import metrics
from broadcaster.config import SpeakerPolicy
from broadcaster.core.subscriptions import COOKIE_PERIOD_S, Device, SubscriptionTable
from broadcaster.protocols.speaker import (
    MessageType,
    ProtocolError,
    encode_message,
    parse_envelope,
    parse_request,
)

KEY = b"0123456789abcdef-secret"
OTHER_KEY = b"another-device-secret-key"
NOW = 1_800_000_000.0
ADDR = ("127.0.0.1", 40000)


def rejected(reason: str) -> float:
    return metrics.CORE_REGISTRY.get_sample_value("broadcaster_datagrams_rejected_total", {"reason": reason}) or 0.0


def make_table(changes: list[str] | None = None) -> SubscriptionTable:
    devices = [Device("spk-1", KEY, "ch1", "h1"), Device("spk-2", OTHER_KEY, "ch2", "h2")]
    return SubscriptionTable(devices, SpeakerPolicy(keepalive_s=5, missed_keepalives=3, replay_window_s=30),
                             channel_info=lambda c: {"ssrc": 7, "payload_type": 111} if c in ("ch1", "ch2") else None,
                             on_change=(changes.append if changes is not None else lambda c: None))


def subscribe(device: str = "spk-1", key: bytes = KEY, channel: str = "ch1", ts: float = NOW, seq: int = 1,
              **extra: object) -> bytes:
    body = {"channel": channel, "ts": int(ts * 1000), "seq": seq, **extra}
    return encode_message(MessageType.SUBSCRIBE, device, body, key)


def test_envelope_round_trip_and_layout() -> None:
    data = subscribe()
    assert data[:4] == b"BCS1" and data[4] == 1 and data[5] == len("spk-1")
    body_len = int.from_bytes(data[6:8], "big")
    assert data[8:13] == b"spk-1"
    assert json.loads(data[13:13 + body_len]) == {"channel": "ch1", "ts": int(NOW * 1000), "seq": 1}
    assert len(data) == 13 + body_len + 32
    envelope = parse_envelope(data)
    assert envelope.verify(KEY) and not envelope.verify(OTHER_KEY)
    request = parse_request(envelope)
    assert (request.device_id, request.channel, request.seq) == ("spk-1", "ch1", 1)


def handshake(table: SubscriptionTable, *, seq: int = 1, address: tuple[str, int] = ADDR, now: float = NOW,
              device: str = "spk-1", key: bytes = KEY, channel: str = "ch1") -> bytes | None:
    """First contact gets a cookie; echoing it from the same address starts the audio."""
    challenge = table.handle(subscribe(device, key, channel, ts=now, seq=seq), address, now)
    assert challenge is not None
    body = parse_envelope(challenge).json()
    if body.get("verified") is not False:
        return challenge
    return table.handle(subscribe(device, key, channel, ts=now, seq=seq + 1, cookie=body["cookie"]), address, now)


def test_documented_test_vector() -> None:
    """docs/protocol.md publishes this datagram for device makers."""
    data = encode_message(MessageType.SUBSCRIBE, "spk-1", {"channel": "ch1", "ts": 1800000000000, "seq": 1},
                          b"0123456789abcdef-secret")
    assert len(data) == 89
    assert data[:13].hex(" ") == "42 43 53 31 01 05 00 2c 73 70 6b 2d 31"
    assert data[-32:].hex() == "ab9d5b60b6d98c4cf89f8dbac4d07a5d8cfb68e06fd5373297e2cc6f316c5058"


def test_first_contact_gets_a_cookie_and_no_audio() -> None:
    table = make_table()
    request = subscribe()
    reply = table.handle(request, ADDR, NOW)
    assert reply is not None and len(reply) <= len(request) + 80, "no amplification worth the name"
    envelope = parse_envelope(reply)
    assert envelope.type is MessageType.ACK and envelope.verify(KEY)
    body = envelope.json()
    assert body["verified"] is False and len(body["cookie"]) == 32 and "rtp" not in body
    assert table.addresses("ch1") == []


def test_cookie_is_bound_to_the_address() -> None:
    table = make_table()
    challenge = table.handle(subscribe(seq=1), ADDR, NOW)
    assert challenge is not None
    cookie = parse_envelope(challenge).json()["cookie"]
    elsewhere = ("127.0.0.7", 4000)
    reply = table.handle(subscribe(seq=2, cookie=cookie), elsewhere, NOW)
    assert reply is not None and parse_envelope(reply).json()["verified"] is False
    assert table.addresses("ch1") == []
    later = NOW + COOKIE_PERIOD_S  # a cookie is still good in the next period
    reply = table.handle(subscribe(seq=3, ts=later, cookie=cookie), ADDR, later)
    assert reply is not None and parse_envelope(reply).json()["verified"] is True
    assert table.addresses("ch1") == [ADDR]


def test_valid_subscription_is_acknowledged_and_signed() -> None:
    changes: list[str] = []
    table = make_table(changes)
    challenge = table.handle(subscribe(seq=1), ADDR, NOW)
    assert challenge is not None
    cookie = parse_envelope(challenge).json()["cookie"]
    reply = table.handle(subscribe(seq=2, cookie=cookie, status={"volume": 70, "signal_dbm": -80, "uptime_s": 5}),
                         ADDR, NOW)
    assert reply is not None
    envelope = parse_envelope(reply)
    assert envelope.type is MessageType.ACK and envelope.device_id == "spk-1"
    assert envelope.verify(KEY), "the device can authenticate the server's reply"
    body = envelope.json()
    assert body["seq"] == 2 and body["rtp"]["ssrc"] == 7 and body["expires_s"] == 15 and body["verified"]
    assert table.addresses("ch1") == [ADDR]
    assert table.subscriptions["spk-1"].status.volume == 70
    assert changes == ["ch1"]


@pytest.mark.parametrize("data, reason", [
    (b"", "malformed"),
    (b"GET / HTTP/1.0\r\n\r\n" + b"x" * 40, "malformed"),
    (subscribe()[:-1], "malformed"),
    (subscribe() + b"\0", "malformed"),
    (subscribe(device="ghost", key=KEY), "unknown_device"),
    (subscribe(key=OTHER_KEY), "bad_mac"),
    (subscribe(ts=NOW - 31), "stale_timestamp"),
    (subscribe(ts=NOW + 31), "stale_timestamp"),
])
def test_bad_datagrams_get_no_reply_and_no_audio(data: bytes, reason: str) -> None:
    table = make_table()
    before = rejected(reason)
    assert table.handle(data, ADDR, NOW) is None
    assert rejected(reason) == before + 1
    assert table.addresses("ch1") == []


def test_tampered_body_fails_the_mac() -> None:
    data = bytearray(subscribe())
    data[20] ^= 0x01
    table = make_table()
    assert table.handle(bytes(data), ADDR, NOW) is None
    assert table.addresses("ch1") == []


def test_replayed_datagram_is_rejected_even_from_another_address() -> None:
    table = make_table()
    assert handshake(table, seq=3) is not None
    cookie = table.cookie("spk-1", ADDR, NOW)
    first = subscribe(seq=5, cookie=cookie)
    assert table.handle(first, ADDR, NOW) is not None
    before = rejected("replay")
    attacker = ("127.0.0.9", 5555)
    assert table.handle(first, attacker, NOW + 1) is None
    assert table.handle(subscribe(seq=4), attacker, NOW + 1) is None  # older sequence, same ms
    assert rejected("replay") == before + 2
    assert table.addresses("ch1") == [ADDR]


def test_device_reboot_with_fresh_timestamp_and_sequence_zero_is_accepted() -> None:
    table = make_table()
    assert handshake(table, seq=900) is not None
    reply = table.handle(subscribe(ts=NOW + 2, seq=0, cookie=table.cookie("spk-1", ADDR, NOW)), ADDR, NOW + 2)
    assert reply is not None and parse_envelope(reply).json()["verified"] is True


def test_wrong_channel_is_refused_with_a_signed_reason() -> None:
    table = make_table()
    reply = table.handle(subscribe(channel="ch2"), ADDR, NOW)
    assert reply is not None
    envelope = parse_envelope(reply)
    assert envelope.type is MessageType.REFUSE and envelope.verify(KEY)
    assert envelope.json()["reason"] == "channel_not_allowed"
    assert table.addresses("ch2") == [] and table.addresses("ch1") == []


def test_keepalives_extend_and_silence_expires() -> None:
    changes: list[str] = []
    table = make_table(changes)
    cookie = table.cookie("spk-1", ADDR, NOW)
    for i in range(4):
        assert table.handle(subscribe(ts=NOW + 5 * i, seq=i, cookie=cookie), ADDR, NOW + 5 * i) is not None
        assert table.expire(NOW + 5 * i) == []
    assert changes == ["ch1"]  # keepalives do not rebuild the send list
    assert table.expire(NOW + 15 + 14.9) == []
    gone = table.expire(NOW + 15 + 15.1)
    assert [s.device_id for s in gone] == ["spk-1"]
    assert table.addresses("ch1") == [] and changes == ["ch1", "ch1"]


def test_address_change_moves_the_subscription() -> None:
    table = make_table()
    handshake(table, seq=1)
    moved = ("127.0.0.1", 40001)
    handshake(table, seq=3, address=moved, now=NOW + 1)
    assert table.addresses("ch1") == [moved]


def test_a_new_address_gets_audio_only_after_proving_itself() -> None:
    table = make_table()
    handshake(table, seq=1)
    spoofed = ("127.0.0.66", 666)
    old_cookie = table.cookie("spk-1", ADDR, NOW)
    table.handle(subscribe(seq=3, cookie=old_cookie), spoofed, NOW + 1)  # a captured, re-sourced keepalive
    assert table.addresses("ch1") == [ADDR]


def test_unsubscribe_ends_at_once() -> None:
    table = make_table()
    handshake(table, seq=1)
    bye = encode_message(MessageType.UNSUBSCRIBE, "spk-1", {"ts": int(NOW * 1000), "seq": 3}, KEY)
    reply = table.handle(bye, ADDR, NOW)
    assert reply is not None and parse_envelope(reply).json()["expires_s"] == 0
    assert table.addresses("ch1") == []


def test_authenticated_but_malformed_fields_are_rejected() -> None:
    table = make_table()
    for body in ({"channel": "ch1", "ts": "soon", "seq": 1},
                 {"channel": "", "ts": int(NOW * 1000), "seq": 1},
                 {"channel": "ch1", "ts": int(NOW * 1000), "seq": -1},
                 {"channel": "ch1", "ts": int(NOW * 1000), "seq": 1, "status": {"volume": 101}}):
        assert table.handle(encode_message(MessageType.SUBSCRIBE, "spk-1", body, KEY), ADDR, NOW) is None
    assert table.addresses("ch1") == []


def test_random_garbage_never_raises() -> None:
    table = make_table()
    rng = random.Random(1)
    valid = subscribe()
    for _ in range(5000):
        if rng.random() < 0.5:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
            data = bytes(mutated)
            if data == valid:
                continue  # a "mutation" that wrote the same byte back
        assert table.handle(data, ADDR, NOW) is None
    assert table.addresses("ch1") == []


def test_server_messages_are_not_accepted_by_the_server() -> None:
    table = make_table()
    ack = encode_message(MessageType.ACK, "spk-1", {"ts": int(NOW * 1000), "seq": 1}, KEY)
    with pytest.raises(ProtocolError):
        parse_request(parse_envelope(ack))
    assert table.handle(ack, ADDR, NOW) is None


def test_command_acks_count_only_from_the_subscribed_address() -> None:
    """Commands are signed by control (control/devices.py, tested with the whole server);
    their acknowledgements are checked here, by the table that knows the proven address."""
    table = make_table()
    handshake(table, seq=1)
    seq = 7
    acks: list[tuple[str, int]] = []
    table.on_command_ack = lambda device, command: acks.append((device, command))
    ack = encode_message(MessageType.COMMAND_ACK, "spk-1", {"ts": int(NOW * 1000) + 5, "seq": 50, "command": seq}, KEY)
    assert table.handle(ack, ("127.0.0.5", 5), NOW) is None and acks == [], "only from the subscribed address"
    ack2 = encode_message(MessageType.COMMAND_ACK, "spk-1", {"ts": int(NOW * 1000) + 6, "seq": 51, "command": seq},
                          KEY)
    assert table.handle(ack2, ADDR, NOW) is None and acks == [("spk-1", seq)]
    assert table.handle(ack2, ADDR, NOW) is None and len(acks) == 1, "replays are not counted twice"
