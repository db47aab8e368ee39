"""RTP (RFC 3550) carrying Opus (RFC 7587): the loudspeaker media stream.

The fixed header, as on the wire (RFC 3550 section 5.1)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The sender side is the hot path (one packet per channel per frame, then the
same bytes go to every loudspeaker), so it builds headers with one
precompiled ``struct.Struct`` and never allocates a ``RtpPacket``. The
receiver side (``parse_rtp``) reads datagrams from the network, i.e. from
anyone: every length it uses is checked first, so malformed input can only
ever raise ``RtpError``.

Opus always uses a 48 kHz RTP clock whatever the encoder's internal rate
(RFC 7587 section 4.1), which is why ``OPUS_CLOCK_RATE`` is a constant.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "OPUS_CLOCK_RATE",
    "OPUS_PAYLOAD_TYPE",
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpPacket",
    "RtpPacketizer",
    "parse_rtp",
    "rtp_sequence",
    "seq_delta",
]

RTP_VERSION = 2
OPUS_PAYLOAD_TYPE = 111  # dynamic PT we use by default
OPUS_CLOCK_RATE = 48000
RTP_HEADER_SIZE = 12

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_EXTENSION = struct.Struct("!HH")  # profile-defined id, length in 32-bit words
_pack_header = _HEADER.pack

_MAX_CSRCS = 15  # CC is 4 bits


class RtpError(ValueError):
    """Bytes that are not a well-formed RTP packet, or fields that cannot form one."""


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise RtpError(f"{name} {value} does not fit in {bits} bits")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet as the receiver sees it.

    A header extension, if the sender used one, is skipped by ``parse_rtp``
    and padding is removed: neither carries anything for Opus, so
    ``serialize`` of a parsed packet equals the original bytes only when the
    original had neither.
    """

    payload_type: int
    sequence: int  # 16-bit
    timestamp: int  # 32-bit
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Checked here rather than in serialize so a bad value fails where it
        # was made, not later as a struct.error deep in the send path.
        _check_range("payload type", self.payload_type, 7)
        _check_range("sequence", self.sequence, 16)
        _check_range("timestamp", self.timestamp, 32)
        _check_range("SSRC", self.ssrc, 32)
        if len(self.csrcs) > _MAX_CSRCS:
            raise RtpError(f"{len(self.csrcs)} CSRCs, at most {_MAX_CSRCS} fit in the CC field")
        for csrc in self.csrcs:
            _check_range("CSRC", csrc, 32)

    def serialize(self) -> bytes:
        header = _pack_header(
            (RTP_VERSION << 6) | len(self.csrcs),
            (0x80 if self.marker else 0) | self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
        )
        if self.csrcs:
            header += struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        return header + self.payload


def parse_rtp(data: bytes) -> RtpPacket:
    """Decode one datagram; anything malformed or truncated raises ``RtpError``.

    Padding must be well formed (a count of at least 1, since the count byte
    counts itself, and no larger than what follows the header) because a
    bad count means the payload boundary is unknown: guessing would feed
    garbage to the decoder.
    """
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise RtpError(f"truncated RTP packet: {size} bytes, the fixed header alone is {RTP_HEADER_SIZE}")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTP version {version}, expected {RTP_VERSION}")
    csrc_count = first & 0x0F
    offset = RTP_HEADER_SIZE + 4 * csrc_count
    if size < offset:
        raise RtpError(f"truncated RTP packet: {size} bytes, header with {csrc_count} CSRCs needs {offset}")
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE) if csrc_count else ()
    if first & 0x10:
        if size < offset + _EXTENSION.size:
            raise RtpError(f"truncated RTP packet: {size} bytes, header extension starts at {offset}")
        _profile, words = _EXTENSION.unpack_from(data, offset)
        offset += _EXTENSION.size + 4 * words
        if size < offset:
            raise RtpError(f"truncated RTP packet: {size} bytes, header extension ends at {offset}")
    end = size
    if first & 0x20:
        if size == offset:
            raise RtpError("RTP padding bit set but the packet has no byte after the header")
        padding = data[-1]
        if padding == 0 or padding > size - offset:
            raise RtpError(f"RTP padding count {padding} invalid: {size - offset} bytes follow the header")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=csrcs,
    )


def rtp_sequence(data: bytes) -> int:
    """The sequence number of a raw packet, for counting millions of them.

    Load tests only need sequence numbers to count loss and reordering, and
    a full parse costs an allocation per packet; so this reads two bytes and
    deliberately checks nothing but the length (not even the version).
    """
    if len(data) < RTP_HEADER_SIZE:
        raise RtpError(f"truncated RTP packet: {len(data)} bytes, the fixed header alone is {RTP_HEADER_SIZE}")
    return (data[2] << 8) | data[3]


def seq_delta(a: int, b: int) -> int:
    """``b - a`` for 16-bit sequence numbers, in [-32768, 32767].

    Sequence numbers wrap every 65536 packets (22 minutes at 20 ms frames),
    so plain subtraction would report a wrap as a jump of -65535; taking the
    shorter way round the circle is the usual RFC 3550 interpretation.
    """
    return ((b - a + 0x8000) & 0xFFFF) - 0x8000


class RtpPacketizer:
    """One per channel: a single SSRC, sequence and timestamp stream.

    So every loudspeaker of the channel gets byte-identical packets, and the
    channel builds each packet once, however many loudspeakers it has.

    The timestamp is media time, advanced by the samples each packet
    carries and never read from a clock: receivers derive playout and
    gap sizes from it, and a clock-derived value would jitter with the
    server's scheduling.
    """

    __slots__ = ("_ssrc", "_payload_type", "_byte1", "_byte1_marker", "_sequence", "_timestamp")

    def __init__(self, *, ssrc: int, payload_type: int = OPUS_PAYLOAD_TYPE, first_sequence: int = 0,
                 first_timestamp: int = 0) -> None:
        # Validated once here so that packetize, the hot path, cannot fail.
        _check_range("SSRC", ssrc, 32)
        _check_range("payload type", payload_type, 7)
        _check_range("first sequence", first_sequence, 16)
        _check_range("first timestamp", first_timestamp, 32)
        self._ssrc = ssrc
        self._payload_type = payload_type
        self._byte1 = payload_type
        self._byte1_marker = 0x80 | payload_type
        self._sequence = first_sequence
        self._timestamp = first_timestamp

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def payload_type(self) -> int:
        return self._payload_type

    @property
    def sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def timestamp(self) -> int:
        """The timestamp the next packet will carry."""
        return self._timestamp

    def packetize(self, payload: bytes, samples: int, marker: bool = False) -> bytes:
        """The packet carrying ``payload`` now; then advance to the next one.

        ``samples`` is the duration of ``payload`` at 48 kHz, by which the
        next packet's timestamp moves on.
        """
        if samples < 0:
            raise ValueError(f"samples must not be negative, got {samples}")
        header = _pack_header(0x80, self._byte1_marker if marker else self._byte1,
                              self._sequence, self._timestamp, self._ssrc)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        return header + payload

    def skip(self, samples: int) -> None:
        """Let media time pass without sending anything.

        A channel with no subscribers keeps its timestamp in step with real
        time, so a receiver that joins later sees timestamps consistent with
        the gap, while the sequence number stays put: nothing was lost.
        """
        if samples < 0:
            raise ValueError(f"samples must not be negative, got {samples}")
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
