"""Opus round trips through the real libopus, with concealment of dropped packets."""

import numpy as np
import pytest

from broadcaster.codecs.opus import OpusCodecError, OpusDecoder, OpusEncoder, OpusSettings, silence_packet
from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from broadcaster.core.sources.tone import ToneSource


@pytest.mark.parametrize("frame_samples", [960, 1920, 2880])
def test_tone_round_trip_keeps_frequency_and_level(frame_samples: int) -> None:
    encoder = OpusEncoder(OpusSettings(frame_samples=frame_samples, bitrate=32000))
    decoder = OpusDecoder(frame_samples)
    tone = ToneSource(440.0, -12.0, frame_samples=frame_samples)
    decoded = []
    for _ in range(2 * 48000 // frame_samples):
        frame = tone.read()
        assert frame is not None
        packet = encoder.encode(frame)
        assert 0 < len(packet) < 400
        decoded.append(decoder.decode(packet))
    audio = np.concatenate(decoded)[encoder.lookahead + 48000 // 2:]
    assert abs(dominant_frequency(audio) - 440.0) < 1.0
    assert abs(rms_dbfs(audio) - (-12.0)) < 1.0


def test_dropped_packets_are_concealed_smoothly() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    tone = ToneSource(440.0, -12.0)
    dropped = {20, 21, 35}
    out = []
    for i in range(60):
        frame = tone.read()
        assert frame is not None
        packet = encoder.encode(frame)
        out.append(decoder.conceal() if i in dropped else decoder.decode(packet))
    assert all(f.shape == (960,) for f in out)
    concealed = np.concatenate([out[20], out[21]])
    assert rms_dbfs(concealed) > -30.0, "PLC continues the tone rather than dropping to silence"


def test_wrong_frame_length_is_refused() -> None:
    with pytest.raises(ValueError):
        OpusEncoder().encode(np.zeros(480, dtype=np.float32))
    with pytest.raises(ValueError):
        OpusEncoder(OpusSettings(frame_samples=1000))


def test_garbage_packet_raises_codec_error() -> None:
    decoder = OpusDecoder()
    with pytest.raises(OpusCodecError):
        decoder.decode(b"")
    with pytest.raises(OpusCodecError):
        decoder.decode(b"\xff" * 3)


def test_cached_silence_packet_decodes_to_silence_in_any_stream() -> None:
    packet = silence_packet(OpusSettings())
    assert len(packet) <= 8
    encoder, decoder = OpusEncoder(), OpusDecoder()
    tone = ToneSource(440.0, -12.0)
    for _ in range(10):
        frame = tone.read()
        assert frame is not None
        decoder.decode(encoder.encode(frame))
    tail = np.concatenate([decoder.decode(packet) for _ in range(5)])
    assert rms_dbfs(tail[960:]) < -60.0
