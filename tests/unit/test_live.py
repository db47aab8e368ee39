"""LiveSource and the stream decoders, without sockets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from broadcaster.codecs.decoders import MpegAudioDecoder, OggDecoder, UnsupportedFormat, sniff_decoder
from broadcaster.codecs.pcm import dominant_frequency
from broadcaster.core.sources.live import LiveSource
from tests.conftest import tone_file


def chunk(seconds: float, value: float = 0.5) -> np.ndarray:
    return np.full(int(seconds * 48000), value, dtype=np.float32)


def test_playout_waits_for_the_target_delay() -> None:
    source = LiveSource(target_delay_s=0.1, max_delay_s=1.0, stall_s=0.5)
    source.push(chunk(0.06))
    assert source.read() is None and not source.on_air
    source.push(chunk(0.06))
    frame = source.read()
    assert frame is not None and frame.shape == (960,) and source.on_air


def test_short_gap_is_concealed_and_counted_then_stall_falls_back() -> None:
    source = LiveSource(target_delay_s=0.04, max_delay_s=1.0, stall_s=0.2)
    source.push(chunk(0.05))
    frames = [source.read() for _ in range(3)]
    assert frames[0] is not None and frames[1] is not None
    assert frames[2] is not None and np.allclose(frames[2][:480], 0.5) and np.allclose(frames[2][480:], 0.0)
    assert source.stats.underruns == 1
    quiet = [source.read() for _ in range(10)]
    # 0.2 s of silence = 10 ticks of 20 ms: concealed until then, nothing after.
    assert all(f is not None for f in quiet[:8]) and quiet[9] is None
    assert source.stats.stalls == 1 and not source.on_air
    assert source.target > int(0.04 * 48000), "underruns grew the buffer"
    source.push(chunk(0.05))
    assert source.read() is None, "re-buffering to the (now larger) target"
    source.push(chunk(1.0))
    assert source.read() is not None, "back on air when audio returns"


def test_overrun_drops_the_oldest_audio() -> None:
    source = LiveSource(target_delay_s=0.1, max_delay_s=0.5, stall_s=1.0)
    source.push(np.arange(int(0.7 * 48000), dtype=np.float32))
    assert source.depth_s == pytest.approx(0.5)
    assert source.stats.overruns == int(0.2 * 48000)
    frame = source.read()
    assert frame is not None and frame[0] == int(0.2 * 48000), "the newest 0.5 s is kept"


def test_disconnect_plays_out_the_buffer_then_finishes() -> None:
    source = LiveSource(target_delay_s=0.1, max_delay_s=1.0, stall_s=1.0)
    source.push(chunk(0.05))
    source.close()
    assert source.read() is not None and source.read() is not None
    tail = source.read()  # the last half frame, padded: everything the studio sent is heard
    assert tail is not None and np.allclose(tail[:480], 0.5) and np.allclose(tail[480:], 0.0)
    assert source.read() is None and source.finished


def encode(tmp_path: Path, codec: list[str], fmt: str) -> bytes:
    wav = tone_file(tmp_path / "t.wav", 880.0, -12.0, 2.0)
    out = tmp_path / f"t.{fmt}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), *codec, "-f", fmt, str(out)], check=True)
    return out.read_bytes()


@pytest.mark.parametrize("codec, fmt, kind", [(["-c:a", "libopus"], "ogg", OggDecoder),
                                              (["-c:a", "libvorbis", "-ar", "44100"], "ogg", OggDecoder),
                                              (["-c:a", "libmp3lame", "-ar", "44100", "-ac", "2"], "mp3",
                                               MpegAudioDecoder)])
def test_stream_decoders_fed_in_small_pieces(tmp_path: Path, codec: list[str], fmt: str, kind: type) -> None:
    data = encode(tmp_path, codec, fmt)
    decoder = sniff_decoder(data[:64])
    assert isinstance(decoder, kind)
    pieces = [decoder.feed(data[i:i + 777]) for i in range(0, len(data), 777)]
    audio = np.concatenate([c for piece in pieces for c in piece])
    assert abs(audio.size / 48000 - 2.0) < 0.1
    assert abs(dominant_frequency(audio[4800:-4800]) - 880.0) < 2.0


def test_damaged_stream_is_counted_not_fatal(tmp_path: Path) -> None:
    data = bytearray(encode(tmp_path, ["-c:a", "libopus"], "ogg"))
    for i in range(3000, 3200):
        data[i] ^= 0x5A
    decoder = OggDecoder()
    audio = [c for i in range(0, len(data), 1000) for c in decoder.feed(bytes(data[i:i + 1000]))]
    assert decoder.errors >= 1
    assert sum(c.size for c in audio) > 48000, "the rest of the stream still decodes"


def test_ogg_that_is_not_opus_vorbis_or_flac_is_refused(tmp_path: Path) -> None:
    data = encode(tmp_path, ["-c:a", "speex", "-ar", "16000"], "ogg")
    with pytest.raises(UnsupportedFormat, match="Ogg/Speex is not a format"):
        OggDecoder().feed(data)


def test_unknown_format_is_refused() -> None:
    assert sniff_decoder(b"RI") is None
    with pytest.raises(UnsupportedFormat, match="WAV"):
        sniff_decoder(b"RIFF\x00\x00\x00\x00WAVEfmt ")


def studio(pattern: list[tuple[float, bool]], seconds: float) -> np.ndarray:
    """A studio's signal: (duration, loud) segments repeated; loud is a 330 Hz tone (6.6 cycles a frame,
    so a skipped frame is a jump) starting at its peak."""
    parts = []
    while sum(p.size for p in parts) < seconds * 48000:
        for duration, loud in pattern:
            n = int(duration * 48000)
            parts.append((0.3 * np.cos(2 * np.pi * 330 * np.arange(n) / 48000)).astype(np.float32) if loud
                         else np.zeros(n, np.float32))
    return np.concatenate(parts)[:int(seconds * 48000)]


def play(source: LiveSource, signal: np.ndarray, burst_s: float, page_s: float, seconds: float,
         jitter: list[int] | None = None) -> tuple[np.ndarray, list[float]]:
    """A console that connects with burst_s buffered, then sends a page every page_s (on the
    frame clock, each page late by jitter[i] frames); returns what played and the depth per frame."""
    position = int(burst_s * 48000)
    source.push(signal[:position])
    page, frames_per_page = int(page_s * 48000), int(page_s / 0.02)
    due = {i * frames_per_page + (jitter[i % len(jitter)] if jitter else 0): i for i in range(1, 10_000)}
    out, depth = [], []
    for tick in range(int(seconds / 0.02)):
        if tick in due and position < signal.size:
            source.push(signal[position:position + page])
            position += page
        depth.append(source.depth_s)
        frame = source.read()
        out.append(frame if frame is not None else np.zeros(960, np.float32))
    return np.concatenate(out), depth


def test_a_connect_burst_is_shed_from_pauses_and_every_loud_sample_plays_in_order() -> None:
    source = LiveSource(target_delay_s=0.3, max_delay_s=2.5, stall_s=3.0)
    signal = studio([(0.4, True), (0.15, False)], 60.0)
    out, depth = play(source, signal, burst_s=2.0, page_s=0.2, seconds=30.0)
    assert min(depth[:100]) > 1.5, "the burst is delay at first"
    assert max(min(depth[i:i + 100]) for i in range(len(depth) - 100, len(depth), 10)) < 0.15, \
        "back to the reserve: the lowest level over the last 2 s is a few frames"
    assert source.stats.underruns == 0
    assert 1.7 * 48000 < source.stats.shed < 2.0 * 48000
    heard = out[out != 0]
    assert np.array_equal(heard, signal[signal != 0][:heard.size]), "only silent frames were dropped"


def test_audio_without_pauses_catches_up_by_crossfaded_skips() -> None:
    source = LiveSource(target_delay_s=0.3, max_delay_s=2.5, stall_s=3.0)
    signal = studio([(1.0, True)], 90.0)
    out, depth = play(source, signal, burst_s=2.0, page_s=0.2, seconds=70.0)
    assert min(depth[-100:]) < 0.3 < min(depth[:500])
    assert source.stats.shed > 1.5 * 48000 and source.stats.underruns == 0
    # 330 Hz at 0.3 moves at most 0.013 a sample; a cut without the crossfade jumps up to 0.6.
    assert float(np.abs(np.diff(out[48000:])).max()) < 0.05


def test_steady_pages_that_arrive_late_do_not_underrun_once_caught_up() -> None:
    source = LiveSource(target_delay_s=0.3, max_delay_s=2.5, stall_s=3.0)
    signal = studio([(0.4, True), (0.15, False)], 90.0)
    _, depth = play(source, signal, burst_s=0.0, page_s=0.2, seconds=60.0, jitter=[0, 2, 1, 0, 2, 0, 1])
    assert source.stats.underruns == 0
    assert min(depth[-500:]) > 0.0
