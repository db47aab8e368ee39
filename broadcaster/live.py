"""Live studio audio: stream decoders and the jitter-buffered live source.

A studio console sends a continuous Ogg/Opus or MP3 stream over TCP. The
decoder turns whatever bytes have arrived into 48 kHz mono PCM; the
LiveSource holds it in a jitter buffer and hands the mixer one frame per
tick. Pure: no sockets, no clock. Time is counted in frames, so a stalled
studio is detected by how many ticks passed without audio.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import soxr

from broadcaster.codecs.ogg import OggError, OggReader
from broadcaster.codecs.opus import OpusCodecError, OpusDecoder
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio


class StreamDecoder(Protocol):
    format: str
    errors: int

    def feed(self, data: bytes) -> list[Audio]:
        """Decode what is complete in data (and earlier bytes); 48 kHz mono chunks."""


class _AvAudio:
    """PyAV frames → 48 kHz mono float32, resampled as a stream (no clicks at chunk edges)."""

    def __init__(self) -> None:
        self._resampler: soxr.ResampleStream | None = None
        self._rate = 0

    def convert(self, frame: Any) -> Audio:
        samples = frame.to_ndarray()
        if samples.dtype.kind == "i":
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
        if samples.ndim == 2 and frame.format.is_planar:
            mono = samples.mean(axis=0, dtype=np.float32)
        else:
            mono = samples.reshape(-1, len(frame.layout.channels)).mean(axis=1, dtype=np.float32)
        rate = int(frame.sample_rate)
        if rate == SAMPLE_RATE:
            return mono.astype(np.float32, copy=False)
        if self._resampler is None or rate != self._rate:
            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            self._rate = rate
        return np.asarray(self._resampler.resample_chunk(mono.astype(np.float32)), dtype=np.float32)


def _xiph_length(n: int) -> bytes:
    return b"\xff" * (n // 255) + bytes([n % 255])


class OggDecoder:
    """Ogg pages → packets → PCM. The first packet says the codec: Opus through
    libopus, Vorbis through PyAV (its three header packets become the decoder's
    extradata). Header packets are read, not played."""

    def __init__(self) -> None:
        self.reader = OggReader()
        self.format = "ogg"
        self.errors = 0
        self._opus: OpusDecoder | None = None
        self._vorbis: Any = None
        self._vorbis_headers: list[bytes] = []
        self._av = _AvAudio()
        self._packets = 0

    def feed(self, data: bytes) -> list[Audio]:
        self.reader.feed(data)
        out: list[Audio] = []
        while True:
            try:
                for packet, _page in self.reader.packets():
                    self._packet(packet, out)
                return out
            except OggError:
                self.errors += 1  # the reader resynchronises on the next page

    def _packet(self, packet: bytes, out: list[Audio]) -> None:
        self._packets += 1
        if self._packets == 1:
            if packet.startswith(b"OpusHead"):
                self.format, self._opus = "ogg/opus", OpusDecoder()
            elif packet.startswith(b"\x01vorbis"):
                self.format = "ogg/vorbis"
                self._vorbis_headers.append(packet)
            else:
                raise ValueError("the Ogg stream is neither Opus nor Vorbis")
            return
        if self._opus is not None:
            if packet.startswith(b"OpusTags"):
                return
            try:
                out.append(self._opus.decode(packet))
            except OpusCodecError:
                self.errors += 1
            return
        if len(self._vorbis_headers) < 3:
            self._vorbis_headers.append(packet)
            if len(self._vorbis_headers) == 3:
                self._open_vorbis()
            return
        try:
            for frame in self._vorbis.decode(self._av_module.Packet(packet)):
                out.append(self._av.convert(frame))
        except self._av_module.error.FFmpegError:
            self.errors += 1

    def _open_vorbis(self) -> None:
        import av  # imported here: only studios sending Vorbis pay for it

        identification, comment, setup = self._vorbis_headers
        self._av_module = av
        self._vorbis = av.CodecContext.create("vorbis", "r")
        self._vorbis.extradata = (b"\x02" + _xiph_length(len(identification)) + _xiph_length(len(comment))
                                  + identification + comment + setup)


class PyAvDecoder:
    """MP3 (and other self-framing codecs) through PyAV's parser and decoder."""

    def __init__(self, codec: str) -> None:
        import av  # imported here: only studios sending MP3 pay for it

        self.format = codec
        self._av = av
        self.context = av.CodecContext.create(codec, "r")
        self.errors = 0
        self._audio = _AvAudio()

    def feed(self, data: bytes) -> list[Audio]:
        out: list[Audio] = []
        try:
            packets = self.context.parse(data)
        except self._av.error.FFmpegError:
            self.errors += 1
            return out
        for packet in packets:
            try:
                frames = self.context.decode(packet)  # type: ignore[attr-defined]  # audio contexts have it
            except self._av.error.FFmpegError:
                self.errors += 1  # a damaged frame (or an ID3/Xing header): skip it
                continue
            out.extend(self._audio.convert(frame) for frame in frames)
        return [chunk for chunk in out if chunk.size]


def sniff_decoder(head: bytes) -> StreamDecoder | None:
    """Choose a decoder from the first bytes: consoles often send Ogg with an
    MP3 content type (ffmpeg's icecast output does), so the bytes decide.
    None means: not enough bytes yet to tell."""
    if len(head) < 4:
        return None
    if head.startswith(b"OggS"):
        return OggDecoder()
    if head.startswith(b"ID3") or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return PyAvDecoder("mp3")
    raise ValueError("the stream is neither Ogg (Opus or Vorbis) nor MP3")


@dataclass
class LiveStats:
    underruns: int = 0   # ticks with too little audio, filled with silence
    overruns: int = 0    # samples dropped because the buffer was over its maximum
    stalls: int = 0      # times the studio went quiet long enough to fall back


class LiveSource:
    """The studio's audio as a mixer source, behind a jitter buffer.

    Playout starts once ``target_delay`` of audio is buffered. A short gap is
    an underrun: the source plays silence (the studio is still on air) until
    the buffer has refilled to a target 100 ms larger than before, up to the
    maximum, so the buffer grows to fit how the console actually sends; after
    ``stall_frames`` ticks without audio the source reports nothing, so the
    channel falls back to what it would otherwise play, and playout restarts
    at the target delay when audio comes back. The buffer never holds more
    than ``max_delay``: past it the oldest audio is dropped, which keeps a
    console that sends in bursts from drifting ever further behind live.
    """

    def __init__(self, *, frame_samples: int = 960, target_delay_s: float = 0.2, max_delay_s: float = 1.0,
                 stall_s: float = 2.0, name: str = "live") -> None:
        self.name = name
        self.frame_samples = frame_samples
        self.target = int(target_delay_s * SAMPLE_RATE)
        self.maximum = max(int(max_delay_s * SAMPLE_RATE), self.target + frame_samples)
        self.stall_frames = max(1, int(stall_s * SAMPLE_RATE / frame_samples))
        self.stats = LiveStats()
        self._chunks: deque[Audio] = deque()
        self._buffered = 0
        self._playing = False
        self._quiet_ticks = 0
        self._rebuffering = False
        self._closed = False

    @property
    def depth_s(self) -> float:
        return self._buffered / SAMPLE_RATE

    @property
    def on_air(self) -> bool:
        return self._playing

    @property
    def finished(self) -> bool:
        return self._closed and self._buffered < self.frame_samples

    def close(self) -> None:
        """The studio disconnected: play out what is buffered, then end."""
        self._closed = True

    def push(self, pcm: Audio) -> None:
        if pcm.size == 0:
            return
        self._chunks.append(pcm.astype(np.float32, copy=False))
        self._buffered += pcm.size
        excess = self._buffered - self.maximum
        if excess > 0:
            self.stats.overruns += excess
            self._drop(excess)

    def _drop(self, count: int) -> None:
        while count > 0 and self._chunks:
            head = self._chunks[0]
            if head.size <= count:
                self._chunks.popleft()
                self._buffered -= head.size
                count -= head.size
            else:
                self._chunks[0] = head[count:]
                self._buffered -= count
                count = 0

    def _take(self, count: int) -> Audio:
        out = np.empty(count, dtype=np.float32)
        filled = 0
        while filled < count:
            head = self._chunks[0]
            n = min(head.size, count - filled)
            out[filled:filled + n] = head[:n]
            filled += n
            if n == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[n:]
        self._buffered -= count
        return out

    def read(self) -> Audio | None:
        n = self.frame_samples
        if not self._playing:
            if self._buffered >= self.target or (self._closed and self._buffered >= n):
                self._playing, self._rebuffering, self._quiet_ticks = True, False, 0
            else:
                return None
        if self._rebuffering:
            if self._buffered >= self.target:
                self._rebuffering = False
            elif not self._closed:
                return self._silence_or_stall()
        if self._buffered >= n:
            self._quiet_ticks = 0
            return self._take(n)
        # Underrun: play what is left, then silence while the buffer refills to a
        # target 100 ms larger, so a console that sends in bursts (ffmpeg's Ogg
        # muxer writes one page a second) stops underrunning after a few pages.
        self.stats.underruns += 1
        self.target = min(self.target + int(0.1 * SAMPLE_RATE), self.maximum - n)
        self._rebuffering = True
        partial = self._take(self._buffered) if self._buffered else np.zeros(0, np.float32)
        self._quiet_ticks = 1
        if self._closed:
            self._playing = False
            return np.concatenate([partial, np.zeros(n - partial.size, np.float32)]) if partial.size else None
        return np.concatenate([partial, np.zeros(n - partial.size, np.float32)])

    def _silence_or_stall(self) -> Audio | None:
        self._quiet_ticks += 1
        if self._quiet_ticks >= self.stall_frames:
            self.stats.stalls += 1
            self._playing = self._rebuffering = False
            return None  # the studio is gone quiet: the channel falls back
        return np.zeros(self.frame_samples, dtype=np.float32)

    def skip(self) -> None:
        if self._buffered >= self.frame_samples:
            self._take(self.frame_samples)
