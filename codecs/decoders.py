"""Stream decoders: a studio console's continuous Ogg/Opus, Ogg/Vorbis or
MP3 bytes, as they arrive, into 48 kHz mono PCM chunks.

Pure: no sockets, no clock. The live source (broadcaster.core.sources.live)
buffers what these produce.
"""

from __future__ import annotations

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


