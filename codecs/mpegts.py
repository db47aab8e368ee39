"""MPEG-TS for HLS audio: ADTS AAC frames into 188-byte transport packets (ISO 13818-1).

Written here rather than through ffmpeg's muxer because an HLS segmenter needs
what that muxer makes awkward: every segment must start with a PAT and a PMT,
continuity counters and timestamps must run on across segments, and a segment
must end exactly where we cut it. The whole format for one audio stream is a
PAT, a PMT and PES packets, so it is a small pure packetizer: frames and
sample timestamps in, bytes out; no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

PACKET = 188
PAYLOAD = PACKET - 4
PMT_PID = 0x1000
AUDIO_PID = 0x100
STREAM_TYPE_ADTS_AAC = 0x0F
PTS_HZ = 90_000
PTS_OFFSET = 10 * PTS_HZ  # timestamps start at 10 s, so a PCR ahead of the PTS is never negative
PCR_LEAD = PTS_HZ // 10    # the clock reference runs 100 ms ahead of what it presents
FRAMES_PER_PES = 8         # about 170 ms of AAC per PES packet at 48 kHz
MASK_33 = (1 << 33) - 1

ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2 (polynomial 0x04C11DB7, not reflected, no final xor), for PSI sections."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def adts_header(payload_size: int, sample_rate: int = 48000, channels: int = 1, profile: int = 2) -> bytes:
    """The 7-byte ADTS header (no CRC) of one raw AAC frame; ``profile`` is the MPEG-4
    audio object type (2: AAC-LC)."""
    index = ADTS_RATES.index(sample_rate)
    length = payload_size + 7
    if length >= 1 << 13:
        raise ValueError(f"an AAC frame of {payload_size} bytes does not fit ADTS")
    return bytes((
        0xFF, 0xF1,
        ((profile - 1) << 6) | (index << 2) | (channels >> 2),
        ((channels & 3) << 6) | (length >> 11),
        (length >> 3) & 0xFF,
        ((length & 7) << 5) | 0x1F,
        0xFC,
    ))


def _section(table_id: int, id_field: int, body: bytes) -> bytes:
    """A PSI section with the syntax header (version 0, current) and its CRC."""
    length = 5 + len(body) + 4
    head = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF, id_field >> 8, id_field & 0xFF, 0xC1, 0, 0))
    section = head + body
    return section + crc32_mpeg(section).to_bytes(4, "big")


PAT_SECTION = _section(0x00, 1, bytes((0, 1, 0xE0 | (PMT_PID >> 8), PMT_PID & 0xFF)))
PMT_SECTION = _section(0x02, 1, bytes((
    0xE0 | (AUDIO_PID >> 8), AUDIO_PID & 0xFF, 0xF0, 0,                          # PCR PID, no program info
    STREAM_TYPE_ADTS_AAC, 0xE0 | (AUDIO_PID >> 8), AUDIO_PID & 0xFF, 0xF0, 0)))  # the one stream


def _pts_bytes(pts: int) -> bytes:
    pts &= MASK_33
    return bytes((
        0x21 | ((pts >> 29) & 0x0E),
        (pts >> 22) & 0xFF, 0x01 | ((pts >> 14) & 0xFE),
        (pts >> 7) & 0xFF, 0x01 | ((pts << 1) & 0xFE),
    ))


def _pcr_bytes(base: int) -> bytes:
    base &= MASK_33
    return bytes(((base >> 25) & 0xFF, (base >> 17) & 0xFF, (base >> 9) & 0xFF, (base >> 1) & 0xFF,
                  ((base & 1) << 7) | 0x7E, 0))


class TsWriter:
    """One audio program's transport stream, cut into segments by the caller.

    ``segment(frames, first_sample)`` returns a segment that starts with a PAT and a
    PMT and then carries ``frames`` (ADTS frames, each ``frame_samples`` long, the first
    at sample ``first_sample`` of the stream). Continuity counters carry on from the
    previous segment, so the segments played in order are one valid stream."""

    def __init__(self, sample_rate: int = 48000, frame_samples: int = 1024) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self._cc: dict[int, int] = {}

    def _packets(self, pid: int, payload: bytes, *, pcr: int | None = None, random_access: bool = False) -> bytes:
        """``payload`` (a PSI section with its pointer field, or a PES packet) as TS packets:
        the first flagged as a unit start (with the PCR, if given), the last padded by
        adaptation-field stuffing (PSI would allow 0xFF filling; stuffing suits both)."""
        out = bytearray()
        pos, first = 0, True
        while first or pos < len(payload):
            adaptation = b""
            if first and (pcr is not None or random_access):
                flags = (0x40 if random_access else 0) | (0x10 if pcr is not None else 0)
                adaptation = bytes((flags,)) + (_pcr_bytes(pcr) if pcr is not None else b"")
            room = PAYLOAD - (1 + len(adaptation) if adaptation else 0)
            chunk = payload[pos:pos + room]
            pos += len(chunk)
            short = room - len(chunk)
            if short > 0:  # the last piece: stuff the adaptation field to fill the packet
                if not adaptation:
                    adaptation = b"" if short == 1 else b"\x00" + b"\xff" * (short - 2)
                else:
                    adaptation += b"\xff" * short
            cc = self._cc.get(pid, 0)
            self._cc[pid] = (cc + 1) & 0x0F
            control = 0x30 if (adaptation or short > 0) else 0x10
            out += bytes((0x47, (0x40 if first else 0) | (pid >> 8), pid & 0xFF, control | cc))
            if control == 0x30:
                out += bytes((len(adaptation),)) + adaptation
            out += chunk
            first = False
        return bytes(out)

    def _pes(self, frames: Sequence[bytes], pts: int) -> bytes:
        data = b"".join(frames)
        length = 3 + 5 + len(data)
        head = b"\x00\x00\x01\xc0" + (length if length <= 0xFFFF else 0).to_bytes(2, "big")
        return head + b"\x84\x80\x05" + _pts_bytes(pts) + data

    def pts(self, sample: int) -> int:
        """The 90 kHz timestamp of a stream sample (PTS_OFFSET added)."""
        return PTS_OFFSET + sample * PTS_HZ // self.sample_rate

    def segment(self, frames: Sequence[bytes], first_sample: int) -> bytes:
        out = bytearray(self._packets(0, b"\x00" + PAT_SECTION))
        out += self._packets(PMT_PID, b"\x00" + PMT_SECTION)
        for start in range(0, len(frames), FRAMES_PER_PES):
            group = frames[start:start + FRAMES_PER_PES]
            pts = self.pts(first_sample + start * self.frame_samples)
            out += self._packets(AUDIO_PID, self._pes(group, pts), pcr=pts - PCR_LEAD, random_access=True)
        return bytes(out)
