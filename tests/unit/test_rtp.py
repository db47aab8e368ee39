"""RTP wire format: hand-written packets per RFC 3550 section 5.1, hostile input, wraparound."""

from __future__ import annotations

import random
import struct

import pytest

from broadcaster.protocols.rtp import (
    OPUS_CLOCK_RATE,
    OPUS_PAYLOAD_TYPE,
    RTP_VERSION,
    RtpError,
    RtpPacket,
    RtpPacketizer,
    parse_rtp,
    rtp_sequence,
    seq_delta,
)

# V=2 P=0 X=0 CC=0 | M=1 PT=111 | seq 0x1234 | ts 0xDEADBEEF | SSRC 0x01020304 | payload
KNOWN = bytes.fromhex(
    "80"  # 10 0 0 0000
    "ef"  # 1 1101111  (marker, PT 111)
    "1234"
    "deadbeef"
    "01020304"
    "fcfffe"  # an Opus TOC byte and two payload bytes
)


def test_constants() -> None:
    assert RTP_VERSION == 2
    assert OPUS_PAYLOAD_TYPE == 111
    assert OPUS_CLOCK_RATE == 48000


def test_parse_known_packet_every_field_and_serialize_round_trips() -> None:
    packet = parse_rtp(KNOWN)
    assert packet.payload_type == 111
    assert packet.marker is True
    assert packet.sequence == 0x1234
    assert packet.timestamp == 0xDEADBEEF
    assert packet.ssrc == 0x01020304
    assert packet.csrcs == ()
    assert packet.payload == b"\xfc\xff\xfe"
    assert isinstance(packet.payload, bytes)
    assert packet.serialize() == KNOWN


@pytest.mark.parametrize(("second_byte", "marker", "payload_type"), [
    (0x00, False, 0),
    (0x80, True, 0),
    (0x7F, False, 127),
    (0xFF, True, 127),
    (0x6F, False, 111),
    (0xEF, True, 111),
])
def test_marker_and_payload_type_bits(second_byte: int, marker: bool, payload_type: int) -> None:
    data = bytes([0x80, second_byte]) + KNOWN[2:]
    packet = parse_rtp(data)
    assert packet.marker is marker
    assert packet.payload_type == payload_type
    assert packet.serialize() == data


def test_csrc_list() -> None:
    data = bytes.fromhex("82" "6f" "0001" "00000960" "cafebabe" "11111111" "22222222") + b"opus"
    packet = parse_rtp(data)
    assert packet.csrcs == (0x11111111, 0x22222222)
    assert packet.ssrc == 0xCAFEBABE
    assert packet.timestamp == 0x960
    assert packet.payload == b"opus"
    assert packet.serialize() == data


def test_fifteen_csrcs_is_the_maximum() -> None:
    csrcs = tuple(range(1, 16))
    packet = RtpPacket(payload_type=111, sequence=1, timestamp=2, ssrc=3, payload=b"x", csrcs=csrcs)
    # CC=15 in the low nibble of the first byte, then the 15 CSRCs after the SSRC, in order.
    expected = bytes.fromhex("8f" "6f" "0001" "00000002" "00000003"
                             "00000001" "00000002" "00000003" "00000004" "00000005"
                             "00000006" "00000007" "00000008" "00000009" "0000000a"
                             "0000000b" "0000000c" "0000000d" "0000000e" "0000000f") + b"x"
    assert packet.serialize() == expected
    assert parse_rtp(expected).csrcs == csrcs
    with pytest.raises(RtpError):
        RtpPacket(payload_type=111, sequence=1, timestamp=2, ssrc=3, payload=b"x", csrcs=tuple(range(16)))


def test_header_extension_is_skipped() -> None:
    # X=1; extension header: profile 0xBEDE, length 2 words, then 8 bytes of extension data.
    data = (bytes.fromhex("90" "6f" "0002" "00000000" "00000001" "bede" "0002")
            + b"\x10\xaa\x00\x00" + b"\x21\xbb\xcc\x00" + b"payload")
    packet = parse_rtp(data)
    assert packet.payload == b"payload"
    assert packet.sequence == 2
    # The extension is not carried over: re-serializing drops it.
    assert packet.serialize() == bytes.fromhex("80" "6f" "0002" "00000000" "00000001") + b"payload"


def test_empty_header_extension() -> None:
    data = bytes.fromhex("90" "6f" "0002" "00000000" "00000001" "1000" "0000") + b"p"
    assert parse_rtp(data).payload == b"p"


def test_csrc_and_extension_together() -> None:
    data = bytes.fromhex("91" "6f" "0003" "00000000" "00000001" "aaaaaaaa" "abcd" "0001" "01020304") + b"pl"
    packet = parse_rtp(data)
    assert packet.csrcs == (0xAAAAAAAA,)
    assert packet.payload == b"pl"


def test_padding_is_removed() -> None:
    data = bytes.fromhex("a0" "6f" "0004" "00000000" "00000001") + b"opus" + b"\x00\x00\x03"
    packet = parse_rtp(data)
    assert packet.payload == b"opus"
    assert packet.sequence == 4


def test_padding_may_fill_everything_after_the_header() -> None:
    data = bytes.fromhex("a0" "6f" "0004" "00000000" "00000001") + b"\x00\x00\x00\x04"
    assert parse_rtp(data).payload == b""


def test_padding_with_csrc_and_extension() -> None:
    data = (bytes.fromhex("b1" "6f" "0005" "00000000" "00000001" "aaaaaaaa" "abcd" "0001" "01020304")
            + b"pl" + b"\x00\x02")
    packet = parse_rtp(data)
    assert packet.csrcs == (0xAAAAAAAA,)
    assert packet.payload == b"pl"


@pytest.mark.parametrize("tail", [
    b"",  # P set but nothing after the header
    b"opus\x00",  # a count of 0: the count byte counts itself, so at least 1
    b"opus\x06",  # more padding than bytes after the header
    b"\xff",
])
def test_bad_padding_rejected(tail: bytes) -> None:
    with pytest.raises(RtpError, match="padding"):
        parse_rtp(bytes.fromhex("a0" "6f" "0004" "00000000" "00000001") + tail)


def test_extension_longer_than_packet_rejected() -> None:
    data = bytes.fromhex("90" "6f" "0002" "00000000" "00000001" "bede" "0003") + b"\x00" * 8
    with pytest.raises(RtpError, match="extension"):
        parse_rtp(data)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_version_other_than_2_rejected(version: int) -> None:
    data = bytes([version << 6 | (KNOWN[0] & 0x3F)]) + KNOWN[1:]
    with pytest.raises(RtpError, match="version"):
        parse_rtp(data)


def test_every_truncation_of_a_padded_packet_raises() -> None:
    # With the P bit set every cut is detectable: a prefix that ends in the
    # payload ends in a byte (0xF0) larger than what follows the header, one
    # that ends in the padding ends in a count of 0.
    data = (bytes.fromhex("b2" "6f" "0005" "00000000" "00000001" "aaaaaaaa" "bbbbbbbb" "abcd" "0002")
            + b"\x01\x02\x03\x04\x05\x06\x07\x08" + b"\xf0" * 20 + b"\x00\x00\x00\x04")
    assert parse_rtp(data).payload == b"\xf0" * 20
    for length in range(len(data)):
        with pytest.raises(RtpError):
            parse_rtp(data[:length])


def test_every_truncation_of_a_header_raises() -> None:
    # Without padding, RTP has no length field: a packet cut inside its
    # payload is indistinguishable from a shorter payload. Every cut inside
    # the header (fixed part, CSRC list, extension) must be caught.
    header = bytes.fromhex("93" "ef" "ffff" "ffffffff" "ffffffff" "01010101" "02020202" "03030303"
                           "ffff" "0001" "ffffffff")
    data = header + b"payload"
    assert parse_rtp(data).payload == b"payload"
    for length in range(len(header)):
        with pytest.raises(RtpError):
            parse_rtp(data[:length])
    for length in range(len(header), len(data) + 1):
        assert parse_rtp(data[:length]).payload == b"payload"[:length - len(header)]


def payload_bounds(data: bytes) -> tuple[int, int] | None:
    """Where RFC 3550 puts the payload of ``data``, or None if the packet is malformed: a second reading of
    section 5.1 (fixed header, CC CSRCs, optional extension, padding count in the last byte), written for the
    test and independent of parse_rtp, to compare the two on random input."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    start = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < start + 4:
            return None
        start += 4 + 4 * int.from_bytes(data[start + 2:start + 4], "big")
    if len(data) < start:
        return None
    end = len(data)
    if data[0] & 0x20:
        if end == start or data[-1] == 0 or data[-1] > end - start:
            return None
        end -= data[-1]
    return start, end


def test_random_bytes_raise_nothing_but_rtp_error() -> None:
    rng = random.Random(3550)
    parsed = refused = 0
    for _ in range(10_000):
        data = rng.randbytes(rng.randrange(0, 48))
        if data and rng.random() < 0.5:
            data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]  # version 2 reaches the deeper checks
        bounds = payload_bounds(data)
        try:
            packet = parse_rtp(data)
        except RtpError:
            assert bounds is None, data.hex()
            refused += 1
            continue
        assert bounds is not None, data.hex()
        parsed += 1
        # Every field straight from the bytes, as the RFC lays them out.
        assert packet.marker is bool(data[1] & 0x80)
        assert packet.payload_type == data[1] & 0x7F
        assert packet.sequence == int.from_bytes(data[2:4], "big")
        assert packet.timestamp == int.from_bytes(data[4:8], "big")
        assert packet.ssrc == int.from_bytes(data[8:12], "big")
        assert packet.csrcs == tuple(int.from_bytes(data[i:i + 4], "big")
                                     for i in range(12, 12 + 4 * (data[0] & 0x0F), 4))
        assert packet.payload == data[bounds[0]:bounds[1]]
    assert parsed > 100 and refused > 100  # the loop did exercise both the accepting and the refusing paths


def test_mutated_valid_packets_raise_nothing_but_rtp_error() -> None:
    rng = random.Random(7587)
    base = bytes.fromhex("b1" "6f" "0005" "00000000" "00000001" "aaaaaaaa" "abcd" "0001" "01020304") + b"pl\x00\x02"
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(10_000):
        data = bytearray(base[:rng.randrange(0, len(base) + 1)])
        for _ in range(rng.randrange(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        bounds = payload_bounds(bytes(data))
        try:
            packet = parse_rtp(bytes(data))
        except RtpError:
            assert bounds is None, data.hex()
            outcomes["refused"] += 1
            continue
        assert bounds is not None and packet.payload == data[bounds[0]:bounds[1]], data.hex()
        outcomes["parsed"] += 1
    assert min(outcomes.values()) > 100, outcomes


def test_rtp_sequence_fast_path() -> None:
    assert rtp_sequence(KNOWN) == 0x1234
    assert rtp_sequence(KNOWN[:12]) == 0x1234
    for length in range(12):
        with pytest.raises(RtpError):
            rtp_sequence(KNOWN[:length])


@pytest.mark.parametrize(("a", "b", "delta"), [
    (0, 0, 0),
    (0, 1, 1),
    (1, 0, -1),
    (65535, 0, 1),
    (0, 65535, -1),
    (65530, 5, 11),
    (5, 65530, -11),
    (0, 32767, 32767),
    (0, 32768, -32768),
    (40000, 7232, 32768 - 65536),
    (100, 100 + 1000, 1000),
])
def test_seq_delta(a: int, b: int, delta: int) -> None:
    assert seq_delta(a, b) == delta


def test_seq_delta_range() -> None:
    for a in (0, 1, 32767, 32768, 65535):
        for b in range(0, 65536, 97):
            d = seq_delta(a, b)
            assert -32768 <= d <= 32767
            assert (a + d) % 65536 == b


def test_packet_field_ranges_checked() -> None:
    good = {"payload_type": 111, "sequence": 0, "timestamp": 0, "ssrc": 0, "payload": b""}
    for field, bad in (("payload_type", 128), ("payload_type", -1), ("sequence", 65536),
                       ("timestamp", 1 << 32), ("ssrc", 1 << 32), ("ssrc", -1)):
        with pytest.raises(RtpError):
            RtpPacket(**{**good, field: bad})
    with pytest.raises(RtpError):
        RtpPacket(payload_type=111, sequence=0, timestamp=0, ssrc=0, payload=b"", csrcs=(1 << 32,))


def test_packetizer_first_packet_and_advance() -> None:
    packetizer = RtpPacketizer(ssrc=0xCAFEBABE, first_sequence=100, first_timestamp=5000)
    first = packetizer.packetize(b"opus-1", 960, marker=True)
    # V=2, M=1 PT=111, seq 100 = 0x0064, ts 5000 = 0x1388, SSRC, payload: written out by hand.
    assert first == bytes.fromhex("80" "ef" "0064" "00001388" "cafebabe") + b"opus-1"
    assert (packetizer.sequence, packetizer.timestamp) == (101, 5960)
    second = parse_rtp(packetizer.packetize(b"opus-2", 960))
    assert (second.sequence, second.timestamp, second.marker, second.payload) == (101, 5960, False, b"opus-2")
    assert (packetizer.sequence, packetizer.timestamp) == (102, 6920)


def test_packetizer_defaults() -> None:
    packetizer = RtpPacketizer(ssrc=1)
    packet = parse_rtp(packetizer.packetize(b"x", 960))
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (OPUS_PAYLOAD_TYPE, 0, 0, 1)


def test_packetizer_sequence_wraps() -> None:
    packetizer = RtpPacketizer(ssrc=7, first_sequence=65534)
    sequences = [rtp_sequence(packetizer.packetize(b"x", 960)) for _ in range(4)]
    assert sequences == [65534, 65535, 0, 1]
    assert packetizer.sequence == 2


def test_packetizer_timestamp_wraps() -> None:
    packetizer = RtpPacketizer(ssrc=7, first_timestamp=(1 << 32) - 960 * 2 + 480)
    stamps = [parse_rtp(packetizer.packetize(b"x", 960)).timestamp for _ in range(4)]
    assert stamps == [(1 << 32) - 1440, (1 << 32) - 480, 480, 1440]
    assert packetizer.timestamp == 2400


def test_packetizer_skip_keeps_media_time_but_not_sequence() -> None:
    packetizer = RtpPacketizer(ssrc=7, first_sequence=10, first_timestamp=(1 << 32) - 960)
    packetizer.packetize(b"x", 960)
    packetizer.skip(960 * 50)
    assert packetizer.sequence == 11
    assert packetizer.timestamp == 960 * 50
    packet = parse_rtp(packetizer.packetize(b"y", 960))
    assert (packet.sequence, packet.timestamp) == (11, 960 * 50)


def test_packetizer_stream_is_exactly_the_expected_bytes() -> None:
    # Every loudspeaker of a channel must get identical bytes, so the stream is a function of its inputs
    # only: here it is, byte for byte. Marker on the first packet only; seq +1 and ts +samples each time,
    # including a 20 ms frame (960), a 10 ms one (480) and an empty one (0: ts stays).
    packetizer = RtpPacketizer(ssrc=99, first_sequence=3, first_timestamp=4)
    sent = [packetizer.packetize(b"\x00" * 3, 960, marker=True), packetizer.packetize(b"\x01" * 3, 480),
            packetizer.packetize(b"\x02" * 3, 0), packetizer.packetize(b"\x03" * 3, 960)]
    assert sent == [
        bytes.fromhex("80" "ef" "0003" "00000004" "00000063" "000000"),
        bytes.fromhex("80" "6f" "0004" "000003c4" "00000063" "010101"),
        bytes.fromhex("80" "6f" "0005" "000005a4" "00000063" "020202"),
        bytes.fromhex("80" "6f" "0006" "000005a4" "00000063" "030303"),
    ]
    again = RtpPacketizer(ssrc=99, first_sequence=3, first_timestamp=4)
    assert again.packetize(b"\x00" * 3, 960, marker=True) == sent[0]


@pytest.mark.parametrize("kwargs", [
    {"ssrc": -1}, {"ssrc": 1 << 32}, {"ssrc": 1, "payload_type": 128},
    {"ssrc": 1, "first_sequence": 65536}, {"ssrc": 1, "first_timestamp": 1 << 32},
])
def test_packetizer_rejects_out_of_range_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RtpPacketizer(**kwargs)


def test_packetizer_rejects_negative_samples() -> None:
    packetizer = RtpPacketizer(ssrc=1)
    with pytest.raises(ValueError):
        packetizer.packetize(b"x", -1)
    with pytest.raises(ValueError):
        packetizer.skip(-1)
    assert (packetizer.sequence, packetizer.timestamp) == (0, 0)


def test_header_layout_matches_struct() -> None:
    # Cross-check against an independent encoding of the fixed header.
    packet = RtpPacketizer(ssrc=0x0A0B0C0D, payload_type=96, first_sequence=0xBEEF,
                           first_timestamp=0x01020304).packetize(b"", 0, marker=True)
    assert packet == struct.pack("!BBHII", 0b10_0_0_0000, 0b1_1100000, 0xBEEF, 0x01020304, 0x0A0B0C0D)
