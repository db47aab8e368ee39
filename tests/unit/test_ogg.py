"""Ogg/Opus framing: byte layouts against the RFCs, and real ffmpeg as the outside referee."""

from __future__ import annotations

import itertools
import random
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from broadcaster.codecs.ogg import (
    MAX_BACKLOG,
    OGG_CAPTURE,
    OggError,
    OggOpusWriter,
    OggPage,
    OggReader,
    build_page,
    ogg_crc32,
    opus_head,
    opus_tags,
    parse_opus_head,
    parse_opus_tags,
    parse_page,
)

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


def slow_crc(data: bytes) -> int:
    """Bit-at-a-time CRC straight from the definition, independent of any table."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def packets_of(data: bytes) -> list[bytes]:
    reader = OggReader()
    reader.feed(data)
    return [packet for packet, _ in reader.packets()]


# --- CRC ---------------------------------------------------------------------------------------


def test_crc_known_values() -> None:
    assert ogg_crc32(b"") == 0
    # CRC-32/CKSUM parameters without its final xor: check value 0x765E7680 ^ 0xFFFFFFFF.
    assert ogg_crc32(b"123456789") == 0x89A1897F == slow_crc(b"123456789")
    header = OGG_CAPTURE + bytes(23)
    assert ogg_crc32(header) == slow_crc(header)


def test_crc_matches_bitwise_reference_on_random_data() -> None:
    rng = random.Random(7)
    for size in (1, 2, 3, 27, 255, 1000, 4096):
        data = rng.randbytes(size)
        assert ogg_crc32(data) == slow_crc(data), size


def test_crc_accepts_bytearray() -> None:
    assert ogg_crc32(bytearray(b"OggS\x00\x02")) == slow_crc(b"OggS\x00\x02")


# --- pages and lacing --------------------------------------------------------------------------


def test_build_page_layout_and_round_trip() -> None:
    raw = build_page([b"abc", b"", b"x" * 300], serial=0xDEADBEEF, sequence=42, granule=123456789012,
                     bos=True, eos=True)
    assert raw[:4] == b"OggS" and raw[4] == 0
    assert raw[5] == 0x06
    assert struct.unpack_from("<qII", raw, 6) == (123456789012, 0xDEADBEEF, 42)
    assert raw[26] == 4 and raw[27:31] == bytes([3, 0, 255, 45])
    stored_crc = struct.unpack_from("<I", raw, 22)[0]
    assert stored_crc == slow_crc(raw[:22] + bytes(4) + raw[26:])

    page, end = parse_page(raw)
    assert end == len(raw)
    assert page.header_type == 0x06 and page.bos and page.eos and not page.continued
    assert page.granule == 123456789012
    assert page.serial == 0xDEADBEEF
    assert page.sequence == 42
    assert page.segments == bytes([3, 0, 255, 45])
    assert page.body == b"abc" + b"x" * 300
    assert page.serialize() == raw
    assert packets_of(raw) == [b"abc", b"", b"x" * 300]


def test_negative_granule_and_continued_flag_round_trip() -> None:
    page = OggPage(0x01, -1, 5, 9, bytes([255]), b"y" * 255)
    raw = page.serialize()
    assert raw[6:14] == b"\xff" * 8
    parsed, _ = parse_page(raw)
    assert parsed == page and parsed.continued and parsed.granule == -1


@pytest.mark.parametrize(("size", "lacing"), [
    (0, [0]),
    (254, [254]),
    (255, [255, 0]),
    (510, [255, 255, 0]),
    (65024, [255] * 254 + [254]),
])
def test_lacing_values(size: int, lacing: list[int]) -> None:
    packet = bytes(random.Random(size).randbytes(size))
    raw = build_page([packet], serial=1, sequence=0, granule=0)
    page, _ = parse_page(raw)
    assert list(page.segments) == lacing
    assert packets_of(raw) == [packet]


def test_lacing_overflow_is_refused() -> None:
    with pytest.raises(OggError):
        build_page([bytes(65025)], serial=1, sequence=0, granule=0)  # 255 x 255 plus a 0
    with pytest.raises(OggError):
        build_page([b""] * 256, serial=1, sequence=0, granule=0)
    build_page([b""] * 255, serial=1, sequence=0, granule=0)


def test_serialize_rejects_inconsistent_page() -> None:
    with pytest.raises(OggError):
        OggPage(0, 0, 1, 0, bytes([5]), b"abc").serialize()
    with pytest.raises(OggError):
        OggPage(0, 0, 1 << 32, 0, bytes([3]), b"abc").serialize()


def test_parse_page_errors() -> None:
    raw = build_page([b"hello"], serial=1, sequence=0, granule=0)
    with pytest.raises(OggError):
        parse_page(raw[:-1])
    with pytest.raises(OggError):
        parse_page(b"OggT" + raw[4:])
    with pytest.raises(OggError):
        parse_page(raw[:4] + b"\x01" + raw[5:])
    with pytest.raises(OggError):
        parse_page(raw[:-1] + b"H")


# --- Opus headers ------------------------------------------------------------------------------


def test_opus_head_field_offsets() -> None:
    head = opus_head(channels=2, pre_skip=0x0138, input_rate=44100, output_gain=-256)
    assert len(head) == 19
    assert head[0:8] == b"OpusHead"
    assert head[8] == 1  # version
    assert head[9] == 2  # channel count
    assert head[10:12] == b"\x38\x01"  # pre-skip, little endian
    assert head[12:16] == (44100).to_bytes(4, "little")
    assert head[16:18] == b"\x00\xff"  # -1.0 dB in Q7.8, signed
    assert head[18] == 0  # mapping family
    assert parse_opus_head(head) == {"version": 1, "channels": 2, "pre_skip": 312, "input_rate": 44100,
                                     "output_gain": -256, "mapping_family": 0}
    assert opus_head() == b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"


def test_opus_head_rejects() -> None:
    with pytest.raises(OggError):
        opus_head(channels=3)
    with pytest.raises(OggError):
        parse_opus_head(opus_head()[:18])
    with pytest.raises(OggError):
        parse_opus_head(b"OpusHeaD" + opus_head()[8:])
    with pytest.raises(OggError):
        parse_opus_head(opus_head()[:8] + b"\x10" + opus_head()[9:])


def test_opus_tags_layout() -> None:
    tags = opus_tags("bc", ["TITLE=Café", "A=b"])
    expected = (b"OpusTags" + b"\x02\x00\x00\x00" + b"bc" + b"\x02\x00\x00\x00"
                + b"\x0b\x00\x00\x00" + "TITLE=Café".encode() + b"\x03\x00\x00\x00" + b"A=b")
    assert tags == expected
    assert parse_opus_tags(tags) == ("bc", ["TITLE=Café", "A=b"])
    assert opus_tags("v") == b"OpusTags\x01\x00\x00\x00v\x00\x00\x00\x00"


def test_opus_tags_rejects() -> None:
    with pytest.raises(OggError):
        opus_tags("v", ["no equals sign"])
    with pytest.raises(OggError):
        parse_opus_tags(opus_tags("v", ["A=b"])[:-1])
    with pytest.raises(OggError):
        parse_opus_tags(b"OpusTagz" + opus_tags("v")[8:])
    with pytest.raises(OggError):
        parse_opus_tags(b"OpusTags\x01\x00\x00\x00v\xff\xff\xff\xff")


# --- writer ------------------------------------------------------------------------------------


def test_writer_header_pages() -> None:
    writer = OggOpusWriter(serial=77, pre_skip=312, page_samples=960 * 5, comments=["TITLE=x"])
    reader = OggReader()
    reader.feed(writer.header_pages)
    pages = list(reader.pages())
    assert [p.sequence for p in pages] == [0, 1]
    assert pages[0].bos and not pages[1].bos
    assert [p.granule for p in pages] == [0, 0]
    assert all(p.serial == 77 for p in pages)
    assert parse_opus_head(pages[0].body)["pre_skip"] == 312
    assert parse_opus_tags(pages[1].body) == ("broadcaster", ["TITLE=x"])


def test_writer_pages_sequence_and_granule() -> None:
    writer = OggOpusWriter(serial=3, pre_skip=312, page_samples=960 * 3)
    out = [writer.add_packet(bytes([i]) * (10 + i), 960) for i in range(9)]
    assert [o is not None for o in out] == [False, False, True] * 3
    assert writer.pages_written == 3 and writer.samples_written == 960 * 9
    assert writer.add_packet(b"tail", 480) is None
    last = writer.flush(eos=True)
    assert last is not None
    assert writer.flush() is None
    stream = writer.header_pages + b"".join(o for o in out if o) + last
    reader = OggReader()
    reader.feed(stream)
    audio = list(reader.pages())[2:]
    assert [p.sequence for p in audio] == [2, 3, 4, 5]
    assert [p.granule for p in audio] == [2880, 5760, 8640, 9120]
    assert [p.eos for p in audio] == [False, False, False, True]
    assert packets_of(stream)[2:] == [bytes([i]) * (10 + i) for i in range(9)] + [b"tail"]


def test_writer_flush_behaviour() -> None:
    writer = OggOpusWriter(serial=3, pre_skip=0, page_samples=48000)
    assert writer.flush() is None
    assert writer.add_packet(b"a", 960) is None
    flushed = writer.flush()
    assert flushed is not None and parse_page(flushed)[0].granule == 960
    empty_eos = writer.flush(eos=True)
    assert empty_eos is not None
    page, _ = parse_page(empty_eos)
    assert page.eos and page.segments == b"" and page.granule == 960 and page.sequence == 3
    with pytest.raises(ValueError):
        writer.add_packet(b"b", 960)


def test_writer_flushes_before_lacing_overflow() -> None:
    writer = OggOpusWriter(serial=3, pre_skip=0, page_samples=10**9)
    big = bytes(600)  # three lacing values each
    results = [writer.add_packet(big, 960) for _ in range(86)]
    assert all(r is None for r in results[:85])  # 85 * 3 = 255 lacing values exactly fit
    flushed = results[85]
    assert flushed is not None
    page, _ = parse_page(flushed)
    assert len(page.segments) == 255 and page.granule == 85 * 960
    assert writer.samples_written == 85 * 960
    with pytest.raises(OggError):
        writer.add_packet(bytes(65025), 960)


# --- reader ------------------------------------------------------------------------------------


def sample_stream() -> tuple[bytes, list[bytes]]:
    rng = random.Random(1)
    writer = OggOpusWriter(serial=9, pre_skip=312, page_samples=960 * 4)
    packets = [rng.randbytes(rng.randrange(0, 600)) for _ in range(30)]
    data = writer.header_pages + b"".join(filter(None, (writer.add_packet(p, 960) for p in packets)))
    tail = writer.flush(eos=True)
    assert tail is not None
    return data + tail, packets


def test_reader_byte_by_byte_matches_whole() -> None:
    data, packets = sample_stream()
    reader = OggReader()
    got: list[bytes] = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        got.extend(packet for packet, _ in reader.packets())
    assert got == packets_of(data)
    assert got[2:] == packets
    assert reader.resyncs == 0 and reader.bad_crc == 0


def test_reader_packets_spanning_pages() -> None:
    packet = bytes(range(256)) * 4  # 1024 bytes: lacing 255 x4, 4
    first = OggPage(0, -1, 1, 0, bytes([255, 255]), packet[:510]).serialize()
    second = OggPage(1, 100, 1, 1, bytes([255, 255, 4, 2]), packet[510:] + b"zz").serialize()
    reader = OggReader()
    reader.feed(first)
    assert list(reader.packets()) == []
    reader.feed(second)
    got = list(reader.packets())
    assert [p for p, _ in got] == [packet, b"zz"]
    assert all(page.sequence == 1 and page.granule == 100 for _, page in got)


def test_reader_drops_continuation_after_lost_page() -> None:
    first = OggPage(0, -1, 1, 0, bytes([255]), bytes(255)).serialize()
    third = OggPage(1, 100, 1, 2, bytes([10, 3]), bytes(10) + b"new").serialize()
    assert packets_of(first + third) == [b"new"]


def test_reader_truncated_input_waits() -> None:
    data, _ = sample_stream()
    first_end = parse_page(data)[1]
    reader = OggReader()
    reader.feed(data[:20])  # not even a whole header
    assert list(reader.pages()) == []
    reader.feed(data[20:first_end - 1])
    assert list(reader.packets()) == []
    reader.feed(data[first_end - 1:first_end + 30])  # first page complete, second truncated
    assert [p for p, _ in reader.packets()] == [opus_head(pre_skip=312)]
    assert list(reader.packets()) == []
    reader.feed(data[first_end + 30:])
    assert len(list(reader.packets())) == 31
    assert reader.resyncs == 0 and reader.bad_crc == 0


def test_reader_skips_garbage_prefix() -> None:
    data, packets = sample_stream()
    reader = OggReader()
    reader.feed(b"HTTP/1.0 200 OK\r\nOgg\r\n\r\n" + data)
    assert [p for p, _ in reader.packets()][2:] == packets
    assert reader.resyncs == 1 and reader.bad_crc == 0


def test_reader_bad_crc_raises_then_resynchronises() -> None:
    good1 = build_page([b"one"], serial=1, sequence=0, granule=960)
    bad = bytearray(build_page([b"two"], serial=1, sequence=1, granule=1920))
    bad[-1] ^= 0x40
    good2 = build_page([b"three"], serial=1, sequence=2, granule=2880)
    reader = OggReader()
    reader.feed(good1 + bytes(bad) + good2)
    got = []
    with pytest.raises(OggError):
        for packet, _ in reader.packets():
            got.append(packet)
    assert reader.bad_crc == 1
    got.extend(packet for packet, _ in reader.packets())
    assert got == [b"one", b"three"]
    assert reader.bad_crc == 1 and reader.resyncs == 1


def test_reader_backlog_is_bounded() -> None:
    reader = OggReader()
    for _ in range(3):  # a producer nobody drains: the reader keeps only the newest bytes
        reader.feed(b"\xff" * 600_000)
    assert len(reader._buf) <= MAX_BACKLOG
    assert reader.resyncs == 1 and reader.skipped_bytes == 3 * 600_000 - MAX_BACKLOG
    assert list(reader.pages()) == []
    assert len(reader._buf) < 4  # junk without a capture pattern is dropped at once
    data, packets = sample_stream()
    reader.feed(data)
    assert [p for p, _ in reader.packets()][2:] == packets
    assert reader.resyncs == 1 and reader.bad_crc == 0


def test_reader_rejects_oversized_packet() -> None:
    reader = OggReader()
    errors = 0
    for sequence in range(20):  # about 1.2 MiB of one never-ending packet
        reader.feed(OggPage(int(sequence > 0), -1, 1, sequence, bytes([255] * 255), bytes(255 * 255)).serialize())
        try:
            assert list(reader.packets()) == []
        except OggError:
            errors += 1
    assert errors == 1
    reader.feed(OggPage(1, 5, 1, 20, bytes([0, 2]), b"ok").serialize())
    assert [p for p, _ in reader.packets()] == [b"ok"]  # the rest of the giant is skipped


# --- interoperability with ffmpeg --------------------------------------------------------------


@needs_ffmpeg
def test_ffmpeg_decodes_writer_output(tmp_path: Path) -> None:
    opuslib = pytest.importorskip("opuslib_next")
    encoder = opuslib.Encoder(48000, 1, opuslib.APPLICATION_AUDIO)
    pre_skip = int(encoder.lookahead)
    t = np.arange(48000, dtype=np.float32) / 48000
    pcm = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    writer = OggOpusWriter(serial=0x1234, pre_skip=pre_skip, page_samples=960 * 10, comments=["TITLE=test"])
    chunks = [writer.header_pages]
    for start in range(0, len(pcm), 960):
        packet = bytes(encoder.encode_float(pcm[start:start + 960].tobytes(), 960))
        chunks.append(writer.add_packet(packet, 960) or b"")
    chunks.append(writer.flush(eos=True) or b"")
    path = tmp_path / "out.ogg"
    path.write_bytes(b"".join(chunks))
    assert writer.samples_written == 48000

    result = subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                             "-ar", "48000", "-"], capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.strip() == b""
    decoded = np.frombuffer(result.stdout, dtype="<i2")
    assert abs(len(decoded) - (48000 - pre_skip)) <= 960
    assert np.abs(decoded).max() > 8000  # real audio, not silence


@needs_ffmpeg
def test_reader_parses_ffmpeg_output(tmp_path: Path) -> None:
    path = tmp_path / "ff.ogg"
    result = subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=1",
                             "-c:a", "libopus", "-f", "ogg", str(path)], capture_output=True, timeout=60,
                            check=False)
    if result.returncode != 0:
        pytest.skip(f"ffmpeg cannot encode libopus: {result.stderr.decode()[-200:]}")
    data = path.read_bytes()
    reader = OggReader()
    for i in range(0, len(data), 1000):  # socket-sized chunks
        reader.feed(data[i:i + 1000])
        pages = list(reader.pages())
        if i == 0:
            assert pages and pages[0].bos
            collected = pages
        else:
            collected += pages
    assert reader.bad_crc == 0 and reader.resyncs == 0
    assert sum(len(page.serialize()) for page in collected) == len(data)  # CRCs verified, bytes identical

    reader = OggReader()
    reader.feed(data)
    items = list(reader.packets())
    head = parse_opus_head(items[0][0])
    assert head["channels"] == 1 and head["mapping_family"] == 0 and head["pre_skip"] > 0
    vendor, _ = parse_opus_tags(items[1][0])
    assert vendor
    last_page = collected[-1]
    assert last_page.eos
    # 1 s of audio at 48 kHz plus pre-skip; the final page trims to the exact end.
    assert last_page.granule == 48000 + head["pre_skip"]
    assert all(a.granule <= b.granule for a, b in itertools.pairwise(collected[2:]))
