"""Ogg pages (RFC 3533) carrying Opus (RFC 7845) for HTTP listeners.

A channel encodes once and every listener receives the same Ogg bytes, so the
writer is built once per channel and turns Opus packets into finished pages.
The reader is the other half, used by relays and tests: it accepts whatever
chunks a socket delivers and recovers from corruption instead of giving up,
because a live stream cannot be restarted to fix one bad page.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "OGG_CAPTURE", "OggCrcError", "OggError", "OggOpusWriter", "OggPage", "OggReader", "build_page",
    "ogg_crc32", "opus_head", "opus_tags", "parse_opus_head", "parse_opus_tags", "parse_page",
]

OGG_CAPTURE = b"OggS"
FLAG_CONTINUED = 0x01
FLAG_BOS = 0x02
FLAG_EOS = 0x04
MAX_SEGMENTS = 255
MAX_BACKLOG = 1 << 20  # a reader holding more unparsed bytes than this is looking at junk
MAX_PACKET = 1 << 20  # no sane Opus packet comes close; bounds memory for hostile input
MAX_STREAMS = 64  # logical streams tracked at once: chains without EOS pages must not grow it forever

# capture, version, header_type, granule, serial, sequence, crc, page_segments
_HEADER = struct.Struct("<4sBBqIIIB")
_CRC_OFFSET = 22
_OPUS_HEAD = struct.Struct("<8sBBHIhB")


class OggError(ValueError):
    """Malformed Ogg or Opus header data: bad capture, CRC, version, length or layout."""


class OggCrcError(OggError):
    """A page arrived damaged; separate so readers can count corruption apart from junk."""


# The Ogg CRC is the unreflected twin of zlib's reflected CRC-32 (same polynomial).
# Mirroring every input byte and the 32-bit result lets zlib's C tables do the work,
# which is about a hundred times faster than a Python loop over a byte table.
_MIRROR = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc32(data: bytes) -> int:
    """CRC with polynomial 0x04C11DB7, initial value 0, no reflection, no final xor."""
    # zlib.crc32 inverts its start value on entry and its result on exit: 0xFFFFFFFF
    # both ways gives the Ogg initial value 0 and no final xor.
    raw = zlib.crc32(bytes(data).translate(_MIRROR), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int.from_bytes(raw.to_bytes(4, "little").translate(_MIRROR), "big")


def _lacing(length: int) -> bytes:
    """A packet ends at the first value below 255, hence the 0 after exact multiples."""
    return b"\xff" * (length // 255) + bytes((length % 255,))


@dataclass(frozen=True)
class OggPage:
    header_type: int
    granule: int
    serial: int
    sequence: int
    segments: bytes
    body: bytes

    @property
    def continued(self) -> bool:
        return bool(self.header_type & FLAG_CONTINUED)

    @property
    def bos(self) -> bool:
        return bool(self.header_type & FLAG_BOS)

    @property
    def eos(self) -> bool:
        return bool(self.header_type & FLAG_EOS)

    def serialize(self) -> bytes:
        """The page on the wire; validated here so a bad page never reaches a listener."""
        if len(self.segments) > MAX_SEGMENTS:
            raise OggError(f"{len(self.segments)} lacing values, at most {MAX_SEGMENTS} fit a page")
        if sum(self.segments) != len(self.body):
            raise OggError(f"lacing values sum to {sum(self.segments)}, body holds {len(self.body)} bytes")
        try:
            header = _HEADER.pack(OGG_CAPTURE, 0, self.header_type, self.granule, self.serial,
                                  self.sequence, 0, len(self.segments))
        except struct.error as exc:
            raise OggError(f"page field out of range: {exc}") from exc
        page = header + self.segments + self.body
        crc = ogg_crc32(page).to_bytes(4, "little")
        return page[:_CRC_OFFSET] + crc + page[_CRC_OFFSET + 4:]


def build_page(packets: Sequence[bytes], *, serial: int, sequence: int, granule: int,
               bos: bool = False, eos: bool = False, continued: bool = False) -> bytes:
    """One page holding whole packets; spanning packets across pages is the caller's business."""
    segments = b"".join(_lacing(len(p)) for p in packets)
    if len(segments) > MAX_SEGMENTS:
        raise OggError(f"packets need {len(segments)} lacing values, at most {MAX_SEGMENTS} fit a page")
    flags = (FLAG_CONTINUED if continued else 0) | (FLAG_BOS if bos else 0) | (FLAG_EOS if eos else 0)
    return OggPage(flags, granule, serial, sequence, segments, b"".join(packets)).serialize()


def _parse_at(buf: bytes | bytearray, start: int) -> tuple[OggPage, int] | None:
    """The page whose capture pattern is at `start`, or None while it is still incomplete."""
    if len(buf) - start < _HEADER.size:
        return None
    capture, version, flags, granule, serial, sequence, crc, count = _HEADER.unpack_from(buf, start)
    if capture != OGG_CAPTURE:
        raise OggError("no Ogg capture pattern")
    if version != 0:
        raise OggError(f"unsupported Ogg version {version}")
    seg_end = start + _HEADER.size + count
    if len(buf) < seg_end:
        return None
    segments = bytes(buf[seg_end - count:seg_end])
    end = seg_end + sum(segments)
    if len(buf) < end:
        return None
    raw = bytearray(buf[start:end])
    raw[_CRC_OFFSET:_CRC_OFFSET + 4] = b"\0\0\0\0"
    if ogg_crc32(bytes(raw)) != crc:
        raise OggCrcError(f"CRC mismatch on page {sequence} of stream {serial:#010x}")
    return OggPage(flags, granule, serial, sequence, segments, bytes(buf[seg_end:end])), end


def parse_page(data: bytes, offset: int = 0) -> tuple[OggPage, int]:
    """Strict parse of one page at `offset`; returns the page and the offset just past it."""
    parsed = _parse_at(data, offset)
    if parsed is None:
        raise OggError("truncated Ogg page")
    return parsed


def opus_head(*, channels: int = 1, pre_skip: int = 312, input_rate: int = 48000, output_gain: int = 0) -> bytes:
    """Identification header, mapping family 0, which only covers mono and stereo."""
    if channels not in (1, 2):
        raise OggError(f"mapping family 0 carries 1 or 2 channels, not {channels}")
    try:
        return _OPUS_HEAD.pack(b"OpusHead", 1, channels, pre_skip, input_rate, output_gain, 0)
    except struct.error as exc:
        raise OggError(f"OpusHead field out of range: {exc}") from exc


def opus_tags(vendor: str, comments: Sequence[str] = ()) -> bytes:
    """Comment header: length-prefixed UTF-8 strings, as in Vorbis comments."""
    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack("<I", len(raw)) + raw

    for comment in comments:
        if "=" not in comment:
            raise OggError(f"comment {comment!r} is not KEY=value")
    return b"".join([b"OpusTags", string(vendor), struct.pack("<I", len(comments)),
                     *map(string, comments)])


def parse_opus_head(packet: bytes) -> dict[str, int]:
    """Header fields as ints; the mapping table of families other than 0 is checked, not decoded."""
    if len(packet) < _OPUS_HEAD.size or not packet.startswith(b"OpusHead"):
        raise OggError("not an OpusHead packet")
    _, version, channels, pre_skip, rate, gain, family = _OPUS_HEAD.unpack_from(packet)
    if version >> 4 != 0:  # RFC 7845 5.1: a new major version is not decodable by us
        raise OggError(f"unsupported OpusHead version {version}")
    if channels == 0 or (family != 0 and len(packet) < _OPUS_HEAD.size + 2 + channels):
        raise OggError("OpusHead channel count or mapping table is invalid")
    return {"version": version, "channels": channels, "pre_skip": pre_skip, "input_rate": rate,
            "output_gain": gain, "mapping_family": family}


def parse_opus_tags(packet: bytes) -> tuple[str, list[str]]:
    """Vendor and comments; invalid UTF-8 is replaced, since tags never stop playback."""
    if not packet.startswith(b"OpusTags"):
        raise OggError("not an OpusTags packet")
    pos = 8

    def take(size: int) -> bytes:
        nonlocal pos
        if pos + size > len(packet):
            raise OggError("OpusTags packet is truncated")
        pos += size
        return packet[pos - size:pos]

    def string() -> str:
        return take(int.from_bytes(take(4), "little")).decode("utf-8", "replace")

    vendor = string()
    count = int.from_bytes(take(4), "little")
    if count > len(packet):  # each comment needs 4 bytes, so this is garbage, not a big list
        raise OggError("OpusTags comment count exceeds the packet")
    return vendor, [string() for _ in range(count)]


class OggOpusWriter:
    """Turns a channel's stream of Opus packets into Ogg pages, once per channel.

    Every listener gets the same page bytes; a listener joining late is meant to
    get `header_pages` first, which is why they are built once and kept.
    """

    def __init__(self, *, serial: int, pre_skip: int, page_samples: int, channels: int = 1,
                 vendor: str = "broadcaster", comments: Sequence[str] = ()) -> None:
        if page_samples <= 0:
            raise ValueError(f"page_samples must be positive, got {page_samples}")
        self.serial = serial
        self.pre_skip = pre_skip
        self.page_samples = page_samples
        self.header_pages: bytes = (
            build_page([opus_head(channels=channels, pre_skip=pre_skip)],
                       serial=serial, sequence=0, granule=0, bos=True)
            + build_page([opus_tags(vendor, comments)], serial=serial, sequence=1, granule=0))
        self._pending: list[bytes] = []
        self._pending_lacing = 0
        self._pending_samples = 0
        self._pages = 0
        self._samples = 0
        self._ended = False

    @property
    def pages_written(self) -> int:
        """Audio pages emitted; the two header pages are not counted."""
        return self._pages

    @property
    def samples_written(self) -> int:
        """Samples on emitted pages, i.e. the granule of the last page (pre-skip included)."""
        return self._samples

    def add_packet(self, packet: bytes, samples: int) -> bytes | None:
        """Queue one packet; returns page bytes when a page is finished.

        If the packet does not fit the pending page's lacing table, that page goes
        out first; should the packet then fill its own page too, both pages are
        returned back to back, which is still a valid byte stream for listeners.
        """
        if self._ended:
            raise ValueError("the stream has ended (EOS page written)")
        if samples < 0:
            raise ValueError(f"negative sample count {samples}")
        lacing = len(packet) // 255 + 1
        if lacing > MAX_SEGMENTS:
            raise OggError(f"a {len(packet)}-byte packet does not fit one Ogg page")
        out = b""
        if self._pending and self._pending_lacing + lacing > MAX_SEGMENTS:
            out += self._emit(eos=False)
        self._pending.append(packet)
        self._pending_lacing += lacing
        self._pending_samples += samples
        if self._pending_samples >= self.page_samples:
            out += self._emit(eos=False)
        return out or None

    def flush(self, eos: bool = False) -> bytes | None:
        """The pending page now (e.g. on pause or shutdown); with eos, close the stream."""
        if self._ended or not (self._pending or eos):
            return None
        return self._emit(eos=eos)

    def _emit(self, *, eos: bool) -> bytes:
        # RFC 7845 4: the granule counts every sample since the stream began, priming
        # (pre-skip) included; players subtract pre_skip for the presentation time.
        # An empty EOS page repeats the last granule so end trimming stays correct.
        self._samples += self._pending_samples
        page = build_page(self._pending, serial=self.serial, sequence=2 + self._pages,
                          granule=self._samples, eos=eos)
        self._pages += 1
        self._pending = []
        self._pending_lacing = 0
        self._pending_samples = 0
        self._ended = eos
        return page


class OggReader:
    """Incremental parser: feed arbitrary chunks (as they arrive from a socket), get pages and packets out.

    Errors raise OggError from the iterator, after the reader has stepped past the
    bad data, so calling pages() or packets() again continues with the next page.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_garbage = False
        # Per logical stream: (next expected page sequence, partial packet parts or None while
        # skipping the remainder of a packet that cannot be completed).
        self._streams: dict[int, tuple[int, bytearray | None]] = {}
        self.bad_crc = 0
        self.resyncs = 0
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> None:
        self._buf += data
        excess = len(self._buf) - MAX_BACKLOG
        if excess > 0:  # nobody is draining us, or it is all junk: keep only the newest bytes
            self._skip(excess)

    def _skip(self, count: int) -> None:
        """Drop bytes that are not part of a page; one run of junk counts as one resync."""
        if count <= 0:
            return
        del self._buf[:count]
        self.skipped_bytes += count
        if not self._in_garbage:
            self._in_garbage = True
            self.resyncs += 1

    def pages(self) -> Iterator[OggPage]:
        """Complete pages parsed so far, CRC-checked; incomplete data waits for more."""
        while True:
            start = self._buf.find(OGG_CAPTURE)
            if start < 0:
                # Keep a tail that may be the start of a capture pattern split across chunks.
                self._skip(len(self._buf) - (len(OGG_CAPTURE) - 1))
                return
            self._skip(start)
            try:
                parsed = _parse_at(self._buf, 0)
            except OggError as exc:
                if isinstance(exc, OggCrcError):
                    self.bad_crc += 1
                self._skip(1)  # step into the bad page so the next search finds the next capture
                raise
            if parsed is None:
                return
            page, end = parsed
            del self._buf[:end]
            self._in_garbage = False
            yield page

    def packets(self) -> Iterator[tuple[bytes, OggPage]]:
        """Whole packets, each with the page it completed on (whose granule applies to it)."""
        for page in self.pages():
            expected, parts = self._streams.get(page.serial, (page.sequence, bytearray()))
            if page.sequence != expected or not page.continued:
                # A lost page or a fresh packet start: a half-built packet cannot be completed,
                # and a continuation whose beginning we never saw must be skipped.
                parts = None if page.continued else bytearray()
            pos = 0
            overflow = False
            for value in page.segments:
                if parts is not None:
                    parts += page.body[pos:pos + value]
                    if len(parts) > MAX_PACKET:
                        parts, overflow = None, True
                pos += value
                if value < 255:
                    if parts is not None:
                        yield bytes(parts), page
                    parts = bytearray()
            self._streams.pop(page.serial, None)  # re-inserted last: the oldest-seen stream is dropped first
            if not page.eos:
                self._streams[page.serial] = ((page.sequence + 1) & 0xFFFFFFFF, parts)
                if len(self._streams) > MAX_STREAMS:
                    del self._streams[next(iter(self._streams))]
            if overflow:
                raise OggError(f"packet in stream {page.serial:#010x} exceeds {MAX_PACKET} bytes")
