"""MPEG audio (MP1/MP2/MP3) and AAC ADTS frames cut out of a continuous byte stream.

Both start with a 12-bit sync of ones, so a parser that only looks for 0xFFF
takes AAC for MP3 (and plays silence). They differ in the two layer bits:
ADTS always has layer 00, which MPEG audio reserves. Cutting the frames
ourselves (instead of PyAV's parser) is what lets a studio's track changes
pass as what they are: an ID3v2 tag, an ID3v1 ``TAG`` or a Xing/Info/VBRI
header frame between tracks is skipped and counted as a tag, not as damage.

Pure: bytes in, frames out; memory is at most one frame plus what was fed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MP3, AAC = "mp3", "aac"

# kbit/s by bitrate index, for (MPEG-1 or not, layer 1..3)
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Hz by version bits (0 = MPEG-2.5, 2 = MPEG-2, 3 = MPEG-1) and rate index
_RATES = {0: (11025, 12000, 8000), 2: (22050, 24000, 16000), 3: (44100, 48000, 32000)}
ADTS_RATE_INDICES = 13  # 96 kHz .. 7.35 kHz; the rest are reserved
HEADER_BYTES = 10  # enough to tell an ID3v2 header, an MPEG header or an ADTS header
JUNK_CHECKS, JUNK_CHECK_BYTES = 64, 256  # candidate headers checked in junk: 64 a feed, and one per 256 bytes


def _byte_class(accept: list[int]) -> bytes:
    return b"[" + b"".join(re.escape(bytes([b])) for b in accept) + b"]"


# Where a frame or a tag could start: junk is stepped over at C speed, not byte by byte in Python
# (a flood of 0xFF, or random bytes, costs a regex scan, not a header check per byte).
_MPEG_1 = [b for b in range(0xE0, 0x100) if (b >> 3) & 3 != 1 and (b >> 1) & 3 != 0]
_MPEG_2 = [b for b in range(256) if b >> 4 not in (0, 15) and (b >> 2) & 3 != 3]
_ADTS_1 = [b for b in range(256) if b & 0xF6 == 0xF0]
_ADTS_2 = [b for b in range(256) if (b >> 2) & 0xF < ADTS_RATE_INDICES]
_CANDIDATE = re.compile(b"\xff" + _byte_class(_MPEG_1) + _byte_class(_MPEG_2) + b"|\xff" + _byte_class(_ADTS_1)
                        + _byte_class(_ADTS_2) + b"|ID3|TAG")


@dataclass(frozen=True)
class Frame:
    codec: str  # MP3 (any MPEG audio layer: PyAV's mp3 decoder family) or AAC
    data: bytes


def mpeg_frame_length(h: bytes | bytearray) -> int | None:
    """Length of the MPEG audio frame whose 4-byte header starts h, or None if it is not one."""
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    bitrate_index, rate_index, padding = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values (layer 00 is ADTS); free-format streams are not taken
    layer = 4 - layer_bits
    bitrate = _BITRATES[(version == 3, layer)][bitrate_index] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    if layer == 3 and version != 3:
        return 72 * bitrate // rate + padding
    return 144 * bitrate // rate + padding


def adts_frame_length(h: bytes | bytearray) -> int | None:
    """Length of the ADTS (AAC) frame whose 7-byte header starts h, or None if it is not one."""
    if len(h) < 7 or h[0] != 0xFF or h[1] & 0xF6 != 0xF0:
        return None
    if (h[2] >> 2) & 0xF >= ADTS_RATE_INDICES:
        return None
    length = ((h[3] & 0x03) << 11) | (h[4] << 3) | (h[5] >> 5)
    header = 7 if h[1] & 0x01 else 9  # protection_absent = 0: a CRC follows the header
    return length if length > header else None


def frame_at(h: bytes | bytearray) -> tuple[str, int] | None:
    """(codec, length) of the frame starting h."""
    length = mpeg_frame_length(h)
    if length is not None:
        return MP3, length
    length = adts_frame_length(h)
    if length is not None:
        return AAC, length
    return None


def is_info_frame(frame: bytes) -> bool:
    """A Xing/Info (LAME) or VBRI header frame: metadata of a file, silent if decoded."""
    if len(frame) < 40 or (frame[1] >> 1) & 3 != 1:  # only layer III carries them
        return False
    mpeg1, mono = (frame[1] >> 3) & 3 == 3, frame[3] >> 6 == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    offset = 4 + (0 if frame[1] & 1 else 2) + side_info
    return frame[offset:offset + 4] in (b"Xing", b"Info") or frame[36:40] == b"VBRI"


def _tag_length(h: bytes | bytearray) -> int | None:
    """Bytes of an ID3v2 tag or an ID3v1 TAG block starting h."""
    if h[:3] == b"ID3" and len(h) >= 10 and not any(b & 0x80 for b in h[6:10]):
        size = (h[6] << 21) | (h[7] << 14) | (h[8] << 7) | h[9]
        return 10 + size + (10 if h[5] & 0x10 else 0)
    if h[:3] == b"TAG":
        return 128
    return None


class MpegFramer:
    """Frames out of an MP3 or ADTS byte stream fed in arbitrary pieces.

    Outside a confirmed run of frames (at the start, and after junk) a header
    only counts when the next frame's header (or a tag) follows it, so a stray
    0xFFF in junk does not start a false frame."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0  # bytes of a tag still to drop, possibly not received yet
        self._synced = False
        self._in_junk = False
        self.junk_runs = 0  # runs of bytes that are neither frames nor tags: damage
        self.junk_bytes = 0
        self.tags = 0  # ID3 tags and Xing/Info frames skipped: not damage
        self._budget = 0

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        # Header checks in junk are Python work per candidate: bounded per byte fed, so bytes crafted
        # to look like headers every few bytes cost no more than a plain decode (the rest is dropped).
        self._budget = JUNK_CHECKS + len(data) // JUNK_CHECK_BYTES
        out: list[Frame] = []
        while True:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return out
            if len(buf) < HEADER_BYTES:
                return out
            tag = _tag_length(buf)
            if tag is not None:
                self._skip, self._in_junk = tag, False
                self.tags += 1
                continue
            found = frame_at(buf)
            if found is not None:
                codec, length = found
                need = length if self._synced else length + HEADER_BYTES
                if len(buf) < need:
                    return out
                if not self._synced:
                    after = buf[length:length + HEADER_BYTES]
                    if frame_at(after) is None and _tag_length(after) is None:
                        self._junk()
                        continue
                    self._synced = True
                frame = bytes(buf[:length])
                del buf[:length]
                self._in_junk = False
                if codec == MP3 and is_info_frame(frame):
                    self.tags += 1
                else:
                    out.append(Frame(codec, frame))
                continue
            self._junk()

    def _junk(self) -> None:
        """Step over bytes up to the next place a frame or a tag could start."""
        buf = self._buf
        if not self._in_junk:
            self._in_junk = True
            self.junk_runs += 1
        self._synced = False
        self._budget -= 1
        found = _CANDIDATE.search(buf, 1) if self._budget > 0 else None
        n = found.start() if found is not None else max(1, len(buf) - 2)
        del buf[:n]
        self.junk_bytes += n
