"""Stream decoders: a studio console's continuous bytes, as they arrive, into
48 kHz mono PCM chunks.

Formats: Ogg (Opus, Vorbis, FLAC; chained: each new logical stream may
change codec), MP3, AAC in ADTS, and WebM/Matroska with Opus or Vorbis (what
browsers' MediaRecorder sends). The format is chosen from the first bytes,
never from the declared Content-Type (ffmpeg's icecast output labels Ogg
``audio/mpeg``); the declared type is only used to refuse, before any
audio, what is clearly something else (``check_declared_type``).

Pure: no sockets, no clock, memory bounded by the framers below. A stream
we cannot play raises ``UnsupportedFormat`` naming what it is, so the
session can end with a message a person understands.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import soxr

from broadcaster.codecs.mpegframes import MP3, MpegFramer
from broadcaster.codecs.ogg import OggError, OggPage, OggReader
from broadcaster.codecs.opus import OpusCodecError, OpusDecoder
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.codecs.webm import Track, WebmReader

SUPPORTED = "Ogg (Opus, Vorbis, FLAC), MP3, AAC (ADTS) or WebM/Opus"

# Declared types the bytes may then confirm; everything else is refused before any audio.
DECODED_TYPES = frozenset((
    "audio/ogg", "application/ogg", "audio/x-ogg", "audio/opus", "audio/vorbis", "audio/x-vorbis",
    "audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg", "audio/x-mp3", "audio/mpa",
    "audio/aac", "audio/aacp", "audio/x-aac", "audio/mp4a-latm",
    "audio/webm", "video/webm", "audio/x-matroska", "video/x-matroska", "audio/matroska",
))
OGG_MAGIC, EBML_MAGIC = b"OggS", b"\x1a\x45\xdf\xa3"
GENERIC_TYPES = frozenset(("", "application/octet-stream", "binary/octet-stream", "audio/*", "*/*"))


class UnsupportedFormat(ValueError):
    """A stream (or a declared type) that is not a format we decode; ``name`` says what it is."""

    def __init__(self, name: str, detail: str = "") -> None:
        self.name = name
        super().__init__(f"{name} is not a format broadcaster decodes{detail}: send {SUPPORTED}")


class StreamDecoder(Protocol):
    format: str  # a metrics label: ogg/opus, ogg/vorbis, ogg/flac, mp3, aac, webm/opus, ...
    errors: int  # damaged pages, frames or blocks skipped so far

    def feed(self, data: bytes) -> list[Audio]:
        """Decode what is complete in data (and earlier bytes); 48 kHz mono chunks.
        Raises UnsupportedFormat when the stream turns out to be something we cannot play."""


def check_declared_type(content_type: str) -> None:
    """Refuse a declared Content-Type that names a format we cannot decode (raw FLAC, WAV, MP4, text...).
    A missing or generic type passes: then the bytes decide."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in DECODED_TYPES and media not in GENERIC_TYPES:
        raise UnsupportedFormat(media)


def describe(head: bytes) -> str:
    """What the first bytes of a stream we cannot decode look like, for the log and the client."""
    if head.startswith(b"RIFF"):
        return "WAV (audio/wav)" if head[8:12] == b"WAVE" else "RIFF"
    if head.startswith(b"fLaC"):
        return "raw FLAC (audio/flac)"
    if head[4:8] == b"ftyp":
        return "MP4/M4A (video/mp4)"
    if head.startswith(b"FORM"):
        return "AIFF"
    if head.startswith(b"#!AMR"):
        return "AMR"
    if head.startswith(b"\x30\x26\xb2\x75"):
        return "ASF/WMA"
    if head.startswith(OGG_MAGIC):
        return "Ogg"
    if head.startswith(EBML_MAGIC):
        return "WebM/Matroska"
    if head.startswith(b"ID3") or head[:1] == b"\xff":
        return "MPEG audio"
    if head and all(32 <= b < 127 or b in b"\r\n\t" for b in head[:64]):
        return "text"
    return f"unrecognised data (starting {head[:8].hex(' ')})"


class AvAudio:
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


class AvCodec:
    """One PyAV decoder (imported on first use: only studios sending these formats pay for it)."""

    def __init__(self, codec: str, audio: AvAudio, extradata: bytes | None = None) -> None:
        import av

        self._av = av
        self.context = av.CodecContext.create(codec, "r")
        if extradata is not None:
            self.context.extradata = extradata
        self._audio = audio

    def decode(self, packet: bytes, out: list[Audio]) -> bool:
        """Append the packet's audio to out; False if it was damaged (and skipped)."""
        try:
            frames = self.context.decode(self._av.Packet(packet))  # type: ignore[attr-defined]
        except self._av.error.FFmpegError:
            return False
        out.extend(chunk for chunk in (self._audio.convert(f) for f in frames) if chunk.size)
        return True


def _xiph_length(n: int) -> bytes:
    return b"\xff" * (n // 255) + bytes([n % 255])


def vorbis_extradata(identification: bytes, comment: bytes, setup: bytes) -> bytes:
    """The three Vorbis headers as FFmpeg's extradata (Xiph lacing, as Matroska's CodecPrivate)."""
    return (b"\x02" + _xiph_length(len(identification)) + _xiph_length(len(comment))
            + identification + comment + setup)


class _OpusStream:
    """Opus (RFC 7845 in Ogg, or A_OPUS in Matroska) through libopus: mono at 48 kHz, no resampling."""

    def __init__(self) -> None:
        self._decoder = OpusDecoder()

    def packet(self, packet: bytes, out: list[Audio]) -> bool:
        if packet.startswith((b"OpusHead", b"OpusTags")):
            return True
        try:
            out.append(self._decoder.decode(packet))
        except OpusCodecError:
            return False
        return True


class _VorbisStream:
    """Ogg/Vorbis: three header packets become the decoder's extradata, then audio."""

    def __init__(self, identification: bytes, audio: AvAudio) -> None:
        self._headers = [identification]
        self._audio = audio
        self._codec: AvCodec | None = None

    def packet(self, packet: bytes, out: list[Audio]) -> bool:
        if self._codec is None:
            self._headers.append(packet)
            if len(self._headers) == 3:
                self._codec = AvCodec("vorbis", self._audio, vorbis_extradata(*self._headers))
            return True
        return self._codec.decode(packet, out)


class _FlacStream:
    """Ogg/FLAC (the Ogg FLAC mapping 1.0): the first packet carries STREAMINFO, metadata packets
    follow (their first byte is a block type, below 0xFF), then one FLAC frame per packet (sync 0xFFF8)."""

    STREAMINFO = slice(17, 51)  # 0x7F FLAC, version, header count, fLaC, block header: then 34 bytes

    def __init__(self, first: bytes, audio: AvAudio) -> None:
        if len(first) < self.STREAMINFO.stop:
            raise OggError("truncated Ogg/FLAC header")
        self._codec = AvCodec("flac", audio, first[self.STREAMINFO])

    def packet(self, packet: bytes, out: list[Audio]) -> bool:
        if not packet or packet[0] != 0xFF:
            return True  # a metadata block (VORBIS_COMMENT, PADDING, ...)
        return self._codec.decode(packet, out)


_OggStream = _OpusStream | _VorbisStream | _FlacStream
# Logical streams that carry no audio and may sit beside one: ignored (Skeleton, Theora, Kate).
_OGG_IGNORED = (b"fishead\0", b"\x80theora", b"\x80kate")
_OGG_UNSUPPORTED = {b"Speex   ": "Ogg/Speex", b"PCM     ": "Ogg/PCM", b"CELT    ": "Ogg/CELT"}


class OggDecoder:
    """Ogg pages → packets → PCM. Each logical stream's first (BOS) packet says its codec. A new BOS
    mid-stream is a chained stream (a liquidsoap or icecast track change): the codec restarts, maybe
    a different one, and nothing is counted as damage."""

    def __init__(self) -> None:
        self.reader = OggReader()
        self.format = "ogg"
        self.errors = 0
        self._serial: int | None = None
        self._stream: _OggStream | None = None
        self._audio = AvAudio()  # shared across chains: a resampler kept warm between tracks

    def feed(self, data: bytes) -> list[Audio]:
        self.reader.feed(data)
        out: list[Audio] = []
        while True:
            try:
                for packet, page in self.reader.packets():
                    self._packet(packet, page, out)
                return out
            except OggError:
                self.errors += 1  # the reader resynchronises on the next page

    def _packet(self, packet: bytes, page: OggPage, out: list[Audio]) -> None:
        if page.bos and page.serial != self._serial:
            self._begin(packet, page.serial)
            return
        if page.serial != self._serial or self._stream is None:
            return  # a stream beside ours (Skeleton, video), or one whose BOS page was lost
        if not packet:
            return  # a nil packet (liquidsoap ends each chain's EOS page with one): nothing to play
        if not self._stream.packet(packet, out):
            self.errors += 1

    def _begin(self, packet: bytes, serial: int) -> None:
        stream: _OggStream
        if packet.startswith(_OGG_IGNORED):
            return
        if packet.startswith(b"OpusHead"):
            self.format, stream = "ogg/opus", _OpusStream()
        elif packet.startswith(b"\x01vorbis"):
            self.format, stream = "ogg/vorbis", _VorbisStream(packet, self._audio)
        elif packet.startswith(b"\x7fFLAC"):
            self.format, stream = "ogg/flac", _FlacStream(packet, self._audio)
        else:
            name = next((n for magic, n in _OGG_UNSUPPORTED.items() if packet.startswith(magic)), "")
            raise UnsupportedFormat(name or f"Ogg with an unknown codec ({packet[:8]!r})")
        self._serial, self._stream = serial, stream


class MpegAudioDecoder:
    """MP3 (and MP1/MP2) or AAC in ADTS, frame by frame; the codec is read from each frame's header,
    so AAC is never taken for MP3. ID3 tags and Xing/Info frames between tracks are skipped, not
    counted; junk between frames is counted once per run."""

    def __init__(self) -> None:
        self.framer = MpegFramer()
        self.format = "mpeg"
        self.errors = 0
        self._audio = AvAudio()
        self._codecs: dict[str, AvCodec] = {}

    def feed(self, data: bytes) -> list[Audio]:
        out: list[Audio] = []
        junk = self.framer.junk_runs
        for frame in self.framer.feed(data):
            codec = self._codecs.get(frame.codec)
            if codec is None:
                codec = self._codecs[frame.codec] = AvCodec(frame.codec, self._audio)
            self.format = frame.codec
            if not codec.decode(frame.data, out):
                self.errors += 1
        self.errors += self.framer.junk_runs - junk
        return out


class WebmDecoder:
    """WebM/Matroska: the first audio track's blocks, Opus through libopus (what MediaRecorder and
    ffmpeg's webm muxer send) or Vorbis through PyAV. Another audio codec is refused by name."""

    def __init__(self) -> None:
        self.reader = WebmReader()
        self.format = "webm"
        self.errors = 0
        self._track: Track | None = None
        self._stream: _OpusStream | AvCodec | None = None
        self._audio = AvAudio()

    def feed(self, data: bytes) -> list[Audio]:
        out: list[Audio] = []
        errors = self.reader.errors
        for track, frame in self.reader.feed(data):
            if track is not self._track:
                self._begin(track)
            assert self._stream is not None
            ok = (self._stream.packet(frame, out) if isinstance(self._stream, _OpusStream)
                  else self._stream.decode(frame, out))
            if not ok:
                self.errors += 1
        self.errors += self.reader.errors - errors
        return out

    def _begin(self, track: Track) -> None:
        kind = "matroska" if track.doc_type == "matroska" else "webm"
        if track.codec_id == "A_OPUS":
            self._stream = _OpusStream()
        elif track.codec_id == "A_VORBIS":
            self._stream = AvCodec("vorbis", self._audio, track.codec_private)
        else:
            raise UnsupportedFormat(f"{kind.capitalize()} with {track.codec_id or 'an unnamed codec'}")
        self.format, self._track = f"{kind}/{track.codec_id[2:].lower()}", track


def sniff_decoder(head: bytes) -> StreamDecoder | None:
    """Choose a decoder from the first bytes. None means: not enough bytes yet to tell.
    Raises UnsupportedFormat naming what the bytes look like."""
    if len(head) < 4:
        return None
    if head.startswith(OGG_MAGIC):
        return OggDecoder()
    if head.startswith(EBML_MAGIC):
        return WebmDecoder()
    if head.startswith(b"ID3") or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return MpegAudioDecoder()
    if len(head) < 12 and head.startswith((b"RIFF", b"\0\0\0")):
        return None  # wait for the bytes that name it
    raise UnsupportedFormat(describe(head))


__all__ = ["AvAudio", "AvCodec", "GENERIC_TYPES", "DECODED_TYPES", "MP3", "MpegAudioDecoder", "OggDecoder",
           "StreamDecoder", "SUPPORTED", "UnsupportedFormat", "WebmDecoder", "check_declared_type", "describe",
           "sniff_decoder", "vorbis_extradata"]
