"""WebM/Matroska audio blocks out of a live byte stream (what browsers'
MediaRecorder and ffmpeg's webm/matroska muxers send to a studio mount).

A live stream has a Segment and Clusters of unknown size and never ends, so a
file demuxer (which seeks, and wants the Segment's size) does not fit. This
reads EBML elements as they arrive: the few masters on the way to audio
(Segment, Tracks, TrackEntry, Cluster, BlockGroup) are entered, the track
fields and blocks are read whole (each bounded), everything else (SeekHead,
Cues, Tags, Void, ...) is skipped without being buffered. Junk makes the
reader look for the next Cluster (or EBML header).

Pure: bytes in, (track, frame) pairs out; memory is at most one element.
"""

from __future__ import annotations

from dataclasses import dataclass

EBML = 0x1A45DFA3
DOC_TYPE = 0x4282
SEGMENT, TRACKS, TRACK_ENTRY, CLUSTER, BLOCK_GROUP = 0x18538067, 0x1654AE6B, 0xAE, 0x1F43B675, 0xA0
TRACK_NUMBER, TRACK_TYPE, CODEC_ID, CODEC_PRIVATE = 0xD7, 0x83, 0x86, 0x63A2
SIMPLE_BLOCK, BLOCK = 0xA3, 0xA1
MASTERS = frozenset((SEGMENT, TRACKS, TRACK_ENTRY, CLUSTER, BLOCK_GROUP))
READ = frozenset((EBML, TRACK_NUMBER, TRACK_TYPE, CODEC_ID, CODEC_PRIVATE, SIMPLE_BLOCK, BLOCK))
RESYNC_IDS = (CLUSTER.to_bytes(4, "big"), EBML.to_bytes(4, "big"))
# Once clusters flow, only these may appear (a cluster's children, and the top-level elements that
# may follow clusters): anything else is junk, not an element to skip.
CLUSTER_LEVEL = frozenset((
    0xE7, 0xA7, 0xAB, SIMPLE_BLOCK, BLOCK_GROUP, BLOCK, 0x9B, 0xFB, 0x75A1, 0xA4, 0x75A2, 0xEC, 0xBF, 0x5854,
    0x8E, 0xC8, 0xCB, 0xCC, 0xCD,  # inside a BlockGroup: slices, reference frame and the like
    CLUSTER, EBML, SEGMENT, 0x1C53BB6B, 0x1254C367, 0x114D9B74, 0x1549A966, TRACKS, 0x1043A770, 0x1941A469,
))
MAX_BLOCK = 256 << 10  # an audio block (even laced) is a few kilobytes
JUNK_CHECKS, JUNK_CHECK_BYTES = 64, 256  # SimpleBlock candidates checked in junk: 64 a feed, one per 256 bytes
MAX_ELEMENT = 1 << 20  # a block, or a CodecPrivate: far below this in any audio stream
MAX_SKIP = 64 << 20  # an element to skip larger than this is junk, not metadata
TRACK_TYPE_AUDIO = 2


class WebmError(ValueError):
    """A malformed element or block (counted as damage by the caller)."""


@dataclass(frozen=True)
class Track:
    number: int
    codec_id: str  # Matroska codec ID, e.g. A_OPUS, A_VORBIS
    codec_private: bytes
    doc_type: str  # webm or matroska


def read_vint(data: bytes | bytearray, pos: int, *, marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at pos: (value, length), None if incomplete.
    IDs keep their length marker (marker=True); sizes drop it, and all ones means unknown (-1)."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first == 0:
        raise WebmError("invalid EBML variable-length integer")
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = int.from_bytes(data[pos:pos + length], "big")
    if marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    return (-1 if value == (1 << (7 * length)) - 1 else value), length


def block_frames(body: bytes) -> tuple[int, list[bytes]]:
    """(track number, frames) of a SimpleBlock or Block body, with any of the three lacings."""
    found = read_vint(body, 0, marker=False)
    if found is None or len(body) < found[1] + 3:
        raise WebmError("truncated block header")
    track, pos = found[0], found[1] + 3  # track, 16-bit timecode, flags
    lacing = (body[pos - 1] >> 1) & 3
    if lacing == 0:
        return track, [body[pos:]]
    if pos >= len(body):
        raise WebmError("truncated lacing header")
    count, pos = body[pos] + 1, pos + 1
    sizes: list[int] = []
    if lacing == 1:  # Xiph: each size as a run of 255s and a final byte
        for _ in range(count - 1):
            size = 0
            while True:
                if pos >= len(body):
                    raise WebmError("truncated Xiph lacing")
                size, pos = size + body[pos], pos + 1
                if body[pos - 1] != 255:
                    break
            sizes.append(size)
    elif lacing == 3:  # EBML: the first size, then signed differences
        for i in range(count - 1):
            found = read_vint(body, pos, marker=False)
            if found is None:
                raise WebmError("truncated EBML lacing")
            value, n = found
            if i:
                value = sizes[-1] + value - ((1 << (7 * n - 1)) - 1)
            sizes.append(value)
            pos += n
    else:  # fixed: equal sizes
        rest = len(body) - pos
        if rest % count:
            raise WebmError("fixed lacing that does not divide the block")
        sizes = [rest // count] * (count - 1)
    frames = []
    for size in sizes:
        if size < 0 or pos + size > len(body):
            raise WebmError("a laced frame runs past its block")
        frames.append(body[pos:pos + size])
        pos += size
    frames.append(body[pos:])
    return track, frames


class WebmReader:
    """Feed bytes, get (track, frame) for the first audio track. ``errors`` counts
    junk runs and bad blocks; a new EBML header (a new stream) forgets the tracks."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0
        self._in_junk = False
        self._entry: dict[int, object] = {}
        self._tracks: dict[int, Track] = {}
        self.audio: Track | None = None
        self.doc_type = "webm"
        self.errors = 0
        self._in_clusters = False
        self._resyncing = False
        self._budget = 0

    def feed(self, data: bytes) -> list[tuple[Track, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[Track, bytes]] = []
        # Candidates in junk cost Python work each: bounded per byte fed (the rest of crafted junk is dropped).
        self._budget = JUNK_CHECKS + len(data) // JUNK_CHECK_BYTES
        while True:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return out
            if self._resyncing and not self._resync_step():
                return out
            try:
                head = self._element_head()
            except WebmError:
                self._resync()
                continue
            if head is None:
                return out
            element, size, header = head
            if self._in_clusters and (element not in CLUSTER_LEVEL
                                      or (element in (SIMPLE_BLOCK, BLOCK) and size > MAX_BLOCK)):
                self._resync()
                continue
            if element in MASTERS:
                del buf[:header]
                self._in_junk = False
                if element in (TRACK_ENTRY, CLUSTER):
                    self._commit_entry()
                self._in_clusters = element in (CLUSTER, BLOCK_GROUP) or (self._in_clusters and element == SEGMENT)
                continue
            if size < 0 or (element in READ and size > MAX_ELEMENT) or size > MAX_SKIP:
                self._resync()
                continue
            if element not in READ:
                del buf[:header]
                self._skip, self._in_junk = size, False
                continue
            if len(buf) < header + size:
                return out
            body = bytes(buf[header:header + size])
            del buf[:header + size]
            self._in_junk = False
            self._element(element, body, out)

    def _element_head(self) -> tuple[int, int, int] | None:
        element = read_vint(self._buf, 0, marker=True)
        if element is None:
            return None
        if element[1] > 4:
            raise WebmError("an element ID longer than 4 bytes")
        size = read_vint(self._buf, element[1], marker=False)
        if size is None:
            return None
        return element[0], size[0], element[1] + size[1]

    def _element(self, element: int, body: bytes, out: list[tuple[Track, bytes]]) -> None:
        if element == EBML:
            self._tracks, self._entry, self.audio, self._in_clusters = {}, {}, None, False
            self.doc_type = self._doc_type(body)
        elif element in (TRACK_NUMBER, TRACK_TYPE):
            self._entry[element] = int.from_bytes(body, "big")
        elif element in (CODEC_ID, CODEC_PRIVATE):
            self._entry[element] = body
        else:  # a block
            self._commit_entry()
            try:
                number, frames = block_frames(body)
            except WebmError:
                self.errors += 1
                return
            if self.audio is not None and number == self.audio.number:
                out.extend((self.audio, frame) for frame in frames)

    def _commit_entry(self) -> None:
        entry, self._entry = self._entry, {}
        number = entry.get(TRACK_NUMBER)
        if not isinstance(number, int):
            return
        codec = entry.get(CODEC_ID, b"")
        private = entry.get(CODEC_PRIVATE, b"")
        assert isinstance(codec, bytes) and isinstance(private, bytes)
        track = Track(number, codec.rstrip(b"\0").decode("ascii", "replace"), private, self.doc_type)
        self._tracks[number] = track
        audio = entry.get(TRACK_TYPE) == TRACK_TYPE_AUDIO or track.codec_id.startswith("A_")
        if audio and self.audio is None:
            self.audio = track

    @staticmethod
    def _doc_type(body: bytes) -> str:
        pos = 0
        try:
            while pos < len(body):
                element, size = read_vint(body, pos, marker=True), None
                if element is None:
                    break
                size = read_vint(body, pos + element[1], marker=False)
                if size is None or size[0] < 0:
                    break
                start = pos + element[1] + size[1]
                if element[0] == DOC_TYPE:
                    return body[start:start + size[0]].rstrip(b"\0").decode("ascii", "replace")
                pos = start + size[0]
        except WebmError:
            pass
        return "webm"

    def _resync(self) -> None:
        """Junk: find the next Cluster, EBML header, or a SimpleBlock of our track that is followed
        by another cluster-level element. One run of junk counts once."""
        if not self._in_junk:
            self._in_junk = True
            self.errors += 1
        self._resyncing = True

    def _resync_step(self) -> bool:
        """Step towards the next place parsing can resume; False when more bytes are needed to tell."""
        buf = self._buf
        ahead = {marker: buf.find(marker, 1) for marker in (*RESYNC_IDS, b"\xa3")}
        while True:
            found = [i for i in ahead.values() if i > 0]
            if not found:
                del buf[:max(0, len(buf) - 3)]
                return False
            pos = min(found)
            if buf[pos] != SIMPLE_BLOCK:
                break
            self._budget -= 1
            if self._budget <= 0:  # over budget: only a Cluster or EBML header resumes now
                ahead[b"\xa3"] = -1
                continue
            verdict = self._plausible_block(pos)
            if verdict is None:
                del buf[:pos]
                return False
            if verdict:
                break
            ahead[b"\xa3"] = buf.find(b"\xa3", pos + 1)
        del buf[:pos]
        self._resyncing = False
        return True

    def _plausible_block(self, pos: int) -> bool | None:
        """Whether a SimpleBlock of the audio track starts at pos and another element follows it
        (None: not enough bytes yet)."""
        buf = self._buf
        try:
            size = read_vint(buf, pos + 1, marker=False)
            if size is None:
                return None
            if size[0] < 4 or size[0] > MAX_BLOCK:
                return False
            start = pos + 1 + size[1]
            if start >= len(buf):
                return None
            if self.audio is not None and buf[start] != 0x80 | self.audio.number:
                return False
            after = read_vint(buf, start + size[0], marker=True)
        except WebmError:
            return False
        if after is None:
            return None
        return after[0] in CLUSTER_LEVEL
