"""The studio stream decoders on streams made by ffmpeg's own encoders and muxers: each format told
apart by its bytes, chained Ogg and MP3 track changes without a counted error, junk and truncation
counted and survived, and what is not decoded refused by name."""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from broadcaster.codecs.decoders import (
    MpegAudioDecoder,
    OggDecoder,
    StreamDecoder,
    UnsupportedFormat,
    WebmDecoder,
    check_declared_type,
    sniff_decoder,
)
from broadcaster.codecs.mpegframes import AAC, MP3, MpegFramer, adts_frame_length, frame_at, mpeg_frame_length
from broadcaster.codecs.pcm import dominant_frequency
from broadcaster.codecs.webm import WebmError, block_frames

FORMATS = {  # name: (ffmpeg encoder options, muxer, the decoder's format label)
    "ogg/opus": (["-c:a", "libopus"], "ogg", "ogg/opus"),
    "ogg/vorbis": (["-c:a", "libvorbis", "-ar", "44100"], "ogg", "ogg/vorbis"),
    "ogg/flac": (["-c:a", "flac", "-ar", "44100"], "ogg", "ogg/flac"),
    "ogg/flac-24bit": (["-c:a", "flac", "-sample_fmt", "s32", "-ar", "48000"], "ogg", "ogg/flac"),
    "mp3": (["-c:a", "libmp3lame", "-ar", "44100", "-ac", "2"], "mp3", "mp3"),
    "mp3-mpeg2": (["-c:a", "libmp3lame", "-ar", "22050", "-ac", "1"], "mp3", "mp3"),
    "mp2": (["-c:a", "mp2", "-ar", "48000"], "mp2", "mp3"),
    "adts": (["-c:a", "aac", "-ar", "44100", "-ac", "2"], "adts", "aac"),
    "adts-48k-mono": (["-c:a", "aac", "-ar", "48000", "-ac", "1"], "adts", "aac"),
    "webm/opus": (["-c:a", "libopus"], "webm", "webm/opus"),
    "matroska/opus": (["-c:a", "libopus"], "matroska", "matroska/opus"),
    "webm/vorbis": (["-c:a", "libvorbis"], "webm", "webm/vorbis"),
}


@functools.cache
def encoded(name: str, frequency_hz: float = 880.0, seconds: float = 2.0, extra: tuple[str, ...] = ()) -> bytes:
    """A tone through ffmpeg's encoder and muxer for a format, as a console would send it."""
    codec, muxer, _ = FORMATS[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={frequency_hz}:duration={seconds}:sample_rate=48000", "-af", "volume=4",
                        *codec, *extra, "-f", muxer, str(out)], check=True)
        return out.read_bytes()


def decode(decoder: StreamDecoder, data: bytes, piece: int = 777) -> np.ndarray:
    chunks = [c for i in range(0, len(data), piece) for c in decoder.feed(data[i:i + piece])]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def pitches(audio: np.ndarray, window: int = 24000) -> list[int]:
    return [round(dominant_frequency(audio[i:i + window])) for i in range(0, audio.size - window + 1, window)]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_is_told_from_its_bytes_and_decoded(name: str) -> None:
    data = encoded(name)
    decoder = sniff_decoder(data[:16])
    assert decoder is not None
    audio = decode(decoder, data)
    assert decoder.format == FORMATS[name][2]
    assert decoder.errors == 0
    assert abs(audio.size / 48000 - 2.0) < 0.1
    assert abs(dominant_frequency(audio[4800:-4800]) - 880.0) < 2.0
    rms = float(np.sqrt(np.mean(audio[4800:-4800] ** 2)))
    assert 0.2 < rms < 0.45, f"level kept: a 0.5 peak tone (ffmpeg's mono to stereo upmix takes 3 dB), rms {rms}"


def test_adts_is_never_taken_for_mp3() -> None:
    """Both start 0xFFF; the layer bits differ (ADTS: 00, which MPEG audio reserves)."""
    adts, mp3 = encoded("adts"), encoded("mp3")
    start = mp3.find(b"\xff\xfb")  # past ffmpeg's ID3 tag: an MPEG-1 layer III header
    assert adts[:2] == b"\xff\xf1" and frame_at(adts) == (AAC, adts_frame_length(adts))
    assert mpeg_frame_length(adts) is None
    assert frame_at(mp3[start:]) == (MP3, mpeg_frame_length(mp3[start:]))
    assert adts_frame_length(mp3[start:]) is None
    decoder = sniff_decoder(adts[:4])
    assert isinstance(decoder, MpegAudioDecoder)
    audio = decode(decoder, adts)
    assert decoder.format == "aac" and decoder.errors == 0 and audio.size > 90000


def test_chained_ogg_changes_codec_without_an_error_or_a_gap() -> None:
    """A liquidsoap track change: each track a new logical stream (BOS, new serial, new headers),
    and the codec may change with it."""
    tracks = [("ogg/opus", 440.0), ("ogg/vorbis", 660.0), ("ogg/flac", 880.0), ("ogg/opus", 550.0)]
    stream = b"".join(encoded(name, frequency, 1.0) for name, frequency in tracks)
    decoder = OggDecoder()
    audio = decode(decoder, stream, piece=1000)
    assert decoder.errors == 0
    assert abs(audio.size / 48000 - 4.0) < 0.1, "every track heard, end to end"
    heard = pitches(audio, 12000)  # quarter seconds
    assert [f for f in heard if f in (440, 660, 880, 550)] == heard, heard
    assert heard[:3] == [440] * 3 and heard[4:7] == [660] * 3 and heard[8:11] == [880] * 3 and heard[-3:] == [550] * 3
    quiet = [i for i in range(0, audio.size - 480, 480) if np.max(np.abs(audio[i:i + 480])) < 0.05]
    assert len(quiet) <= 3, f"no audible gap at the track changes (quiet 10 ms windows at {quiet})"


def test_mp3_tags_and_xing_frames_between_tracks_are_not_damage() -> None:
    first = encoded("mp3", 440.0, 1.0, ("-metadata", "title=Một"))  # ID3v2 + Xing/Info frame + ID3v1
    second = encoded("mp3", 880.0, 1.0, ("-metadata", "title=Hai", "-write_id3v1", "1"))
    assert first.startswith(b"ID3") and (b"Info" in first[:2000] or b"Xing" in first[:2000])
    assert second[-128:].startswith(b"TAG")
    decoder = MpegAudioDecoder()
    audio = decode(decoder, first + second + first)
    assert decoder.errors == 0
    assert decoder.framer.tags >= 7  # three ID3v2 tags, three Info frames, one ID3v1 tag
    heard = pitches(audio)
    assert heard[:2] == [440, 440] and heard[2:4] == [880, 880] and heard[4:6] == [440, 440], heard


def test_junk_between_frames_is_counted_once_and_the_rest_decodes() -> None:
    junk = np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    for name in ("mp3", "adts", "webm/opus"):
        data = encoded(name)
        cut = len(data) // 2
        decoder = sniff_decoder(data)
        assert decoder is not None
        audio = decode(decoder, data[:cut] + junk + data[cut:])
        assert 1 <= decoder.errors <= 3, (name, decoder.errors)
        assert audio.size / 48000 > 1.5, name
        assert abs(dominant_frequency(audio[-24000:]) - 880.0) < 2.0, f"{name}: decoding went on after the junk"


def test_truncated_streams_give_what_is_complete_and_continue_with_the_next() -> None:
    """A console that dies mid-frame: the complete frames play; what comes next (a reconnect's new stream
    on the same decoder, as after a liquidsoap restart) is decoded."""
    for name in ("ogg/flac", "mp3", "adts", "matroska/opus"):
        data = encoded(name)
        decoder = sniff_decoder(data)
        assert decoder is not None
        half = decode(decoder, data[:len(data) // 2 + 37])
        assert 0.6 < half.size / 48000 < 1.2, name
        rest = decode(decoder, data)
        assert rest.size / 48000 > 1.5, name


def test_memory_stays_bounded_on_endless_junk() -> None:
    framer = MpegFramer()
    rng = np.random.default_rng(1)
    for _ in range(200):
        framer.feed(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
        assert len(framer._buf) < 10_000
    decoder = WebmDecoder()
    for _ in range(200):
        decoder.feed(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
        assert len(decoder.reader._buf) < (1 << 20) + 50_000


def test_formats_we_do_not_decode_are_named() -> None:
    cases = [(b"RIFF\x24\x00\x00\x00WAVEfmt ", "WAV"), (b"fLaC\x00\x00\x00\x22", "raw FLAC"),
             (b"\x00\x00\x00\x20ftypM4A ", "MP4"), (b"<html><body>", "text")]
    for head, name in cases:
        with pytest.raises(UnsupportedFormat, match=name) as raised:
            sniff_decoder(head)
        assert "send Ogg (Opus, Vorbis, FLAC), MP3, AAC (ADTS) or WebM/Opus" in str(raised.value)
    assert sniff_decoder(b"RIFF\x24\x00") is None, "too few bytes to tell yet"
    aac_in_matroska = encoded("matroska/opus", extra=("-c:a", "aac"))
    with pytest.raises(UnsupportedFormat, match="Matroska with A_AAC"):
        decode(WebmDecoder(), aac_in_matroska)


def test_declared_types() -> None:
    for accepted in ("", "audio/mpeg", "audio/ogg", "application/ogg", "audio/aac", "audio/aacp",
                     "audio/webm;codecs=opus", "video/webm", "application/octet-stream", "AUDIO/MPEG"):
        check_declared_type(accepted)
    for refused in ("audio/flac", "audio/wav", "audio/x-wav", "video/mp4", "text/plain"):
        with pytest.raises(UnsupportedFormat, match=f"^{refused} is not a format broadcaster decodes"):
            check_declared_type(refused)


def test_matroska_lacing() -> None:
    """Block lacing as Matroska specifies it: none, Xiph, fixed-size and EBML (signed differences)."""
    frames = [b"a" * 300, b"b" * 10, b"c" * 77]
    header = bytes([0x81, 0x00, 0x00])  # track 1, timecode 0
    assert block_frames(header + b"\x80" + b"xyz") == (1, [b"xyz"])
    xiph = header + bytes([0x80 | 0x02, 2, 255, 45, 10]) + b"".join(frames)
    assert block_frames(xiph) == (1, frames)
    fixed = header + bytes([0x80 | 0x04, 2]) + b"d" * 30
    assert block_frames(fixed) == (1, [b"d" * 10] * 3)
    # EBML: 300 as a 2-byte vint (0x412C), then 10 - 300 = -290 as a signed 2-byte vint (bias 8191)
    ebml = header + bytes([0x80 | 0x06, 2, 0x41, 0x2C]) + (0x4000 | (-290 + 8191)).to_bytes(2, "big")
    assert block_frames(ebml + b"".join(frames)) == (1, frames)
    with pytest.raises(WebmError):
        block_frames(xiph[:-400])


def test_chains_without_eos_pages_keep_the_ogg_reader_bounded() -> None:
    """A console whose chains never end with an EOS page (or junk with valid pages of endless serials)."""
    from broadcaster.codecs.ogg import MAX_STREAMS, OggOpusWriter

    decoder = OggDecoder()
    for serial in range(300):
        writer = OggOpusWriter(serial=serial + 1, pre_skip=312, page_samples=960)
        decoder.feed(writer.header_pages)
    assert len(decoder.reader._streams) <= MAX_STREAMS
    assert decoder.errors == 0
