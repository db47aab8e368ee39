"""AAC-LC and MP3 encoders (PyAV: ffmpeg's native ``aac``, ``libmp3lame``) for listener streams.

One encoder per channel and kind, fed the channel's decoded audio (48 kHz
mono float32) in pieces of any length; PyAV buffers to the codec's frame size.
Timestamps advance by samples encoded, never by the clock, so a segment's
duration is exactly what it holds. These are stateful and not thread-safe:
each lives on the one thread that feeds it (control/transcode.py).
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from broadcaster.codecs.mpegts import adts_header

SAMPLE_RATE = 48000


class _Encoder:
    codec = ""

    def __init__(self, bitrate: int) -> None:
        context: Any = av.CodecContext.create(self.codec, "w")
        context.sample_rate = SAMPLE_RATE
        context.layout = "mono"
        context.format = "fltp"
        context.bit_rate = bitrate
        context.open()
        self._context = context
        self.frame_samples = int(context.frame_size)
        self._samples_in = 0

    def _encode(self, pcm: np.ndarray) -> list[Any]:
        if pcm.size == 0:
            return []
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.float32).reshape(1, -1),
                                           format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples_in
        self._samples_in += pcm.size
        return list(self._context.encode(frame))


class AacEncoder(_Encoder):
    """PCM in, ADTS frames out (each 1024 samples), ready for MPEG-TS or a raw .aac stream."""

    codec = "aac"

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        out = []
        for packet in self._encode(pcm):
            payload = bytes(packet)
            out.append(adts_header(len(payload), SAMPLE_RATE, 1) + payload)
        return out


class Mp3Encoder(_Encoder):
    """PCM in, MPEG-1 Layer III frames out (each 1152 samples, headers included): the bytes
    of an Icecast-style MP3 stream."""

    codec = "libmp3lame"

    def encode(self, pcm: np.ndarray) -> bytes:
        return b"".join(bytes(packet) for packet in self._encode(pcm))
