"""Fragmented MP4 (ISO 14496-12, CMAF-style) for HLS audio: one init segment, then fragments.

The other HLS segment format (``hls.container: fmp4``), for players and CDNs
that prefer CMAF. Like codecs/mpegts.py, a small pure writer: raw AAC frames
(no ADTS header) and sample timestamps in, bytes out. The init segment
(``ftyp`` + ``moov``) describes one AAC-LC track; each media segment is a
``moof`` (with its decode time, ``tfdt``) and an ``mdat``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

TRACK_ID = 1


def box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _descriptor(tag: int, body: bytes) -> bytes:
    """An MPEG-4 descriptor with the 4-byte size form players all accept."""
    size = len(body)
    return bytes((tag, 0x80 | (size >> 21) & 0x7F, 0x80 | (size >> 14) & 0x7F, 0x80 | (size >> 7) & 0x7F,
                  size & 0x7F)) + body


def audio_specific_config(sample_rate: int = 48000, channels: int = 1) -> bytes:
    """AAC-LC's two-byte AudioSpecificConfig (ISO 14496-3 1.6.2.1)."""
    from broadcaster.codecs.mpegts import ADTS_RATES

    index = ADTS_RATES.index(sample_rate)
    value = (2 << 11) | (index << 7) | (channels << 3)
    return value.to_bytes(2, "big")


def init_segment(sample_rate: int = 48000, channels: int = 1, bitrate: int = 64000) -> bytes:
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    esds = full_box(b"esds", 0, 0, _descriptor(3, struct.pack(">HB", TRACK_ID, 0) + _descriptor(
        4, bytes((0x40, 0x15)) + (0).to_bytes(3, "big") + struct.pack(">II", bitrate, bitrate)
        + _descriptor(5, audio_specific_config(sample_rate, channels))) + _descriptor(6, b"\x02")))
    mp4a = box(b"mp4a", b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 8,
               struct.pack(">HHHHI", channels, 16, 0, 0, sample_rate << 16), esds)
    empty_table = struct.pack(">I", 0)
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, struct.pack(">I", 1), mp4a),
               full_box(b"stts", 0, 0, empty_table), full_box(b"stsc", 0, 0, empty_table),
               full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)), full_box(b"stco", 0, 0, empty_table))
    minf = box(b"minf", full_box(b"smhd", 0, 0, struct.pack(">HH", 0, 0)),
               box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1))), stbl)
    mdia = box(b"mdia",
               full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, sample_rate, 0, 0x55C4, 0)),  # 'und'
               full_box(b"hdlr", 0, 0, struct.pack(">I", 0), b"soun", b"\x00" * 12, b"broadcaster\x00"),
               minf)
    trak = box(b"trak", full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, TRACK_ID, 0, 0), b"\x00" * 8,
                                 struct.pack(">hhhH", 0, 0, 0x0100, 0), matrix, struct.pack(">II", 0, 0)), mdia)
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, sample_rate, 0), struct.pack(">IH", 0x10000, 0x0100),
                    b"\x00" * 10, matrix, b"\x00" * 24, struct.pack(">I", TRACK_ID + 1))
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0)))
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    return ftyp + box(b"moov", mvhd, trak, mvex)


class Fmp4Writer:
    """Media segments of one AAC track: ``segment(frames, first_sample)`` with raw AAC frames
    of ``frame_samples`` each, the first at sample ``first_sample`` of the stream."""

    def __init__(self, frame_samples: int = 1024) -> None:
        self.frame_samples = frame_samples
        self._sequence = 0

    def segment(self, frames: Sequence[bytes], first_sample: int) -> bytes:
        self._sequence += 1
        trun_flags = 0x000001 | 0x000100 | 0x000200  # data offset, sample durations, sample sizes
        samples = b"".join(struct.pack(">II", self.frame_samples, len(frame)) for frame in frames)

        def moof(data_offset: int) -> bytes:
            return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", self._sequence)),
                       box(b"traf", full_box(b"tfhd", 0, 0x020000, struct.pack(">I", TRACK_ID)),  # base is moof
                           full_box(b"tfdt", 1, 0, struct.pack(">Q", first_sample)),
                           full_box(b"trun", 0, trun_flags, struct.pack(">Ii", len(frames), data_offset), samples)))

        head = moof(0)
        head = moof(len(head) + 8)  # the first byte of mdat's payload, counted from the moof
        return head + box(b"mdat", *frames)
